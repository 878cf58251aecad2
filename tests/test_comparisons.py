"""Comparisons a reviewer accepts: common random numbers across the arms of a sweep, paired
analysis, honest intervals for bounded metrics, the duplicate guard, designs beyond grids."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_YAML
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_hex
from scipy.stats import t as student
from typer.testing import CliRunner

import simulator
from simulator.analysis.comparison import (
    CompareError,
    compare_runs,
    is_paired,
    mean_interval,
    metric_bounds,
    resolve_reference,
    sensitivity,
)
from simulator.cli.main import app
from simulator.figures.compare import bars_figure, group_colors, timeseries_figure
from simulator.figures.plots import band_frame
from simulator.market.populations import spawn_streams
from simulator.metrics.table import METRIC_COLUMNS
from simulator.model import AttentionMarket
from simulator.runs.rundir import source_revision
from simulator.runs.sweep import derive_seed, load_sweep, plan, run_sweep
from simulator.scenario.schema import ScenarioError, load_scenario

PAYOUT_ARMS: dict[str, Any] = {
    "name": "arms",
    "seed": 11,
    "ticks": 4,
    "embedding_dim": 8,
    "population": {
        "users": {"count": 300, "arrivals_per_tick": 5.0},
        "creators": {"count": 20, "entry": {"rate": 0.2}},
        "goods": {"initial": 60},
        "advertisers": {"count": 3},
    },
    "sweep": {"grid": {"circulation.creator_payout.rule": ["exposure", "equal"]}, "replications": 2},
}

POPULATION_ARRAYS = {
    "users": ("interest", "query", "budget", "activity"),
    "creators": ("topic", "quality", "publish_rate", "clickbait"),
    "goods": ("key", "quality", "owner", "price", "expires"),
    "advertisers": ("targeting", "value_per_click"),
}


def _arms(seeding: str | None = None) -> list:
    data = copy.deepcopy(PAYOUT_ARMS)
    if seeding is not None:
        data["sweep"]["seeding"] = seeding
    return plan(load_scenario(data))


def test_common_seeding_is_the_default_and_shares_a_seed_per_replication():
    specs = _arms()
    assert load_scenario(copy.deepcopy(PAYOUT_ARMS)).sweep.seeding == "common"
    by_replication: dict[int, set[int]] = {}
    for spec in specs:
        by_replication.setdefault(spec.replication, set()).add(spec.seed)
        assert spec.seed == derive_seed(11, {}, spec.replication)
    assert all(len(seeds) == 1 for seeds in by_replication.values())
    assert len({next(iter(seeds)) for seeds in by_replication.values()}) == 2  # replications differ
    independent = _arms("independent")
    assert len({spec.seed for spec in independent}) == len(independent)


def test_two_arms_differing_only_in_the_payout_rule_start_from_identical_populations():
    exposure, equal = (spec for spec in _arms() if spec.replication == 0)
    assert exposure.point != equal.point
    first, second = AttentionMarket(exposure.scenario), AttentionMarket(equal.scenario)
    for population, columns in POPULATION_ARRAYS.items():
        for column in columns:
            np.testing.assert_array_equal(
                getattr(getattr(first.market, population), column), getattr(getattr(second.market, population), column), err_msg=f"{population}.{column}"
            )
    np.testing.assert_array_equal(first.market.topic_centres, second.market.topic_centres)
    np.testing.assert_array_equal(first.market.homogenization.pairs, second.market.homogenization.pairs)
    # and the first tick, before the rules have changed anything, sees the same users show up
    first.step()
    second.step()
    assert first.latest_metrics["active_users"] == second.latest_metrics["active_users"]
    assert first.latest_metrics["goods_published"] == second.latest_metrics["goods_published"]


@pytest.mark.parametrize(
    "key, values",
    [("allocation.rule", ["top_k", "random"]), ("circulation.creator_payout.rule", ["exposure", "equal"])],
)
def test_a_stage_that_draws_more_leaves_the_other_stages_and_later_ticks_alone(key, values):
    """Under two rules the allocation (or circulation and adaptation) stage draws different
    amounts of random numbers; the number of users who arrive in every later tick (the first draw
    of acquisition's stream) is the same in both arms."""
    data = copy.deepcopy(PAYOUT_ARMS)
    data["sweep"]["grid"] = {key: values}
    first, second = (AttentionMarket(spec.scenario) for spec in plan(load_scenario(data)) if spec.replication == 0)
    for _ in range(4):
        first.step()
        second.step()
        assert first.market.users_born == second.market.users_born


def test_spawned_streams_advance_the_parent_by_a_fixed_amount():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    streams_a = spawn_streams(a, 3)
    streams_b = spawn_streams(b, 3)
    streams_a[0].random(1000)  # one child draws far more than its twin
    assert a.random() == b.random()
    assert streams_a[1].random() == streams_b[1].random()
    assert len({stream.random() for stream in spawn_streams(np.random.default_rng(3), 4)}) == 4


def test_a_population_size_leaves_the_other_populations_alone():
    base = {k: v for k, v in PAYOUT_ARMS.items() if k != "sweep"}
    small = AttentionMarket(load_scenario(copy.deepcopy(base)))
    bigger = AttentionMarket(load_scenario(copy.deepcopy(base), {"population.users.count": 400}))
    np.testing.assert_array_equal(small.market.creators.topic, bigger.market.creators.topic)


@pytest.mark.parametrize("seed", [0, 5])
def test_same_seed_same_metrics(seed):
    base = {k: v for k, v in PAYOUT_ARMS.items() if k != "sweep"}
    runs = []
    for _ in range(2):
        model = AttentionMarket(load_scenario(copy.deepcopy(base)), seed=seed)
        for _ in range(3):
            model.step()
        runs.append(model.metrics)
    assert runs[0].equals(runs[1])


# --- paired analysis -----------------------------------------------------------------------------


def _runs_table(seeds_b: list[int]) -> pd.DataFrame:
    """Two arms whose runs share a large per-seed effect (the market each seed draws) and differ by 0.1."""
    market = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.7}
    rows = [{"group": "a", "seed": seed, "user_utility_mean": market[seed]} for seed in (1, 2, 3, 4)]
    rows += [{"group": "b", "seed": seed, "user_utility_mean": market.get(seed, 0.6) + 0.1 + 0.01 * (seed % 2)} for seed in seeds_b]
    return pd.DataFrame(rows)


