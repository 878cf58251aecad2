"""The notebooks in notebooks/ run from top to bottom, at tiny sizes.

Each notebook's first code cell (tagged `parameters`) reads its sizes from `ATTNSIM_NB_*`
environment variables with the documented defaults; here they are set to tiny values and the
notebook is executed with nbclient in a fresh kernel of this interpreter (see docs/notebooks.md).
The notebooks are stored without outputs, which is checked too.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "attnsim-test-python"

# Tiny sizes per notebook: enough agents and ticks for every cell to have something to show.
SIZES: dict[str, dict[str, int]] = {
    "01_quickstart.ipynb": {"USERS": 200, "CREATORS": 8, "TICKS": 5},
    "02_compare_incentive_rules.ipynb": {"USERS": 150, "CREATORS": 8, "TICKS": 5, "REPLICATIONS": 2, "WORKERS": 1},
    "03_inside_a_run.ipynb": {"USERS": 200, "CREATORS": 10, "TICKS": 8, "SAMPLE": 40, "EVERY": 1},
    "04_published_results.ipynb": {"USERS": 150, "CREATORS": 8, "TICKS": 4, "REPLICATIONS": 2, "WORKERS": 1, "USE_GALLERY": 0},
    "05_adversaries_and_privacy.ipynb": {"USERS": 150, "CREATORS": 20, "TICKS": 3, "SEEDS": 1},
}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_has_test_sizes():
    assert {path.name for path in _notebooks()} == set(SIZES)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_a_parameters_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "no code cells"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged `parameters`"
    for name in SIZES[path.name]:
        assert f'ATTNSIM_NB_{name}' in code[0].source, f"the parameters cell does not read ATTNSIM_NB_{name}"
    dirty = [index for index, cell in enumerate(code) if cell.get("outputs") or cell.get("execution_count") is not None]
    assert not dirty, f"code cells {dirty} hold outputs; store notebooks without outputs"
    assert any(cell.cell_type == "markdown" for cell in notebook.cells), "no prose"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that runs this very interpreter, ahead of any other on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs(path: Path, kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in SIZES[path.name].items():
        monkeypatch.setenv(f"ATTNSIM_NB_{name}", str(value))
    out = tmp_path / "runs"
    monkeypatch.setenv("ATTNSIM_NB_OUT", str(out))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
    seconds = time.monotonic() - started
    images = sum(
        1 for cell in notebook.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    )
    assert images >= 2, f"{path.name} drew {images} figures"
    assert seconds < 120, f"{path.name} took {seconds:.0f} s at test sizes"
    assert out.is_dir() and any(out.iterdir()), "the notebook wrote no run directory under ATTNSIM_NB_OUT"
