"""`attnsim sweep` and `attnsim compare`: grid expansion and seeding, identical results on every
backend, resume, failed runs, the statistics of `compare`, and the command line end to end.

Everything runs a tiny scenario (200 users, 20 creators, 60 goods, 3 advertisers, d = 8, 5 ticks)
over a 2 × 2 grid with 2 replications.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import simulator
import simulator.runs.sweep as sweep_module
from simulator.analysis.comparison import (
    compact_letters,
    comparison,
    holm,
    mean_interval,
    welch_test,
)
from simulator.cli.main import app
from simulator.metrics.table import METRIC_COLUMNS
from simulator.runs.rundir import read_manifest
from simulator.runs.sweep import SweepError, derive_seed, load_sweep, plan, run_sweep
from simulator.scenario.schema import load_scenario

ROOT = Path(__file__).resolve().parents[1]

TINY_SWEEP: dict[str, Any] = {
    "name": "tinysweep",
    "seed": 7,
    "ticks": 5,
    "embedding_dim": 8,
    "population": {
        "users": {"count": 200},
        "creators": {"count": 20},
        "goods": {"initial": 60},
        "advertisers": {"count": 3},
    },
    "sweep": {
        "grid": {"allocation.temperature": [0.5, 2.0], "circulation.creator_payout.rule": ["exposure", "equal"]},
        "replications": 2,
    },
}
RUN_IDS = [f"g00{g}-r0{r}" for g in range(4) for r in range(2)]
SMALL = ["--set", "population.users.count=200", "--set", "population.creators.count=20",
         "--set", "population.goods.initial=60", "--set", "population.advertisers.count=3",
         "--set", "embedding_dim=8"]  # fmt: skip


def write_scenario(directory: Path, data: dict[str, Any] | None = None, name: str = "tinysweep.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data if data is not None else TINY_SWEEP, sort_keys=False))
    return path


def explain(result) -> str:
    return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny sweep, run once in this process (1 worker): the reference directory."""
    base = tmp_path_factory.mktemp("reference")
    result = run_sweep(write_scenario(base), out=base / "sweep", workers=1)
    assert result.ok, result.manifest
    return base / "sweep"


# --- planning ------------------------------------------------------------------------------------


def test_plan_expands_the_grid_with_seeds_from_point_and_replication():
    independent = copy.deepcopy(TINY_SWEEP)
    independent["sweep"]["seeding"] = "independent"
    scenario = load_scenario(independent)
    specs = plan(scenario)
    assert [spec.run_id for spec in specs] == RUN_IDS
    assert [spec.point for spec in specs[::2]] == [
        {"allocation.temperature": 0.5, "circulation.creator_payout.rule": "exposure"},
        {"allocation.temperature": 0.5, "circulation.creator_payout.rule": "equal"},
        {"allocation.temperature": 2.0, "circulation.creator_payout.rule": "exposure"},
        {"allocation.temperature": 2.0, "circulation.creator_payout.rule": "equal"},
    ]
    seeds = [spec.seed for spec in specs]
    assert len(set(seeds)) == len(seeds) and all(0 <= seed < 2**63 for seed in seeds)
    for spec in specs:
        assert spec.seed == derive_seed(7, spec.point, spec.replication)
        assert spec.scenario["seed"] == spec.seed and spec.scenario["sweep"] is None
        assert spec.scenario["allocation"]["temperature"] == spec.point["allocation.temperature"]
        assert spec.scenario["circulation"]["creator_payout"]["rule"] == spec.point["circulation.creator_payout.rule"]
    # the seed follows the point's values, not its position: reorder the axes and their values
    reordered = copy.deepcopy(independent)
    reordered["sweep"]["grid"] = {"circulation.creator_payout.rule": ["equal", "exposure"], "allocation.temperature": [2.0, 0.5]}
    again = {(s.point["allocation.temperature"], s.point["circulation.creator_payout.rule"], s.replication): s.seed for s in plan(load_scenario(reordered))}
    assert again == {(s.point["allocation.temperature"], s.point["circulation.creator_payout.rule"], s.replication): s.seed for s in specs}
    # another scenario seed gives other run seeds
    assert derive_seed(8, specs[0].point, 0) != specs[0].seed