def test_paired_differences_are_narrower_than_welch_and_match_the_formula():
    runs = _runs_table([1, 2, 3, 4])
    assert is_paired(runs, ["a", "b"])
    _, pairs, differences = compare_runs(runs, ["user_utility_mean"], groups=["a", "b"])
    row = differences.iloc[0]
    assert (row["group"], row["reference"], row["test"], row["n"]) == ("b", "a", "paired t", 4)
    d = np.array([0.11, 0.10, 0.11, 0.10])
    half = student.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
    assert row["difference"] == pytest.approx(d.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row["distinguishable"] and pairs.iloc[0]["test"] == "paired t"
    a, b = np.array([0.2, 0.9, 0.5, 0.7]), np.array([0.2, 0.9, 0.5, 0.7]) + 0.1 + 0.01 * (np.arange(1, 5) % 2)
    assert row["correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1]) and row["correlation"] > 0.99
    welch = compare_runs(runs, ["user_utility_mean"], groups=["a", "b"], paired=False)[2].iloc[0]
    assert welch["test"] == "Welch" and welch["half_width"] > 20 * row["half_width"] and not welch["distinguishable"]
    assert math.isnan(welch["correlation"])


def test_runs_without_shared_seeds_are_compared_with_welch():
    runs = _runs_table([5, 6, 7, 8])
    assert not is_paired(runs, ["a", "b"])
    differences = compare_runs(runs, ["user_utility_mean"], groups=["a", "b"])[2]
    assert differences.iloc[0]["test"] == "Welch" and differences.iloc[0]["n"] == 4


def test_reference_by_label_key_value_or_value():
    groups = ["rule=exposure", "rule=equal"]
    points = {"rule=exposure": {"circulation.creator_payout.rule": "exposure"}, "rule=equal": {"circulation.creator_payout.rule": "equal"}}
    assert resolve_reference(None, groups, points) is None
    assert resolve_reference("equal", groups, points) == "rule=equal"
    assert resolve_reference("rule=equal", groups, points) == "rule=equal"
    assert resolve_reference("circulation.creator_payout.rule=equal", groups, points) == "rule=equal"
    with pytest.raises(CompareError, match="did you mean 'rule=equal'"):
        resolve_reference("rule=eqal", groups, points)


# --- honest intervals ----------------------------------------------------------------------------


def test_bounded_metrics_get_intervals_inside_their_range():
    gini = [0.001, 0.002, 0.06]
    student_t = mean_interval(gini)
    assert student_t["ci_low"] < 0  # the Student t interval leaves [0, 1]
    bounded = mean_interval(gini, bounds=metric_bounds("creator_income_gini"))
    assert bounded["method"] == "logit"
    assert 0 < bounded["ci_low"] < bounded["mean"] < bounded["ci_high"] < 1
    counts = mean_interval([0, 0, 5], bounds=metric_bounds("final_active_creators"))
    assert counts["method"] == "log" and 0 < counts["ci_low"] < counts["mean"] < counts["ci_high"]
    assert mean_interval([1.0, 1.0, 1.0], bounds=(0.0, 1.0))["ci_low"] == 1.0  # every run at the bound
    utility = mean_interval([1.0, 2.0, 3.0], bounds=metric_bounds("user_utility_mean"))
    assert utility["method"] == "student t" and utility["half_width"] == pytest.approx(student.ppf(0.975, 2) / math.sqrt(3))


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12), st.floats(0.5, 0.999))
def test_share_intervals_never_leave_zero_to_one(values, level):
    stats = mean_interval(values, level, (0.0, 1.0))
    assert 0.0 <= stats["ci_low"] <= stats["mean"] + 1e-12 and stats["mean"] - 1e-12 <= stats["ci_high"] <= 1.0


