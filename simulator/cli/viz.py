"""`attnsim viz`: the live dashboard in the browser; registered on `simulator.cli.app` by cli/__init__.py.

Starts Solara's server on 127.0.0.1 with the dashboard page (simulator/viz/dashboard.py) for the
resolved scenario, its browser assets served from the local cache (simulator/viz/assets.py).
Exit codes: 0 stopped, 2 bad input (a scenario problem, the `[viz]` extra or its assets missing),
130 Ctrl-C; otherwise the server's own exit status.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from simulator.cli.main import (
    EXIT_OK,
    SeedOpt,
    SetOpt,
    TicksOpt,
    _exit_bad_input,
    _stdout,
    app,
    resolve_scenario,
)
from simulator.viz.assets import asset_cache, missing_assets, server_environment

HOST = "127.0.0.1"  # the dashboard runs the simulation on this machine; never offer it to the network
DASHBOARD_MODULE = "simulator.viz.dashboard"
EXIT_INTERRUPTED = 130


@app.command()
def viz(
    scenario: Annotated[
        str | None,
        typer.Argument(metavar="[SCENARIO.yaml]", help="The scenario to start from (default: every key at its default).", show_default=False),
    ] = None,
    port: Annotated[int, typer.Option("--port", metavar="N", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 8765,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    ticks: TicksOpt = None,
) -> None:
    """Open the live dashboard: turn the main knobs, step or play the market, watch it respond.

    Serves http://127.0.0.1:PORT until Ctrl-C. Needs the viz extra, which also brings the page's
    JavaScript and CSS, so it works offline (see docs/viz.md).
    """
    # A scenario dict when no file is given: the defaults, with --set on top.
    resolved = resolve_scenario(scenario if scenario is not None else {}, sets, seed, ticks)  # type: ignore[arg-type]
    if resolved.problems:
        raise _exit_bad_input(resolved.problems)
    assert resolved.scenario is not None
    if importlib.util.find_spec("solara") is None or importlib.util.find_spec("mesa.visualization") is None:
        raise _exit_bad_input(['attnsim viz needs the [viz] extra: pip install -e ".[viz]"'])
    cache = asset_cache()
    missing = missing_assets(cache)
    if missing:
        raise _exit_bad_input(
            [f"{cache}: missing the dashboard's browser assets {', '.join(missing)}; "
             'reinstall the [viz] extra (pip install -e ".[viz]", which installs solara-assets)']
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="attnsim-viz-") as folder:
        scenario_file = Path(folder) / "scenario.yaml"
        scenario_file.write_text(yaml.safe_dump(resolved.scenario.model_dump(), sort_keys=False))
        command = [sys.executable, "-m", "solara", "run", DASHBOARD_MODULE, "--host", HOST, "--port", str(port), "--production", "--no-open"]
        _stdout().print(f"attnsim viz: {resolved.scenario.name} on http://{HOST}:{port} (Ctrl-C stops it)", markup=False)
        try:
            done = subprocess.run(command, env={**os.environ, **server_environment(cache, scenario_file)}, check=False)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if done.returncode not in (EXIT_OK, -2):
        raise typer.Exit(done.returncode)

