"""Clean help texts: the type column of `attnsim CMD --help` names values the way a user types them.

Typer's rich help fills that column with the option's metavar when it has one and otherwise with
the Python annotation (`<bool>` for a flag, `<list[Path]>`, `<Path>`, `<str>` for every
argument even when it has a metavar). `CleanHelpGroup`, the app's group class, gives each
parameter of every command a help display once, when the command tree is built: arguments
(already named by their metavar in the first column) and flags show nothing there, options
without a metavar their name in capitals or their choices.
"""

from __future__ import annotations

from typing import Any

import click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None  # its metavar is its name in the first column


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx: click.Context) -> str | None:
        if self.is_flag or self.count:
            return None  # a switch takes no value
        return super().display_type_rich(ctx)


def clean_metavar(param: click.Parameter) -> None:
    """Give `param` the help display above (a metavar for a valued option without one)."""
    if isinstance(param, TyperArgument):
        param.__class__ = _PlainArgument
    elif isinstance(param, TyperOption):
        param.__class__ = _PlainOption
        if param.metavar is None and not (param.is_flag or param.count):
            choices = getattr(param.type, "choices", None)
            param.metavar = "|".join(map(str, choices)) if choices else (param.name or "value").upper()


class _CleanCommand(TyperCommand):
    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)  # made per context, after the tree is built
        if option is not None:
            clean_metavar(option)
        return option


class CleanHelpGroup(TyperGroup):
    """The `attnsim` group: every command's parameters get a clean help display (module doc)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for param in self.params:
            clean_metavar(param)
        for command in self.commands.values():
            if type(command) is TyperCommand:
                command.__class__ = _CleanCommand
            for param in command.params:
                clean_metavar(param)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            clean_metavar(option)
        return option