def test_comparison_bands_stay_in_range():
    frame = pd.DataFrame({"run": [0, 1, 2] * 2, "tick": [1, 1, 1, 2, 2, 2], "exposure_gini_creators": [0.0, 0.0, 0.09, 0.99, 1.0, 0.9]})
    band = band_frame(frame, "exposure_gini_creators")
    assert (band["low"] >= 0).all() and (band["high"] <= 1).all()
    assert (band["low"] <= band["mean"]).all() and (band["mean"] <= band["high"]).all()


# --- the duplicate guard -------------------------------------------------------------------------


def test_compare_refuses_copies_of_one_run(tmp_path):
    """The case of the issue: baseline and long are the same scenario with seed 42 (identical
    bytes); with peaked beside them they used to be "replications" of one group."""
    scenario = tmp_path / "baseline.yaml"
    scenario.write_text(TINY_YAML.format(ticks=3))
    runner = CliRunner()
    for name, extra in (("baseline", []), ("long", []), ("peaked", ["--set", "allocation.temperature=0.3"])):
        done = runner.invoke(app, ["run", str(scenario), "--seed", "42", "--out", str(tmp_path / "runs" / name), *extra])
        assert done.exit_code == 0, done.output
    dirs = [str(tmp_path / "runs" / name) for name in ("baseline", "peaked", "long")]
    refused = runner.invoke(app, ["compare", *dirs, "--no-plots"])
    assert refused.exit_code == 2
    assert "the same run as" in refused.stderr and "not independent replications" in refused.stderr and "--allow-duplicates" in refused.stderr
    kept = runner.invoke(app, ["compare", *dirs, "--no-plots", "--allow-duplicates", "--out", str(tmp_path / "cmp")])
    assert kept.exit_code == 0, kept.output
    assert "left out (--allow-duplicates)" in kept.stderr
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert set(table["n"]) == {1}
    # the recording-only name does not split groups, the temperature does
    assert sorted(table["group"].unique()) == ["temperature=0.3", "temperature=1"]
    # a directory of run directories says what it skipped
    (tmp_path / "runs" / "nested-sweep").mkdir()
    (tmp_path / "runs" / "nested-sweep" / "sweep.parquet").write_bytes(b"")
    (tmp_path / "runs" / "notes").mkdir()
    whole = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--no-plots", "--allow-duplicates", "--out", str(tmp_path / "cmp2")])
    assert whole.exit_code == 0, whole.output
    assert "nested-sweep: skipped (a sweep directory" in whole.stderr and "notes: skipped (not a run directory)" in whole.stderr


def test_the_dev_extra_brings_what_the_notebook_docs_run():
    root = Path(__file__).resolve().parents[1]
    dev = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = {re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0] for requirement in dev}
    assert "jupyter nbconvert" in (root / "docs" / "notebooks.md").read_text()
    assert "nbconvert" in names


# --- outputs people analyse ----------------------------------------------------------------------


