"""`attnsim --version`, `attnsim show` (the resolved scenario) and `attnsim metrics` (the metric
table): registered on `simulator.cli.app` when the package imports this module."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.table import Table

from simulator import __version__
from simulator.cli.main import (
    ScenarioArg,
    SeedOpt,
    SetOpt,
    TicksOpt,
    _exit_bad_input,
    _stdout,
    app,
    resolve_scenario,
)
from simulator.metrics.intervals import interval_method
from simulator.metrics.table import METRICS


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"attnsim (attention-market) {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """attention-market: simulate attention-economy marketplaces and compare incentive rules."""


@app.command()
def show(scenario: ScenarioArg, sets: SetOpt = None, seed: SeedOpt = None, ticks: TicksOpt = None) -> None:
    """Print the resolved scenario as YAML: the file with --set, --seed and --ticks applied and every default filled in.

    The output is itself a scenario file (`attnsim show s.yaml --set ticks=5 > t.yaml`). Exit 0, or 2 with every problem as FILE:LINE:COL: dotted.key: message.
    """
    resolved = resolve_scenario(scenario, sets, seed, ticks)
    if resolved.problems:
        raise _exit_bad_input(resolved.problems)
    assert resolved.scenario is not None
    typer.echo(yaml.safe_dump(resolved.scenario.model_dump(mode="json"), sort_keys=False, allow_unicode=True), nl=False)


@app.command()
def metrics() -> None:
    """List the metric columns of metrics.parquet: name, unit, kind, the interval compare gives them, and meaning (docs/metrics.md)."""
    table = Table(title="metrics (metrics.parquet columns; summary.json adds _total, final_ and _overall figures)", title_justify="left", header_style="bold")
    for column, options in (("name", {"no_wrap": True}), ("unit", {}), ("kind", {"no_wrap": True}), ("interval", {"no_wrap": True}), ("meaning", {})):
        table.add_column(column, **options)
    for metric in METRICS:
        table.add_row(metric.name, metric.unit, metric.kind, interval_method(metric.bounds), metric.meaning)
    _stdout().print(table)
