"""User-defined rules: the example package under examples/custom_rule/ and every way a plug-in can go wrong.

A plug-in is named in YAML as `module:Class` (here the package is put on PYTHONPATH, as after
`pip install -e examples/custom_rule`) or registered through the `attention_market.rules` entry
point group (here a throwaway distribution's metadata on sys.path). Once registered it works where a
built-in does: validation, run, sweep on both backends, checkpoint and resume, compare, `attnsim rules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY

from simulator.registry import Registry, RuleError
from simulator.rules.allocation.base import AllocationRule, check_rule
from simulator.rules.payout import check_rule as check_payout_rule

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_rule"
PLUGIN_SCENARIO = {
    **{"name": "plugin", "seed": 7, "ticks": 4},
    "allocation": {"rule": "attention_market_example.rules:Explore", "params": {"bonus": 2.0}},
    "circulation": {"creator_payout": {"rule": "attention_market_example.rules:QualityFloor", "params": {"floor": 0.4}}},
}


def tiny_dict(extra: dict) -> dict:
    """The tiny scenario of the test suite as a nested dict, merged with `extra`."""
    data: dict = {}
    for key, value in TINY.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    for section, values in extra.items():
        if isinstance(values, dict):
            for key, value in values.items():
                data.setdefault(section, {})[key] = value
        else:
            data[section] = values
    return data


def attnsim(*args, cwd: Path, pythonpath: Path = EXAMPLE, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_example_rules_run_sweep_resume_and_compare_from_yaml(tmp_path):
    scenario = write(tmp_path / "plugin.yaml", tiny_dict(PLUGIN_SCENARIO))
    listed = attnsim("rules", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "built-in" in listed.stdout

    run = attnsim("run", scenario, "--out", tmp_path / "run", "--no-plots", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["scenario"]["allocation"]["rule"] == "attention_market_example.rules:Explore"

    # Checkpoint after 2 ticks in one process, resume in another: the metrics of the run done in one go.
    checkpoint = tmp_path / "checkpoint.pkl"
    save = f"import simulator; m = simulator.AttentionMarket({str(scenario)!r}); m.step(); m.step(); simulator.save_checkpoint(m, {str(checkpoint)!r})"
    resume = (
        f"import simulator; m = simulator.load_checkpoint({str(checkpoint)!r}); r = simulator.run(m.config, model=m); "
        f"r.metrics.to_csv({str(tmp_path / 'resumed.csv')!r}, index=False)"
    )
    for code in (save, resume):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(EXAMPLE)}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    whole = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    resumed = pd.read_csv(tmp_path / "resumed.csv")
    np.testing.assert_allclose(resumed.to_numpy(dtype=float), whole.to_numpy(dtype=float), equal_nan=True)

    swept = dict(tiny_dict(PLUGIN_SCENARIO), sweep={"grid": {"allocation.params.bonus": [0.0, 3.0]}, "replications": 2})
    sweep_file = write(tmp_path / "sweep.yaml", swept)
    done = attnsim("sweep", sweep_file, "--out", tmp_path / "sweep", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    compared = attnsim("compare", tmp_path / "sweep", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert "bonus=3" in compared.stdout


@pytest.mark.slow
def test_the_example_rules_run_on_dask_workers_that_import_the_plugin(tmp_path):
    swept = dict(tiny_dict(PLUGIN_SCENARIO), sweep={"grid": {"circulation.creator_payout.params.floor": [0.2, 0.8]}, "replications": 1})
    sweep_file = write(tmp_path / "sweep.yaml", swept)
    script = textwrap.dedent(
        f"""
        import distributed
        from simulator import load_scenario, run_sweep
        if __name__ == "__main__":
            with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
                result = run_sweep(load_scenario({str(sweep_file)!r}), out={str(tmp_path / "dask")!r}, backend="dask", address=cluster.scheduler_address)
            assert result.ok, result.status
        """
    )
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "dask" / "runs").iterdir())) == 2


def test_the_example_allocation_rule_changes_who_is_shown(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        import simulator

        explore = simulator.run(tiny_dict({**PLUGIN_SCENARIO, "ticks": 3}))
        plain = simulator.run(tiny_dict({"name": "plain", "seed": 7, "ticks": 3}))
    finally:
        sys.path.remove(str(EXAMPLE))
    assert explore.summary["max_abs_money_conservation_error"] == 0
    assert explore.model.rule.name == "explore" and explore.model.rules.payout.name == "quality_floor"
    assert not np.allclose(explore.metrics["exposure_gini_creators"], plain.metrics["exposure_gini_creators"])


BAD_RULES = '''
from simulator.rules.payout import PayoutRule

not_a_rule = 3


class Incomplete(PayoutRule):
    name = "incomplete"
    summary = "lacks marginal"

    def good_weights(self, state, allocation, consumption):
        return None


class Clash(PayoutRule):
    name = "exposure"
    summary = "takes a built-in's name"

    def good_weights(self, state, allocation, consumption): ...

    def marginal(self, probe): ...
'''


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nosuchmodule:Rule", "cannot import 'nosuchmodule': ModuleNotFoundError"),
        ("badrules:not_a_rule", "badrules:not_a_rule is a int, not a rule class"),
        ("badrules:Incomplete", "is not a complete payout rule: it lacks `marginal()`"),
        ("badrules:Clash", "two payout rules are named 'exposure'"),
        ("badrules:Missing", "module 'badrules' has no 'Missing'"),
    ],
)
def test_a_bad_plugin_is_refused_with_its_position_and_nothing_runs(tmp_path, value, message):
    (tmp_path / "badrules.py").write_text(BAD_RULES)
    data = tiny_dict({"name": "bad"})
    data.setdefault("circulation", {})["creator_payout"] = {"rule": value}
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, text in enumerate(scenario.read_text().splitlines(), start=1) if value in text)
    for command in ("validate", "run"):
        done = attnsim(command, scenario, *(["--out", tmp_path / "out"] if command == "run" else []), cwd=tmp_path, pythonpath=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"bad.yaml:{line}:" in done.stderr and "circulation.creator_payout.rule: " in done.stderr and message in done.stderr
    assert not (tmp_path / "out").exists()


def write_distribution(site: Path, entry_points: str) -> None:
    """A distribution's metadata alone, as `pip install` leaves it: enough for entry point discovery."""
    info = site / "example_rules-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: example-rules\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[attention_market.rules]\n" + entry_points)


