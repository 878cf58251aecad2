"""The `attnsim` command line: run directories, bad input, interruption and failure.

Runs go through typer's CliRunner (in process) and through real subprocesses
(`python -m simulator.cli`), on tiny scenarios so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_YAML
from typer.testing import CliRunner

import simulator
import simulator.model
from simulator.cli.main import app
from simulator.metrics.summary import summarize
from simulator.metrics.table import METRIC_COLUMNS
from simulator.runs.rundir import RunWriter, atomic_write_bytes, load_run

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SMALL = [
    "--set", "population.users.count=300",
    "--set", "population.creators.count=20",
    "--set", "population.goods.initial=50",
    "--set", "population.advertisers.count=5",
]  # fmt: skip
ISSUE_LINE = re.compile(r"^[^:\s][^:]*:\d+:\d+: \S+: .+$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"



@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write_tiny(directory: Path, ticks: int = 5) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(TINY_YAML.format(ticks=ticks))
    return path


def invoke(runner: CliRunner, *args: str):
    result = runner.invoke(app, [str(arg) for arg in args])
    return result


def explain(result) -> str:
    return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"


# --- the run directory ---------------------------------------------------------------------------


def test_run_writes_a_complete_run_directory(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=5)
    out = tmp_path / "nested" / "deeper" / "run"  # parents are created
    result = invoke(runner, "run", scenario, "--out", out)
    assert result.exit_code == 0, explain(result)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 7
    assert manifest["ticks_done"] == 5
    assert manifest["scenario"]["population"]["users"]["count"] == 300
    assert manifest["scenario"]["allocation"]["rule"] == "attention_softmax"  # defaults are resolved
    assert {"python", "numpy", "mesa", "attention-market"} <= set(manifest["versions"])
    assert manifest["started_at"] and manifest["ended_at"]
    assert "error" not in manifest

    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["tick"].tolist() == [1, 2, 3, 4, 5]

    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads(json.dumps(summarize(metrics, 0.2)).replace("NaN", "null"))
    assert summary == expected

    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs, "no plots were written"
    for png in pngs:
        assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert not list(out.rglob(".attnsim-tmp-*")), "temporary files left behind"

    assert "complete" in result.stdout and "mean user utility" in result.stdout
    assert "5/5" in result.stderr  # the progress bar

    frame = simulator.load_run(out)
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert frame.attrs["manifest"]["status"] == "complete"
    assert frame.attrs["summary"] == summary


def test_same_scenario_and_seed_give_identical_metrics_bytes(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=4)
    outs = [tmp_path / name for name in ("a", "b", "c")]
    for out, seed in zip(outs, ("3", "3", "4")):
        result = invoke(runner, "run", scenario, "--out", out, "--seed", seed, "--no-plots")
        assert result.exit_code == 0, explain(result)
    first, second, other = ((out / "metrics.parquet").read_bytes() for out in outs)
    assert first == second
    assert first != other
    assert (outs[0] / "summary.json").read_bytes() == (outs[1] / "summary.json").read_bytes()


def test_set_seed_and_ticks_reach_the_resolved_scenario(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=5)
    out = tmp_path / "run"
    result = invoke(
        runner, "run", scenario, "--out", out, "--no-plots",
        "--set", "allocation.temperature=0.5", "--set", "allocation.ad_slots=0", "--seed", "11", "--ticks", "3",
    )  # fmt: skip
    assert result.exit_code == 0, explain(result)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 11
    assert manifest["scenario"]["seed"] == 11
    assert manifest["scenario"]["ticks"] == 3
    assert manifest["scenario"]["allocation"]["temperature"] == 0.5
    assert manifest["scenario"]["allocation"]["ad_slots"] == 0
    assert manifest["overrides"] == {"allocation.temperature": 0.5, "allocation.ad_slots": 0, "seed": 11, "ticks": 3}
    assert len(pd.read_parquet(out / "metrics.parquet")) == 3


def test_default_out_is_runs_name_timestamp(runner, tmp_path, monkeypatch):
    scenario = write_tiny(tmp_path, ticks=2)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run in the same second gets its own directory
        result = invoke(runner, "run", scenario, "--no-plots")
        assert result.exit_code == 0, explain(result)
    made = sorted((tmp_path / "runs").iterdir())
    assert len(made) == 2
    for directory in made:
        assert re.fullmatch(r"tiny-\d{8}-\d{6}(-\d+)?", directory.name)
        assert load_run(directory).attrs["manifest"]["status"] == "complete"


def test_out_refused_unless_force(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=2)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke(runner, "run", scenario, "--out", out, "--no-plots")
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("--out:1:1: out: ")
    assert "--force" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    result = invoke(runner, "run", scenario, "--out", out, "--no-plots", "--force")
    assert result.exit_code == 0, explain(result)
    assert (out / "keep.txt").read_text() == "mine"  # --force replaces run files only
    assert load_run(out).attrs["manifest"]["status"] == "complete"

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = invoke(runner, "run", scenario, "--out", a_file, "--force")
    assert result.exit_code == 2, explain(result)
    assert "not a directory" in result.stderr


def test_empty_existing_out_is_accepted(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=2)
    out = tmp_path / "empty"
    out.mkdir()
    result = invoke(runner, "run", scenario, "--out", out, "--no-plots")
    assert result.exit_code == 0, explain(result)


# --- bad input -----------------------------------------------------------------------------------

BROKEN = {
    "malformed_yaml.yaml": ["malformed_yaml.yaml:6:11: <yaml>: malformed YAML"],
    "wrong_type.yaml": ["wrong_type.yaml:4:1: ticks: Input should be a valid integer"],
    "out_of_range.yaml": [
        "out_of_range.yaml:6:3: allocation.temperature: Input should be greater than 0",
        "out_of_range.yaml:8:3: circulation.platform_take_rate: Input should be less than or equal to 1",
    ],
    "unknown_key.yaml": ["unknown_key.yaml:5:22: population.users.cuont: unknown key"],
    "unknown_rule.yaml": ["unknown_rule.yaml:5:3: allocation.rule: unknown allocation rule 'magic'"],
    "many_errors.yaml": [
        "many_errors.yaml:2:1: name: ",
        "many_errors.yaml:3:1: ticks: ",
        "many_errors.yaml:7:5: population.creators.quality_mean: ",
    ],
    "not_a_mapping.yaml": ["not_a_mapping.yaml:1:1: <root>: "],
    "does_not_exist.yaml": ["does_not_exist.yaml:1:1: <file>: cannot read the file"],
}


def check_issue_lines(stderr: str, expected: list[str]) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == len(expected), stderr
    for line in lines:
        assert ISSUE_LINE.match(line), f"not FILE:LINE:COL: key: message: {line!r}"
    for prefix in expected:
        assert any(line.startswith(str(DATA / prefix)) for line in lines), f"{prefix!r} not in\n{stderr}"


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_scenarios_exit_2_with_every_located_error(runner, tmp_path, command, name):
    args = [command, DATA / name]
    out = tmp_path / "never"
    if command == "run":
        args += ["--out", out]
    result = invoke(runner, *args)
    assert result.exit_code == 2, explain(result)
    check_issue_lines(result.stderr, BROKEN[name])
    assert result.stdout == ""
    assert not out.exists(), "a bad scenario must not create the run directory"


def test_bad_options_are_located_and_reported_together(runner, tmp_path):
    scenario = write_tiny(tmp_path)
    result = invoke(
        runner, "validate", scenario,
        "--set", "allocation.temprature=0.5", "--set", "oops", "--set", "allocation.temperature=abc",
        "--ticks", "0", "--seed", "abc",
    )  # fmt: skip
    assert result.exit_code == 2, explain(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 5, result.stderr
    assert all(ISSUE_LINE.match(line) for line in lines), result.stderr
    assert any(line.startswith("--set:1:1: allocation.temprature: unknown key") for line in lines)
    assert any(line.startswith("--set:2:1: oops: expected KEY=VALUE") for line in lines)
    assert any(line.startswith("--set:3:1: allocation.temperature: ") for line in lines)
    assert any(line.startswith("--ticks:1:1: ticks: ") for line in lines)
    assert any(line.startswith("--seed:1:1: seed: ") for line in lines)


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", ".hidden", ""])
def test_scenario_name_cannot_leave_the_runs_directory(runner, tmp_path, monkeypatch, name):
    scenario = write_tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "run", scenario, "--set", f"name={name}")
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("--set:1:1: name: ")
    assert not (tmp_path / "runs").exists()


def test_malformed_set_refuses_to_run(runner, tmp_path):
    scenario = write_tiny(tmp_path)
    out = tmp_path / "never"
    result = invoke(runner, "run", scenario, "--out", out, "--set", "ticks")
    assert result.exit_code == 2, explain(result)
    assert "--set:1:1: ticks: expected KEY=VALUE" in result.stderr
    assert not out.exists()


def test_validate_ok_prints_a_digest(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=9)
    result = invoke(runner, "validate", scenario, "--set", "allocation.rule=top_k")
    assert result.exit_code == 0, explain(result)
    assert result.stdout.startswith("ok")
    assert "300 users, 20 creators, 50 goods, 5 advertisers" in result.stdout
    assert "top_k" in result.stdout
    assert re.search(r"ticks\s+9", result.stdout)


# --- every bundled scenario ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_bundled_scenario_validates_and_runs(runner, tmp_path, scenario):
    result = invoke(runner, "validate", scenario)
    assert result.exit_code == 0, explain(result)
    out = tmp_path / "run"
    result = invoke(runner, "run", scenario, "--out", out, "--ticks", "2", "--no-plots", *SMALL)
    assert result.exit_code == 0, explain(result)
    frame = load_run(out)
    assert len(frame) == 2
    assert frame.attrs["manifest"]["status"] == "complete"


def test_there_are_bundled_scenarios():
    assert SCENARIOS, "scenarios/*.yaml is empty"


# --- failure -------------------------------------------------------------------------------------


def test_failure_while_running_exits_1_and_keeps_the_ticks_done(runner, tmp_path, monkeypatch):
    original = simulator.model.consume

    def consume_then_break(state, *args, **kwargs):
        if state.tick == 3:
            raise RuntimeError("consumption stage exploded")
        return original(state, *args, **kwargs)

    monkeypatch.setattr(simulator.model, "consume", consume_then_break)
    scenario = write_tiny(tmp_path, ticks=6)
    out = tmp_path / "run"
    result = invoke(runner, "run", scenario, "--out", out)
    assert result.exit_code == 1, explain(result)
    assert "consumption stage exploded" in result.stderr

    frame = load_run(out)
    manifest = frame.attrs["manifest"]
    assert manifest["status"] == "failed"
    assert "RuntimeError: consumption stage exploded" in manifest["error"]
    assert "consume_then_break" in manifest["traceback"]
    assert manifest["ticks_done"] == 2
    assert frame["tick"].tolist() == [1, 2]
    assert frame.attrs["summary"]["ticks"] == 2
    assert list((out / "plots").glob("*.png"))


# --- rundir building blocks ----------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_replacing_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.parquet"
    target.write_bytes(b"old and good")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old and good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.parquet"]


def test_a_run_directory_is_readable_from_its_start(tmp_path):
    scenario = simulator.load_scenario(write_tiny(tmp_path, ticks=3))
    writer = RunWriter(tmp_path / "run", scenario)
    (tmp_path / "run").mkdir()
    writer.start()
    frame = load_run(tmp_path / "run")
    assert frame.empty and list(frame.columns) == list(METRIC_COLUMNS)
    assert frame.attrs["manifest"]["status"] == "running"
    assert frame.attrs["summary"] is None
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "nowhere")


# --- real processes ------------------------------------------------------------------------------


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "simulator.cli", *(str(arg) for arg in args)]


def test_subprocess_run_and_validate(runner, tmp_path):
    scenario = write_tiny(tmp_path, ticks=3)
    out = tmp_path / "run"
    done = subprocess.run(cli("run", scenario, "--out", out, "--no-plots"), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert load_run(out)["tick"].tolist() == [1, 2, 3]
    in_process = tmp_path / "in_process"
    assert invoke(runner, "run", scenario, "--out", in_process, "--no-plots").exit_code == 0
    assert (out / "metrics.parquet").read_bytes() == (in_process / "metrics.parquet").read_bytes()

    script = Path(sys.executable).with_name("attnsim")
    if script.exists():  # the console script of `pip install -e .`
        done = subprocess.run([script, "validate", scenario], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("ok")

    done = subprocess.run(cli("validate", DATA / "out_of_range.yaml"), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    check_issue_lines(done.stderr, BROKEN["out_of_range.yaml"])

    done = subprocess.run(cli("run", scenario, "--out", out), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, "an existing run directory must be refused without --force"


def wait_for_ticks(out: Path, process: subprocess.Popen, ticks: int, timeout: float = 60.0) -> int:
    """Poll the run's metrics.parquet (always a whole file) until it holds `ticks` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            rows = len(pd.read_parquet(out / "metrics.parquet"))
        except (OSError, ValueError):
            rows = 0
        if rows >= ticks:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"{out} never reached {ticks} ticks")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_a_tick_boundary_and_keeps_a_readable_run(tmp_path, signum, code):
    scenario = write_tiny(tmp_path, ticks=1_000_000)
    out = tmp_path / "run"
    process = subprocess.Popen(
        cli("run", scenario, "--out", out, "--checkpoint", "0.1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        seen = wait_for_ticks(out, process, 3)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    assert "interrupted" in stderr

    frame = load_run(out)
    manifest = frame.attrs["manifest"]
    assert manifest["status"] == "interrupted"
    assert seen <= manifest["ticks_done"] < 1_000_000
    assert len(frame) == manifest["ticks_done"]
    assert frame["tick"].tolist() == list(range(1, len(frame) + 1))
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert frame.attrs["summary"]["ticks"] == len(frame)
    assert list((out / "plots").glob("*.png"))