def test_plan_reports_every_invalid_combination():
    data = copy.deepcopy(TINY_SWEEP)
    # each value is valid alone, but a median budget above the cap is not: (4, 16) and (8, 16)
    data["population"]["users"]["budget"] = {"median": 2.0}
    data["sweep"]["grid"] = {"population.users.budget_max": [4, 8], "population.users.budget.median": [2.0, 16.0]}
    with pytest.raises(SweepError) as caught:
        plan(load_scenario(data), source="mine.yaml")
    assert len(caught.value.lines) == 2
    assert all(line.startswith("mine.yaml:1:1: sweep.grid: grid point ") for line in caught.value.lines)


def test_no_sweep_block_is_one_point_with_one_replication():
    data = copy.deepcopy(TINY_SWEEP)
    del data["sweep"]
    specs = plan(load_scenario(data))
    assert [(spec.run_id, spec.point) for spec in specs] == [("g000-r00", {})]


# --- backends ------------------------------------------------------------------------------------


def test_the_reference_sweep_directory(reference):
    frame = load_sweep(reference)
    manifest = frame.attrs["manifest"]
    assert manifest["status"] == "complete" and manifest["counts"] == {"complete": 8}
    assert list(frame.columns[:5]) == ["run_id", "allocation.temperature", "circulation.creator_payout.rule", "replication", "seed"]
    assert list(frame.columns[5:]) == list(METRIC_COLUMNS)
    assert len(frame) == 8 * 5
    order = frame[["run_id", "tick"]].apply(tuple, axis=1).tolist()
    assert order == sorted(order)
    assert sorted(set(frame["run_id"])) == RUN_IDS
    for run in manifest["runs"]:
        directory = reference / "runs" / run["run_id"]
        run_manifest = read_manifest(directory)
        assert run_manifest["status"] == "complete"
        assert run_manifest["seed"] == run["seed"] == derive_seed(7, {}, run["replication"])  # common random numbers
        assert run_manifest["sweep"]["point"] == run["point"] and run_manifest["sweep"]["replication"] == run["replication"]
        assert (directory / "summary.json").is_file() and not (directory / "plots").exists()  # plots off by default
        # each run's metrics are exactly a plain `simulator.run` of its resolved scenario
        rows = frame[frame["run_id"] == run["run_id"]]
        direct = simulator.run(load_scenario(run_manifest["scenario"])).metrics
        pd.testing.assert_frame_equal(rows[list(METRIC_COLUMNS)].reset_index(drop=True), direct, check_dtype=True)


