"""The rest of the second red-team pass (issue 20): the memory check's blind spots, money and float
bounds checked at validation, Dask addresses, damaged sweep files, read-only and locked output
directories, and the loader's cosmetic defects. Each test failed on the code before its fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_YAML
from typer.testing import CliRunner

from simulator.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
ISSUE_LINE = re.compile(r"^[^:\s][^:]*:\d+:\d+: \S+: .+$")

SWEEP_YAML = TINY_YAML.format(ticks=3) + """\
sweep:
  grid:
    allocation.temperature: [1.0, 2.0]
  replications: 1
"""


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """`attnsim ARGS` in a fresh process (what happens at interpreter exit counts too)."""
    command = [sys.executable, "-m", "simulator.cli", *(str(arg) for arg in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_bad_input(result, location: str, fragment: str) -> list[str]:
    """Exit 2, every stderr line located, one of them at `location` and holding `fragment`."""
    stderr = result.stderr
    assert (result.returncode if hasattr(result, "returncode") else result.exit_code) == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(ISSUE_LINE.match(line) for line in lines), stderr
    assert any(line.startswith(location) and fragment in line for line in lines), stderr
    return lines


def write_sweep(tmp_path: Path, text: str = SWEEP_YAML) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


# --- defect 7: a malformed Dask address -------------------------------------------------------------


@pytest.mark.parametrize("address", ["foo", "tcp://host:notaport", "tcp://:8786"])
def test_a_malformed_dask_address_exits_2_at_once_without_a_client_traceback(tmp_path, address):
    pytest.importorskip("distributed")
    result = cli("sweep", write_sweep(tmp_path), "--backend", "dask", "--address", address, "--out", tmp_path / "out", timeout=30)
    assert_bad_input(result, "--address:1:1: address:", "not a Dask scheduler address")
    assert "Client.__del__" not in result.stderr
    assert not (tmp_path / "out").exists()
