"""Faults: a run killed (SIGKILL) or interrupted (SIGINT, SIGTERM) at a random tick and resumed
ends with a metrics.parquet byte-identical to the same run done in one go.

Real processes (`python -m simulator.cli run ... --checkpoint-every 2`), a tiny scenario of 30
ticks; the test waits until a checkpoint exists and a randomly chosen number of ticks has
passed, then kills, then `resume`s the directory.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
TICKS = 30
SCENARIO = f"""\
name: faults
seed: 11
ticks: {TICKS}
population:
  users: {{count: 400}}
  creators: {{count: 20}}
  goods: {{initial: 60}}
  advertisers: {{count: 4}}
"""


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "simulator.cli", *(str(arg) for arg in args)]


def run_to_end(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[Path, Path]:
    """The scenario file and the run directory of an uninterrupted run (its own process)."""
    base = tmp_path_factory.mktemp("reference")
    scenario = base / "faults.yaml"
    scenario.write_text(SCENARIO)
    done = run_to_end("run", scenario, "--out", base / "whole", "--no-plots")
    assert done.returncode == 0, done.stderr
    return scenario, base / "whole"


@pytest.fixture(scope="module")
def reference(reference_run) -> tuple[Path, bytes]:
    """The scenario file and the metrics.parquet bytes of an uninterrupted run."""
    scenario, directory = reference_run
    return scenario, (directory / "metrics.parquet").read_bytes()


def ticks_written(out: Path) -> int:
    try:
        return len(pd.read_parquet(out / "metrics.parquet"))
    except (OSError, ValueError):
        return 0


def start_and_wait(scenario: Path, out: Path, target: int) -> subprocess.Popen:
    """Start a checkpointing run and return once a checkpoint exists and `target` ticks are done."""
    process = subprocess.Popen(
        cli("run", scenario, "--out", out, "--no-plots", "--checkpoint-every", 2, "--checkpoint", 0),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the run ended before tick {target} (exit {process.returncode}):\n{stderr}")
        if (out / "checkpoint.pkl").exists() and ticks_written(out) >= target:
            return process
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"{out} never reached tick {target}")


def resume(out: Path, *, subprocess_: bool = False) -> Any:
    """`attnsim resume OUT`, in a fresh process or in this one (CliRunner: faster, same code)."""
    if subprocess_:
        return run_to_end("resume", out)
    result = CliRunner().invoke(app, ["resume", str(out)])
    result.returncode = result.exit_code
    return result


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("attempt", range(2))
def test_sigkill_at_a_random_tick_then_resume_gives_identical_metrics(tmp_path, reference, attempt):
    scenario, expected = reference
    target = random.randint(3, TICKS - 8)
    out = tmp_path / "killed"
    process = start_and_wait(scenario, out, target)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    killed = manifest(out)
    assert killed["status"] == "running", "a killed process cannot finish its manifest"
    saved_at = json.loads((out / "checkpoint.pkl").read_bytes().split(b"\n", 2)[1])["tick"]
    assert saved_at >= 2 and saved_at % 2 == 0

    done = resume(out, subprocess_=attempt == 0)
    assert done.returncode == 0, f"target tick {target}, checkpoint at {saved_at}\n{done.stderr}"
    assert f"from the checkpoint at tick {saved_at}" in done.stderr
    assert (out / "metrics.parquet").read_bytes() == expected, f"killed after tick {target}, resumed from {saved_at}"
    final = manifest(out)
    assert final["status"] == "complete" and final["ticks_done"] == TICKS
    assert [entry["from_tick"] for entry in final["resumes"]] == [saved_at]
    assert final["resumes"][0]["previous_status"] == "running"
    assert final["started_at"] == killed["started_at"]
    assert not (out / "checkpoint.pkl").exists(), "a complete run's checkpoint is removed"
    assert not [path for path in out.iterdir() if path.name.startswith(".attnsim-tmp-")]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_then_resume_gives_identical_metrics(tmp_path, reference, signum, code):
    scenario, expected = reference
    target = random.randint(3, TICKS - 8)
    out = tmp_path / "interrupted"
    process = start_and_wait(scenario, out, target)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "attnsim resume" in stderr

    stopped = manifest(out)
    assert stopped["status"] == "interrupted"
    saved_at = json.loads((out / "checkpoint.pkl").read_bytes().split(b"\n", 2)[1])["tick"]
    assert saved_at == stopped["ticks_done"], "an interrupt saves a checkpoint at the tick it stopped"

    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.parquet").read_bytes() == expected
    final = manifest(out)
    assert final["status"] == "complete"
    assert final["resumes"][-1] == {**final["resumes"][-1], "from_tick": saved_at, "previous_status": "interrupted"}
    assert "error" not in final and "violation" not in final


def test_killed_twice_and_resumed_twice(tmp_path, reference):
    """Kill, resume, kill the resumed process, resume again: still the same bytes."""
    scenario, expected = reference
    out = tmp_path / "twice"
    process = start_and_wait(scenario, out, 5)
    process.kill()
    process.communicate(timeout=60)

    resumed = subprocess.Popen(cli("resume", out, "--checkpoint", 0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while ticks_written(out) < 14 and resumed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    resumed.kill()
    resumed.communicate(timeout=60)

    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.parquet").read_bytes() == expected
    assert len(manifest(out)["resumes"]) == 2


def test_resume_of_a_complete_run_does_nothing(tmp_path, reference_run):
    import shutil

    _, whole = reference_run
    out = tmp_path / "done"
    shutil.copytree(whole, out)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert "already complete" in done.stdout
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_resume_without_a_checkpoint_starts_again_from_tick_0(tmp_path, reference):
    """A run killed before its first checkpoint (or run without --checkpoint-every) starts again."""
    from simulator.runs import rundir
    from simulator.scenario.schema import load_scenario

    scenario, expected = reference
    out = tmp_path / "no-checkpoint"
    out.mkdir()
    writer = rundir.RunWriter(out, load_scenario(scenario), scenario_file=scenario, plots=False)
    writer.manifest["plots"] = False
    writer.start()  # what a process killed before tick 1 leaves: status running, no checkpoint
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert "from tick 0" in done.stderr
    assert (out / "metrics.parquet").read_bytes() == expected
    assert manifest(out)["resumes"][0]["from_tick"] == 0


def test_resume_refuses_a_run_that_is_still_running(tmp_path, reference):
    """The manifest names a live process on this host: resuming would race it (unless --force)."""
    import platform

    from simulator.runs import rundir
    from simulator.scenario.schema import load_scenario

    scenario, _ = reference
    out = tmp_path / "live"
    out.mkdir()
    writer = rundir.RunWriter(out, load_scenario(scenario), plots=False)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writer.manifest.update(pid=sleeper.pid, host=platform.node(), plots=False)
        writer.start()
        done = resume(out)
        assert done.returncode == 2, done.stderr
        assert "the run is still running" in done.stderr
        assert manifest(out)["status"] == "running" and "resumes" not in manifest(out)
    finally:
        sleeper.kill()
        sleeper.communicate()
    done = resume(out)
    assert done.returncode == 0, done.stderr
