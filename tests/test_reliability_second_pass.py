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


# --- defect 9: compare on a damaged sweep directory ---------------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A small complete sweep (2 runs of 3 ticks), run once for the module."""
    base = tmp_path_factory.mktemp("sweep")
    result = invoke("sweep", write_sweep(base), "--workers", "1", "--out", base / "out")
    assert result.exit_code == 0, result.output
    return base / "out"


def _damaged_copy(source: Path, target: Path, name: str, content: bytes) -> Path:
    import shutil

    shutil.copytree(source, target)
    (target / name).write_bytes(content)
    return target


def _parquet_without_run_ids() -> bytes:
    import io

    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame({"x": [1, 2]}).to_parquet(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "where", "fragment"),
    [
        ("sweep.parquet", b"PAR1 not really", "sweep.parquet:1:1: <file>:", "not a readable Parquet table"),
        ("sweep.parquet", b"", "sweep.parquet:1:1: <file>:", "not a readable Parquet table"),
        ("sweep.parquet", _parquet_without_run_ids(), "sweep.parquet:1:1: <file>:", "not a sweep table"),
        ("sweep.json", b'{"runs": [\n', "sweep.json:2:1: <file>:", "not valid JSON"),
        ("sweep.json", b"[1, 2]", "sweep.json:1:1: <root>:", "not a JSON object"),
        ("sweep.json", b'{"runs": 5}', "sweep.json:1:1: runs:", "expected a JSON array"),
        ("sweep.json", b'{"runs": [7]}', "sweep.json:1:1: runs[0]:", "run_id"),
        ("sweep.json", b"\xff\xfe\x00", "sweep.json:1:1: <file>:", "cannot read the sweep manifest"),
    ],
)
def test_compare_on_a_damaged_sweep_file_exits_2_located(finished_sweep, tmp_path, name, content, where, fragment):
    damaged = _damaged_copy(finished_sweep, tmp_path / "damaged", name, content)
    result = invoke("compare", damaged, "--no-plots")
    assert_bad_input(result, f"{damaged}/{where}", fragment)


def test_compare_on_a_damaged_run_directory_exits_2_located(finished_sweep, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_sweep / "runs", runs)
    (runs / "g000-r00" / "metrics.parquet").write_bytes(b"garbage")
    result = invoke("compare", runs, "--no-plots")
    assert_bad_input(result, f"{runs / 'g000-r00'}:1:1: <dir>:", "a damaged run directory")
