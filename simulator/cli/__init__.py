"""The `attnsim` command line: `main` holds run, validate and resume; `sweep` adds sweep and compare."""

from simulator.cli import sweep as _sweep_commands  # noqa: F401  (registers `sweep` and `compare` on the app)
from simulator.cli import viz as _viz_command  # noqa: F401  (registers `viz` on the app)
from simulator.cli.main import app, main

__all__ = ["app", "main"]
