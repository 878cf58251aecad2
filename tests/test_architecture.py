"""The folder listing is the architecture: layers import only the layers below them, with no cycles
and no imports hidden inside functions (but for the optional heavy dependencies, each with a reason)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simulator"
OPTIONAL = ("distributed", "dask", "solara", "resource")  # extras, and `resource`, absent on Windows


LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))  # import-linter's command, in the same environment


def test_the_layer_contracts_hold():
    done = subprocess.run([LINT_IMPORTS], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_there_are_no_import_cycles():
    graph = grimp.build_graph("simulator")
    edges = nx.DiGraph((module, imported) for module in graph.modules for imported in graph.find_modules_directly_imported_by(module))
    cycles = [sorted(component) for component in nx.strongly_connected_components(edges) if len(component) > 1]
    assert not cycles, cycles


def test_no_imports_are_hidden_inside_functions():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    module = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                    line = source.splitlines()[inner.lineno - 1]
                    if not (module or "").startswith(OPTIONAL) or "#" not in line:
                        hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {module}")
    assert not hidden, hidden


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package where the market imports the CLI is refused."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "simulator", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    market = copy / "simulator" / "market" / "values.py"
    market.write_text(market.read_text() + "\nfrom simulator.cli import main as _upward  # noqa\n")
    done = subprocess.run([LINT_IMPORTS], capture_output=True, text=True, cwd=copy, env={"PYTHONPATH": str(copy)})
    assert done.returncode != 0 and "broken" in done.stdout, done.stdout + done.stderr
