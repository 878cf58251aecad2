"""Help texts name values the way users type them, never by Python type (simulator/cli/helptext.py)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from simulator.cli.main import app

# What typer prints for a parameter without a display of its own: `<bool>`, `<list[Path]>`, `<str>`...
INTERNAL_NAME = re.compile(r"<(list\[|bool>|str>|int>|float>|Path>|path>|file>|dict|tuple|choice|[A-Za-z_]+ range>)")
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_is_checked():
    assert {"run", "validate", "resume", "sweep", "compare", "show", "metrics", "rules", "viz"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=lambda command: " ".join(command) or "attnsim")
def test_help_shows_no_internal_type_names(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    found = INTERNAL_NAME.findall(result.output)
    assert not found, f"attnsim {' '.join(command)} --help shows {found}:\n{result.output}"


def test_valued_options_keep_their_metavar_and_flags_show_none():
    text = CliRunner().invoke(app, ["sweep", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    assert re.search(r"--workers\s+-w\s+N\b", text)
    flag = next(line for line in text.splitlines() if "--force" in line)
    assert "bool" not in flag and "BOOL" not in flag