def test_sweep_outputs_carry_seeds_a_runs_table_and_a_long_form(tmp_path):
    data = copy.deepcopy(PAYOUT_ARMS)
    data["ticks"] = 3
    result = run_sweep(load_scenario(data), out=tmp_path / "sweep", workers=1)
    assert result.ok, result.manifest
    frame = load_sweep(tmp_path / "sweep")
    by_run = {run["run_id"]: run["seed"] for run in result.manifest["runs"]}
    assert (frame["seed"] == frame["run_id"].map(by_run)).all() and frame["replication"].notna().all()
    runs = pd.read_parquet(tmp_path / "sweep" / "runs.parquet")
    assert list(runs["run_id"]) == sorted(by_run) and list(runs.columns[:4]) == ["run_id", "circulation.creator_payout.rule", "replication", "seed"]
    for row in runs.to_dict("records"):
        summary = json.loads((tmp_path / "sweep" / "runs" / row["run_id"] / "summary.json").read_text())
        assert row["seed"] == by_run[row["run_id"]]
        assert row["creator_income_gini"] == pytest.approx(summary["creator_income_gini"], nan_ok=True)
        assert row["consumptions_total"] == summary["consumptions_total"]
    long = load_sweep(tmp_path / "sweep", long=True)
    assert list(long.columns) == ["run_id", "circulation.creator_payout.rule", "replication", "seed", "tick", "metric", "value"]
    assert len(long) == len(frame) * (len(METRIC_COLUMNS) - 1)
    one = long[(long["run_id"] == "g000-r00") & (long["tick"] == 2) & (long["metric"] == "consumptions")]["value"].item()
    assert one == frame[(frame["run_id"] == "g000-r00") & (frame["tick"] == 2)]["consumptions"].item()
    # the manifests record what changes numbers, and the checkout the run came from
    for manifest in (result.manifest, json.loads((tmp_path / "sweep" / "runs" / "g000-r00" / "manifest.json").read_text())):
        assert {"numba", "scipy", "numpy", "pandas", "pyarrow", "mesa"} <= set(manifest["versions"])
        assert manifest["source"] == source_revision()
    assert result.manifest["seeding"] == "common"
    assert source_revision(tmp_path) is None  # not a checkout


