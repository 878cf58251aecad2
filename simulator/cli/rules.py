"""`attnsim rules [KIND]`: every registered rule, built-in and plug-in, with its one-line summary."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from simulator.cli.main import EXIT_BAD_INPUT, _stderr, _stdout, app
from simulator.registry import KINDS, RuleError, registry


@app.command()
def rules(
    kind: Annotated[
        str | None,
        typer.Argument(metavar="[KIND]", help=f"One of {', '.join(KINDS)}; all kinds when left out.", show_default=False),
    ] = None,
) -> None:
    """List the registered allocation, payout, auction and bidding rules (built-in and plug-in)."""
    if kind is not None and kind not in KINDS:
        _stderr().print(f"KIND:1:1: kind: unknown kind {kind!r}; one of {', '.join(KINDS)}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    table = Table(show_header=True, header_style="bold", title_justify="left")
    for column in ("kind", "name", "from", "what it does"):
        table.add_column(column, overflow="fold")
    try:
        for each in [kind] if kind else KINDS:
            found = registry(each)
            for name in found.names():
                table.add_row(each, name, found.origins[name], found.rules[name].summary)
    except RuleError as exc:  # a broken plug-in's entry point
        _stderr().print(f"<entry points>:1:1: rules: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    _stdout().print(table)