def test_entry_points_register_rules_by_name(tmp_path):
    site = tmp_path / "site"
    write_distribution(
        site,
        "allocation.explore = attention_market_example.rules:Explore\npayout.quality_floor = attention_market_example.rules:QualityFloor\n",
    )
    path = f"{site}{os.pathsep}{EXAMPLE}"
    listed = attnsim("rules", "allocation", cwd=tmp_path, pythonpath=path)
    assert listed.returncode == 0, listed.stderr
    assert "explore" in listed.stdout and "entry point allocation.explore" in listed.stdout
    scenario = write(tmp_path / "named.yaml", tiny_dict({"name": "named", "allocation": {"rule": "explore"}}))
    assert attnsim("validate", scenario, cwd=tmp_path, pythonpath=path).returncode == 0
    misspelt = write(tmp_path / "misspelt.yaml", tiny_dict({"name": "misspelt", "allocation": {"rule": "explor"}}))
    refused = attnsim("validate", misspelt, cwd=tmp_path, pythonpath=path)
    assert refused.returncode == 2 and "did you mean 'explore'?" in refused.stderr


def test_two_plugins_registering_one_name_are_refused(tmp_path):
    site = tmp_path / "site"
    write_distribution(site, "payout.exposure = attention_market_example.rules:QualityFloor\n")
    listed = attnsim("rules", cwd=tmp_path, pythonpath=f"{site}{os.pathsep}{EXAMPLE}")
    assert listed.returncode == 2
    assert "entry point payout.exposure" in listed.stderr and "is named 'quality_floor', not 'exposure'" in listed.stderr


def test_registration_refuses_an_incomplete_rule():
    class NoScores(AllocationRule):
        name = "no_scores"
        summary = "forgot its scores"
        candidate_mode = True

        @classmethod
        def from_scenario(cls, scenario, params):
            return cls()

        def audience_scores(self, state, users, keys, quality):
            return np.zeros((len(users), len(keys)))

    missing = check_rule(NoScores)
    assert "`scores()`" in missing and "`candidate_scores()` (it declares candidate_mode)" in missing
    with pytest.raises(RuleError, match="is not a complete allocation rule: it lacks"):
        Registry("allocation", check_rule).register(NoScores)
    assert check_payout_rule(int) == ["the base class simulator.rules.payout.PayoutRule"]
