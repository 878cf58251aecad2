"""One run driver for `attnsim run`, `resume` and sweep runs; sweeps stop on a flag, never by an
exception raised inside the pool; sweep workers die with their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_YAML
from typer.testing import CliRunner

from simulator.cli.main import app
from simulator.runs import rundir
from simulator.runs import sweep as sweep_module

ROOT = Path(__file__).resolve().parents[1]

SWEEP_YAML = TINY_YAML.format(ticks=4) + """\
sweep:
  grid:
    allocation.temperature: [1.0, 2.0]
  replications: 1
"""


def test_a_sweep_runs_manifest_has_the_keys_of_an_attnsim_run_manifest(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SWEEP_YAML)
    ran = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "run"), "--no-plots"])
    assert ran.exit_code == 0, ran.output
    swept = CliRunner().invoke(app, ["sweep", str(scenario), "--out", str(tmp_path / "sweep"), "--workers", "1"])
    assert swept.exit_code == 0, swept.output
    run_manifest = rundir.read_manifest(tmp_path / "run")
    sweep_manifest = rundir.read_manifest(tmp_path / "sweep" / "runs" / "g000-r00")
    assert set(sweep_manifest) - {"sweep"} == set(run_manifest)
    assert sweep_manifest["allocation_mode"] == run_manifest["allocation_mode"] == "exact"
    assert sweep_manifest["checkpoint_every"] == 0 and sweep_manifest["pid"] == os.getpid()


def test_a_sigterm_after_the_last_run_still_finishes_the_sweep(tmp_path, monkeypatch):
    """SIGTERM while sweep.parquet is being written used to leave sweep.json `running` and no
    table; the handler now only sets a flag, and a sweep whose runs all finished ends complete."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SWEEP_YAML)
    real = sweep_module.write_sweep_table

    def terminated_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "write_sweep_table", terminated_while_writing)
    result = CliRunner().invoke(app, ["sweep", str(scenario), "--out", str(tmp_path / "sweep"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"] == {"complete": 2}
    assert (tmp_path / "sweep" / "sweep.parquet").is_file()


def test_a_stop_flag_mid_sweep_marks_it_interrupted_and_a_rerun_completes(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SWEEP_YAML)
    finished: list[str] = []
    result = sweep_module.run_sweep(
        scenario, out=tmp_path / "sweep", workers=1, on_run=lambda record: finished.append(record["run_id"]), should_stop=lambda: bool(finished)
    )
    assert result.manifest["status"] == "interrupted" and result.manifest["counts"] == {"complete": 1, "pending": 1}
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["status"] == "interrupted"
    again = sweep_module.run_sweep(scenario, out=tmp_path / "sweep", workers=1)
    assert again.ok and again.reused == ["g000-r00"] and again.ran == ["g001-r00"]


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_a_sweep_kills_its_workers(tmp_path):
    """SIGKILL of `attnsim sweep` used to leave its spawn workers blocked forever under PID 1."""
    data = yaml.safe_load(SWEEP_YAML)
    data["ticks"] = 400
    data["population"]["users"]["count"] = 3000
    scenario = tmp_path / "long.yaml"
    scenario.write_text(yaml.safe_dump(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "sweep", str(scenario), "--out", str(tmp_path / "sweep"), "--workers", "2", "--force"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = {child for child in _children(process.pid) if b"spawn_main" in _cmdline(child)}
            if len(workers) >= 2 and len(list((tmp_path / "sweep" / "runs").glob("*/manifest.json"))) >= 2:  # both at work
                break
            time.sleep(0.2)
        assert len(workers) >= 2, "the sweep never started its workers"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        left = [pid for pid in workers if _alive(pid)]
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_sigterm_mid_sweep_exits_143_with_the_sweep_interrupted(tmp_path):
    data = yaml.safe_load(SWEEP_YAML)
    data["ticks"] = 60
    data["sweep"]["replications"] = 3
    scenario = tmp_path / "mid.yaml"
    scenario.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "sweep", str(scenario), "--out", str(out), "--workers", "2", "--checkpoint-every", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(out.glob("runs/*/checkpoint.pkl")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    manifest = json.loads((out / "sweep.json").read_text())
    if manifest["status"] == "complete":  # everything finished before the signal: nothing to check
        pytest.skip("the sweep finished before SIGTERM")
    assert process.returncode == 143, stderr
    assert manifest["status"] == "interrupted" and manifest["ended_at"] is not None
    assert (out / "sweep.parquet").is_file()
    assert "interrupted (SIGTERM)" in stderr
    again = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "sweep", str(scenario), "--out", str(out), "--workers", "2", "--checkpoint-every", "5"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
