"""The `attnsim` command line: `main` holds run, validate and resume; `sweep` adds sweep and compare;
`inspect` adds --version, show and metrics; `rules` lists the rules."""

from simulator.cli import inspect as _inspect_commands  # noqa: F401  (registers --version, `show` and `metrics`)
from simulator.cli import rules as _rules_command  # noqa: F401  (registers `rules` on the app)
from simulator.cli import sweep as _sweep_commands  # noqa: F401  (registers `sweep` and `compare` on the app)
from simulator.cli import viz as _viz_command  # noqa: F401  (registers `viz` on the app)
from simulator.cli.main import app, main

__all__ = ["app", "main"]