def test_source_revision_names_the_commit_and_whether_it_is_dirty(tmp_path):
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "one"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert source_revision(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f.txt").write_text("b")
    assert source_revision(tmp_path) == {"commit": head, "dirty": True}


# --- the command line ----------------------------------------------------------------------------


def test_version_show_and_metrics(tmp_path):
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"attnsim (attention-market) {simulator.__version__}"
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TINY_YAML.format(ticks=3))
    shown = runner.invoke(app, ["show", str(scenario), "--set", "allocation.temperature=0.5", "--seed", "9"])
    assert shown.exit_code == 0, shown.output
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(shown.stdout)
    expected = load_scenario(scenario, {"allocation.temperature": 0.5, "seed": 9})
    assert load_scenario(resolved) == expected
    bad = runner.invoke(app, ["show", str(scenario), "--set", "tiks=3"])
    assert bad.exit_code == 2 and "--set:1:1: tiks: unknown key; did you mean 'ticks'?" in bad.stderr
    listed = runner.invoke(app, ["metrics"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0
    for metric in METRIC_COLUMNS:
        assert metric in listed.stdout
    assert "logit" in listed.stdout and "student t" in listed.stdout


def test_set_problems_are_located_at_their_option_with_the_full_key(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TINY_YAML.format(ticks=3))
    result = CliRunner().invoke(
        app,
        ["validate", str(scenario), "--set", "creators.count=5", "--set", "allocaton.rule=top_k",
         "--set", "allocation.temprature=2", "--set", "allocation.rule=top_kk"],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert "--set:1:1: creators.count: unknown key (allowed keys are listed in docs/scenario.md)" in lines
    assert "--set:2:1: allocaton.rule: unknown key; did you mean 'allocation'?" in lines
    assert "--set:3:1: allocation.temprature: unknown key; did you mean 'temperature'?" in lines
    assert any(line.startswith("--set:4:1: allocation.rule: unknown allocation rule 'top_kk'; did you mean 'top_k'?") for line in lines)
    assert not any(str(scenario) in line for line in lines)


def test_python_overrides_are_labelled_as_overrides(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TINY_YAML.format(ticks=3))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario, overrides={"allocation.temprature": 1.0, "population.users.count": 0})
    text = str(caught.value)
    assert "overrides['allocation.temprature']:1:1: allocation.temprature: unknown key; did you mean 'temperature'?" in text
    assert "overrides['population.users.count']:1:1: population.users.count:" in text and "--set" not in text


def test_run_says_it_ignores_a_sweep_block(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(TINY_YAML.format(ticks=2) + "sweep: {grid: {allocation.temperature: [0.5, 2.0]}}\n")
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "has a sweep: block" in result.stderr and "attnsim sweep" in result.stderr


# --- figures -------------------------------------------------------------------------------------


def test_every_figure_of_a_comparison_colours_a_group_alike_with_one_legend_outside():
    groups = ["rule=zeta", "rule=alpha", "rule=mid"]  # grid order is not alphabetical order
    table = pd.DataFrame(
        [{"group": g, "metric": "creator_income_gini", "n": 2, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "half_width": 0.1} for g in groups]
    )
    ticks = pd.DataFrame([{"group": g, "run_id": f"{g}-{r}", "tick": t, "creator_income_gini": 0.5} for g in groups for r in range(2) for t in (1, 2)])
    colors = group_colors(groups)
    bars = bars_figure(table, ["creator_income_gini"], colors=colors)
    series = timeseries_figure(ticks, ["creator_income_gini"], colors=colors)
    bar_colors = {str(label.get_text()): to_hex(patch.get_facecolor()) for label, patch in zip(bars.axes[0].get_xticklabels(), bars.axes[0].patches)}
    line_colors = {line.get_label(): to_hex(line.get_color()) for line in series.axes[0].get_lines()}
    assert bar_colors == line_colors == {g: to_hex(c) for g, c in colors.items()}
    for figure in (bars, series):
        assert len(figure.legends) == 1 and all(ax.get_legend() is None for ax in figure.axes)
        assert [text.get_text() for text in figure.legends[0].get_texts()] == groups


# --- designs beyond grids ------------------------------------------------------------------------


def _design(design: str, samples: int = 8) -> dict[str, Any]:
    data = copy.deepcopy(PAYOUT_ARMS)
    data["ticks"] = 3
    data["sweep"] = {
        "design": design,
        "ranges": {"allocation.temperature": [0.5, 2.5], "circulation.platform_take_rate": [0.1, 0.4]},
        "samples": samples,
        "grid": {"circulation.creator_payout.rule": ["exposure", "equal"]},
    }
    return data


@pytest.mark.parametrize("design", ["lhs", "sobol"])
def test_space_filling_designs_cross_the_grid(design):
    specs = plan(load_scenario(_design(design)))
    assert len(specs) == 2 * 8
    samples = [(spec.point["allocation.temperature"], spec.point["circulation.platform_take_rate"]) for spec in specs]
    assert samples[:8] == samples[8:]  # every rule meets the same design points
    temperatures = np.array([t for t, _ in samples[:8]])
    assert ((0.5 <= temperatures) & (temperatures <= 2.5)).all()
    assert all(spec.scenario["allocation"]["temperature"] == spec.point["allocation.temperature"] for spec in specs)
    if design == "lhs":  # one sample in each of the 8 strata of each range
        assert sorted(np.floor((temperatures - 0.5) / 2.0 * 8).astype(int)) == list(range(8))
    assert plan(load_scenario(_design(design))) == specs  # drawn from the scenario's seed


def test_design_needs_ranges_and_grid_refuses_them():
    with pytest.raises(ScenarioError, match="needs ranges"):
        load_scenario({"sweep": {"design": "lhs"}})
    with pytest.raises(ScenarioError, match="ranges are for design lhs or sobol"):
        load_scenario({"sweep": {"ranges": {"allocation.temperature": [0.5, 1.0]}}})
    with pytest.raises(ScenarioError, match="low < high"):
        load_scenario({"sweep": {"design": "lhs", "ranges": {"allocation.temperature": [1.0, 0.5]}}})


def test_standardised_regression_coefficients_recover_a_linear_response():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(200, 2))
    runs = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 3.0 * x[:, 0] + 0.01 * rng.standard_normal(200)})
    table = sensitivity(runs, ["a", "b"], ["y"]).set_index("factor")
    assert table.loc["a", "src"] == pytest.approx(1.0, abs=0.01) and abs(table.loc["b", "src"]) < 0.02
    assert table.loc["a", "r2"] == pytest.approx(1.0, abs=0.01)


def test_compare_writes_a_sensitivity_table_for_an_lhs_sweep(tmp_path):
    data = _design("lhs", samples=4)
    data["sweep"]["grid"] = {}
    result = run_sweep(load_scenario(data), out=tmp_path / "lhs", workers=1)
    assert result.ok and result.manifest["design"] == "lhs"
    frame = load_sweep(tmp_path / "lhs")
    assert {"allocation.temperature", "circulation.platform_take_rate", "seed"} <= set(frame.columns)
    compared = CliRunner().invoke(app, ["compare", str(tmp_path / "lhs"), "--no-plots", "--metric", "user_utility_mean"])
    assert compared.exit_code == 0, compared.output
    table = pd.read_csv(tmp_path / "lhs" / "compare" / "sensitivity.csv")
    assert set(table["factor"]) == {"allocation.temperature", "circulation.platform_take_rate"} and (table["n"] == 4).all()