def test_one_worker_two_workers_and_dask_give_identical_sweep_tables(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    scenario = write_scenario(tmp_path)
    expected = (reference / "sweep.parquet").read_bytes()

    two = run_sweep(scenario, out=tmp_path / "two", workers=2)
    assert two.ok and two.ran == RUN_IDS
    assert (tmp_path / "two" / "sweep.parquet").read_bytes() == expected

    with distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        on_dask = run_sweep(scenario, out=tmp_path / "dask", backend="dask", address=cluster.scheduler_address)
    assert on_dask.ok and on_dask.ran == RUN_IDS
    assert (tmp_path / "dask" / "sweep.parquet").read_bytes() == expected
    # dask workers sent the files back; the run directories are whole
    for run_id in RUN_IDS:
        assert read_manifest(tmp_path / "dask" / "runs" / run_id)["status"] == "complete"
        assert (tmp_path / "dask" / "runs" / run_id / "metrics.parquet").read_bytes() == (reference / "runs" / run_id / "metrics.parquet").read_bytes()


def test_bad_backend_options_are_refused(tmp_path):
    scenario = write_scenario(tmp_path)
    with pytest.raises(SweepError, match="unknown backend"):
        run_sweep(scenario, out=tmp_path / "x", backend="spark")
    with pytest.raises(SweepError, match="needs --address"):
        run_sweep(scenario, out=tmp_path / "x", backend="dask")
    with pytest.raises(SweepError, match="is for --backend dask"):
        run_sweep(scenario, out=tmp_path / "x", address="tcp://127.0.0.1:8786")
    assert not (tmp_path / "x").exists()


def test_a_sweep_that_does_not_fit_in_memory_is_refused_unless_forced(tmp_path, monkeypatch):
    scenario = write_scenario(tmp_path)
    monkeypatch.setenv("ATTNSIM_AVAILABLE_MEMORY", "1000000")
    refused = CliRunner().invoke(app, ["sweep", str(scenario), "--out", str(tmp_path / "x"), "--workers", "2"])
    assert refused.exit_code == 2
    assert "2 runs side by side need about" in refused.output and "population.users.count" in refused.output
    assert not (tmp_path / "x").exists()


# --- resume, different sweeps, failures ---------------------------------------------------------


def test_resume_reruns_exactly_the_missing_and_unfinished_runs(reference, tmp_path):
    directory = tmp_path / "sweep"
    shutil.copytree(reference, directory)
    scenario = write_scenario(tmp_path)
    shutil.rmtree(directory / "runs" / "g001-r00")
    shutil.rmtree(directory / "runs" / "g003-r01")
    unfinished = read_manifest(directory / "runs" / "g002-r01")
    unfinished["status"] = "running"  # as a killed process leaves it
    (directory / "runs" / "g002-r01" / "manifest.json").write_text(json.dumps(unfinished))
    before = {run_id: os.stat(directory / "runs" / run_id / "metrics.parquet").st_mtime_ns for run_id in RUN_IDS if (directory / "runs" / run_id).exists()}

    ran: list[str] = []
    result = run_sweep(scenario, out=directory, workers=1, on_run=lambda record: ran.append(record["run_id"]))
    assert result.ok
    assert ran == result.ran == ["g001-r00", "g002-r01", "g003-r01"]
    assert result.reused == [run_id for run_id in RUN_IDS if run_id not in ran]
    for run_id in result.reused:
        assert os.stat(directory / "runs" / run_id / "metrics.parquet").st_mtime_ns == before[run_id]
    assert (directory / "sweep.parquet").read_bytes() == (reference / "sweep.parquet").read_bytes()
    reused_flags = {run["run_id"]: run["reused"] for run in read_manifest_json(directory)["runs"]}
    assert [run_id for run_id, flag in reused_flags.items() if not flag] == ran

    # and once everything is there, nothing runs again
    again = run_sweep(scenario, out=directory, workers=1)
    assert again.ran == [] and again.reused == RUN_IDS


def read_manifest_json(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "sweep.json").read_text())


def test_a_different_sweep_is_refused_unless_forced(reference, tmp_path):
    directory = tmp_path / "sweep"
    shutil.copytree(reference, directory)
    (directory / "runs" / "stray").mkdir()
    (directory / "runs" / "stray" / "manifest.json").write_text("{}")
    more = copy.deepcopy(TINY_SWEEP)
    more["sweep"]["replications"] = 3
    scenario = write_scenario(tmp_path, more)
    with pytest.raises(SweepError, match="holds a different sweep .*sweep.replications"):
        run_sweep(scenario, out=directory, workers=1)
    # forced: the 8 runs that match exactly are kept, the 4 new replications run
    result = run_sweep(scenario, out=directory, workers=1, force=True)
    assert result.ok and len(result.reused) == 8
    assert result.ran == [f"g00{g}-r02" for g in range(4)]
    assert not (directory / "runs" / "stray").exists()
    # a directory with other files is not a sweep directory
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="holds no sweep.json"):
        run_sweep(scenario, out=other, workers=1)


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    real = sweep_module._run

    def flaky(model, on_tick, should_stop):
        scenario = model.config
        if scenario.allocation.temperature == 2.0 and scenario.circulation.creator_payout.rule == "equal":
            real_result = real(model, on_tick, should_stop)  # the ticks happen, then the run breaks
            raise RuntimeError(f"engine broke after {len(real_result.metrics)} ticks")
        return real(model, on_tick, should_stop)

    monkeypatch.setattr(sweep_module, "_run", flaky)
    scenario = write_scenario(tmp_path)
    result = run_sweep(scenario, out=tmp_path / "sweep", workers=1)
    assert result.status == "failed"
    assert result.failed == ["g003-r00", "g003-r01"]
    assert result.ran == RUN_IDS
    manifest = read_manifest_json(tmp_path / "sweep")
    assert manifest["counts"] == {"complete": 6, "failed": 2}
    for run in manifest["runs"]:
        if run["run_id"] in result.failed:
            assert run["status"] == "failed" and "RuntimeError: engine broke after 5 ticks" in run["error"]
            run_manifest = read_manifest(tmp_path / "sweep" / "runs" / run["run_id"])
            assert run_manifest["status"] == "failed" and "engine broke" in run_manifest["error"]
            assert "Traceback" in run_manifest["traceback"]
        else:
            assert run["status"] == "complete" and run["error"] is None
    frame = load_sweep(tmp_path / "sweep")
    assert sorted(set(frame["run_id"])) == RUN_IDS[:6]  # complete runs only

    # fixed: the resume runs exactly the failed ones
    monkeypatch.setattr(sweep_module, "_run", real)
    again = run_sweep(scenario, out=tmp_path / "sweep", workers=1)
    assert again.ok and again.ran == ["g003-r00", "g003-r01"]


# --- compare: statistics ------------------------------------------------------------------------


def t_975_df2() -> float:
    # Student t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so t_p = a sqrt(2 / (1 - a^2)), a = 2p - 1
    a = 0.95
    return a * math.sqrt(2 / (1 - a * a))


def t_975_df1() -> float:
    return math.tan(math.pi * (0.975 - 0.5))  # Cauchy


def test_interval_and_welch_by_hand():
    stats = mean_interval([1.0, 2.0, 3.0])
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(2.0) and stats["sd"] == pytest.approx(1.0)
    assert stats["half_width"] == pytest.approx(t_975_df2() / math.sqrt(3), rel=1e-9)
    one = mean_interval([4.0, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 4.0 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    test = welch_test([1.0, 2.0, 3.0], [5.0, 7.0])
    se2 = 1 / 3 + 2 / 2
    assert test["t"] == pytest.approx(-4 / math.sqrt(se2))
    assert test["df"] == pytest.approx(se2**2 / ((1 / 3) ** 2 / 2 + 1.0**2 / 1))
    assert 0.05 < test["p"] < 0.2
    assert math.isnan(welch_test([1.0], [2.0, 3.0])["p"])
    assert welch_test([1.0, 1.0], [2.0, 2.0])["p"] == 0.0 and welch_test([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    assert holm([0.01, 0.04, float("nan"), 0.03]) == pytest.approx([0.03, 0.06, float("nan"), 0.06], nan_ok=True)
    letters = compact_letters(["a", "b", "c"], {"a": 3.0, "b": 2.0, "c": 1.0}, [("a", "c")])
    assert letters == {"a": "a", "b": "ab", "c": "b"}


def write_hand_made_sweep(directory: Path) -> None:
    """A sweep directory written by hand: four temperatures, one tick per run, summary over all ticks."""
    values = {0.25: [1.0, 2.0, 3.0], 0.5: [10.0], 1.0: [5.0, 7.0], 2.0: [100.0, 101.0, 102.0]}
    rows = []
    runs = []
    for g, (temperature, utilities) in enumerate(values.items()):
        for r, utility in enumerate(utilities):
            run_id = f"g{g:03d}-r{r:02d}"
            rows.append({"run_id": run_id, "allocation.temperature": temperature, "replication": r, "tick": 1,
                         "user_utility_mean": utility, "platform_revenue": 1000 + 10 * r})  # fmt: skip
            runs.append({"run_id": run_id, "status": "complete"})
    directory.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(directory / "sweep.parquet", index=False)
    manifest = {"name": "hand", "grid_keys": ["allocation.temperature"], "runs": runs, "scenario": {"metrics": {"summary_fraction": 1.0}}}
    (directory / "sweep.json").write_text(json.dumps(manifest))


def test_compare_on_a_hand_made_sweep_table(tmp_path):
    write_hand_made_sweep(tmp_path / "hand")
    table = simulator.compare(tmp_path / "hand", metrics=["user_utility_mean", "platform_revenue"])
    utility = table[table["metric"] == "user_utility_mean"].set_index("group")
    assert list(utility.index) == ["temperature=0.25", "temperature=0.5", "temperature=1", "temperature=2"]
    assert list(utility["allocation.temperature"]) == [0.25, 0.5, 1.0, 2.0]
    assert list(utility["n"]) == [3, 1, 2, 3]
    assert list(utility["mean"]) == pytest.approx([2.0, 10.0, 6.0, 101.0])
    half = t_975_df2() * 1.0 / math.sqrt(3)
    assert utility.loc["temperature=0.25", "ci_low"] == pytest.approx(2.0 - half, rel=1e-9)
    assert utility.loc["temperature=0.25", "ci_high"] == pytest.approx(2.0 + half, rel=1e-9)
    assert utility.loc["temperature=2", "ci_high"] == pytest.approx(101.0 + half, rel=1e-9)
    half_c = t_975_df1() * math.sqrt(2) / math.sqrt(2)
    assert utility.loc["temperature=1", "half_width"] == pytest.approx(half_c, rel=1e-9)
    assert math.isnan(utility.loc["temperature=0.5", "ci_low"])  # n = 1: no interval
    # 2 stands out from 0.25 and 1 (Welch, Holm over the three testable pairs); 0.25 and 1 do not
    # differ beyond noise; 0.5 (one run) is not tested, so it shares a letter with everyone
    letters = utility["letters"].to_dict()
    assert letters == {"temperature=0.25": "b", "temperature=0.5": "ab", "temperature=1": "b", "temperature=2": "a"}
    # another level: a narrower interval
    narrower = simulator.compare(tmp_path / "hand", metrics=["user_utility_mean"], level=0.9)
    first = narrower[narrower["group"] == "temperature=0.25"].iloc[0]
    t_95_df2 = 0.9 * math.sqrt(2 / (1 - 0.9**2))
    assert first["half_width"] == pytest.approx(t_95_df2 / math.sqrt(3), rel=1e-9)

    result = comparison([tmp_path / "hand"], metrics=["user_utility_mean"])
    pairs = result.pairs
    assert len(pairs) == 6 and pairs["p_holm"].notna().sum() == 3  # pairs with the n = 1 group are not tested
    tested = pairs.dropna(subset=["p_holm"]).sort_values("p")
    expected_holm = np.maximum.accumulate(np.minimum(1.0, (3 - np.arange(3)) * tested["p"].to_numpy()))
    assert tested["p_holm"].to_numpy() == pytest.approx(expected_holm)


def test_compare_groups_plain_run_directories_like_the_sweep(reference):
    by_sweep = simulator.compare(reference, all_metrics=True)
    by_runs = simulator.compare(reference / "runs", all_metrics=True)  # a directory of run directories
    assert list(by_runs["group"].unique()) == list(by_sweep["group"].unique()) == [
        "temperature=0.5, rule=exposure",
        "temperature=0.5, rule=equal",
        "temperature=2, rule=exposure",
        "temperature=2, rule=equal",
    ]
    merged = by_sweep.merge(by_runs, on=["group", "metric"], suffixes=("_sweep", "_runs"))
    assert len(merged) == len(by_sweep) > 40
    assert (merged["n_sweep"] == merged["n_runs"]).all()
    np.testing.assert_allclose(merged["mean_sweep"], merged["mean_runs"], rtol=1e-12, equal_nan=True)
    # and the summaries are those of summary.json
    summary = json.loads((reference / "runs" / "g000-r00" / "summary.json").read_text())
    other = json.loads((reference / "runs" / "g000-r01" / "summary.json").read_text())
    row = by_sweep[(by_sweep["group"] == "temperature=0.5, rule=exposure") & (by_sweep["metric"] == "platform_revenue_total")].iloc[0]
    assert row["mean"] == pytest.approx((summary["platform_revenue_total"] + other["platform_revenue_total"]) / 2)


# --- the command line -----------------------------------------------------------------------------


def test_cli_sweep_then_compare(tmp_path):
    runner = CliRunner()
    scenario = write_scenario(tmp_path)
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", str(scenario), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, explain(result)
    assert "tinysweep sweep: complete" in result.stdout
    assert (out / "sweep.parquet").is_file() and (out / "sweep.json").is_file()
    assert sorted(p.name for p in (out / "runs").iterdir()) == RUN_IDS
    run_manifest = read_manifest(out / "runs" / "g000-r00")
    assert run_manifest["command"][:3] == ["attnsim", "run", str(scenario.resolve())]

    again = runner.invoke(app, ["sweep", str(scenario), "--out", str(out), "--workers", "1"])
    assert again.exit_code == 0, explain(again)
    assert "8 complete kept, 0 to run" in again.stderr

    changed = runner.invoke(app, ["sweep", str(scenario), "--out", str(out), "--ticks", "4"])
    assert changed.exit_code == 2, explain(changed)
    assert "--out:1:1: out:" in changed.stderr and "different sweep" in changed.stderr

    compared = runner.invoke(app, ["compare", str(out)], env={"COLUMNS": "200"})
    assert compared.exit_code == 0, explain(compared)
    assert "mean user utility" in compared.stdout and "temperature=0.5, rule=exposure" in compared.stdout
    for name in ("compare.csv", "differences.csv", "compare.md", "pairs.csv", "plots/summary.png", "plots/timeseries.png"):
        assert (out / "compare" / name).is_file(), name
    csv = pd.read_csv(out / "compare" / "compare.csv")
    assert {"group", "metric", "n", "mean", "ci_low", "ci_high", "letters"} <= set(csv.columns)
    assert (csv["n"] == 2).all() and csv["metric"].nunique() == 11
    markdown = (out / "compare" / "compare.md").read_text()
    assert "paired t" in markdown and "Holm" in markdown and "| temperature=2, rule=equal | 2 |" in markdown

    chosen = runner.invoke(app, ["compare", str(out), "--metric", "creator_income_gini", "--level", "0.9", "--out", str(tmp_path / "cmp"), "--no-plots"])
    assert chosen.exit_code == 0, explain(chosen)
    csv = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert set(csv["metric"]) == {"creator_income_gini"}
    assert not (tmp_path / "cmp" / "plots").exists()

    unknown = runner.invoke(app, ["compare", str(out), "--metric", "nope"])
    assert unknown.exit_code == 2 and "unknown summary metric 'nope'" in unknown.stderr
    missing = runner.invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such directory" in missing.stderr
    bad_level = runner.invoke(app, ["compare", str(out), "--level", "95"])
    assert bad_level.exit_code == 2


def test_cli_sweep_bad_input_and_failures(tmp_path, monkeypatch):
    runner = CliRunner()
    scenario = write_scenario(tmp_path)
    for args, text in (
        (["--backend", "spark"], "unknown backend"),
        (["--backend", "dask"], "needs --address"),
        (["--set", "allocation.temperature=-1"], "allocation.temperature"),
        (["--workers", "0"], "'--workers'"),
    ):
        result = runner.invoke(app, ["sweep", str(scenario), "--out", str(tmp_path / "bad"), *args])
        assert result.exit_code == 2, explain(result)
        assert text in result.stderr or text in result.output
        assert not (tmp_path / "bad").exists()

    real = sweep_module._run

    def broken(model, on_tick, should_stop):
        if model.config.circulation.creator_payout.rule == "equal":
            raise ValueError("no equal payouts today")
        return real(model, on_tick, should_stop)

    monkeypatch.setattr(sweep_module, "_run", broken)
    result = runner.invoke(app, ["sweep", str(scenario), "--out", str(tmp_path / "half"), "--workers", "1"])
    assert result.exit_code == 1, explain(result)
    assert "failed: g001-r00" in result.stderr and "no equal payouts today" in result.stderr
    assert "tinysweep sweep: failed" in result.stdout
    # compare uses the complete runs and says which were left out
    compared = runner.invoke(app, ["compare", str(tmp_path / "half"), "--no-plots"])
    assert compared.exit_code == 0, explain(compared)
    assert "4 run(s) not complete and left out" in compared.stderr


def test_payout_rules_scenario_sweeps_and_compares(tmp_path):
    """README's example, shrunk: the six payout rules, 2 replications, 3 ticks."""
    path = ROOT / "scenarios" / "payout_rules.yaml"
    if not path.exists():
        pytest.skip("scenarios/payout_rules.yaml is not there")
    runner = CliRunner()
    out = tmp_path / "payout_rules"
    result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--workers", "1", "--ticks", "3", *SMALL,
                                 "--set", "sweep.replications=2"])  # fmt: skip
    assert result.exit_code == 0, explain(result)
    compared = runner.invoke(app, ["compare", str(out), "--no-plots"])
    assert compared.exit_code == 0, explain(compared)
    groups = pd.read_csv(out / "compare" / "compare.csv")["group"].unique().tolist()
    assert groups == [f"rule={rule}" for rule in ("exposure", "engagement", "quality", "shapley", "backward", "equal")]
