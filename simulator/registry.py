"""Rule registries: every allocation, payout, auction and bidding rule, built-in or plug-in, by name.

A rule is one self-describing class (see `simulator/rules/`); its kind's registry maps names to
such classes and is the one place anything looks a rule up. Built-in rules register when their
module is imported (importing any part of `simulator` imports them all). A user's rule comes
in two ways:

- an entry point in the group `attention_market.rules` of an installed package, whose name is
  `<kind>.<rule name>` (e.g. `payout.tenure`) and whose value is `module:Class`;
- a scenario value `module:Class` (e.g. `allocation.rule: mypkg.rules:Diverse`), imported when
  the scenario is validated; it must be a rule of that kind, and registers under its `name`.

This module is the bottom of the package (below the scenario schema, which validates names here)
so that the schema can check names the rules layer registers: the registry only stores classes
and asks each kind's `check` whether a class is a valid rule of that kind.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ENTRY_POINT_GROUP = "attention_market.rules"
KINDS = ("allocation", "payout", "auction", "bidding")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class RuleError(ValueError):
    """A rule that cannot be used: unknown, not importable, not a rule, incomplete or a duplicate name."""


@dataclass
class Registry:
    """The registered rules of one kind, by name.

    `check(cls)` returns what the class lacks to be a rule of this kind (an empty list when it is
    complete); a class that lacks anything is refused at registration, never used half-made.
    """

    kind: str
    check: Callable[[type], list[str]] = lambda cls: []
    rules: dict[str, type] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # name -> "built-in" or where it came from

    def register(self, cls: type, *, origin: str = "built-in") -> type:
        """Add `cls` under `cls.name`; refuses an incomplete class and a second class for one name."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not NAME.match(name):
            raise RuleError(f"{_qualname(cls)} is not a {self.kind} rule: it needs a `name` of lowercase letters, digits and _")
        missing = self.check(cls)
        if missing:
            raise RuleError(f"{_qualname(cls)} is not a complete {self.kind} rule: it lacks {', '.join(missing)}")
        known = self.rules.get(name)
        if known is not None and known is not cls:
            raise RuleError(
                f"two {self.kind} rules are named {name!r}: {_qualname(known)} ({self.origins[name]}) and {_qualname(cls)} ({origin})"
            )
        self.rules[name] = cls
        self.origins[name] = origin
        return cls

    def names(self) -> list[str]:
        _load_entry_points()
        return sorted(self.rules)

    def resolve(self, value: str) -> type:
        """The rule a scenario value names: a registered name or a `module:Class` reference."""
        _load_entry_points()
        if REFERENCE.match(value):
            return self.register(_import_reference(value), origin=value)  # the same class again is a no-op
        if value in self.rules:
            return self.rules[value]
        close = difflib.get_close_matches(value, self.rules, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RuleError(f"unknown {self.kind} rule {value!r}; {hint}registered: {', '.join(sorted(self.rules))}")

    def name_of(self, value: str) -> str:
        """The registered name of the rule a scenario value names."""
        return self.resolve(value).name


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    return REGISTRIES[kind]


def define_kind(kind: str, check: Callable[[type], list[str]]) -> Registry:
    """Set how classes of `kind` are checked (the rules layer does it for each kind's base class)."""
    registry = REGISTRIES[kind]
    registry.check = check
    return registry


def _qualname(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', repr(cls))}"


def _import_reference(value: str) -> type:
    module_name, _, attribute = value.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way; the user gets its one-line reason
        raise RuleError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise RuleError(f"module {module_name!r} has no {attribute!r}") from None
    if not isinstance(found, type):
        raise RuleError(f"{value} is a {type(found).__name__}, not a rule class")
    return found


_entry_points_loaded = False


def _load_entry_points() -> None:
    """Register every rule that installed packages declare in `attention_market.rules`, once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = entry.name.partition(".")
        where = f"entry point {entry.name} = {entry.value}"
        if kind not in REGISTRIES:
            raise RuleError(f"{where}: the name must start with one of {', '.join(KINDS)} and a dot")
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plug-in names itself, whatever went wrong in it
            raise RuleError(f"{where}: cannot load it: {type(exc).__name__}: {exc}") from None
        if getattr(cls, "name", None) != name:
            raise RuleError(f"{where}: the class is named {getattr(cls, 'name', None)!r}, not {name!r}")
        REGISTRIES[kind].register(cls, origin=where)


def reload_entry_points() -> None:
    """Look at the installed packages' entry points again (after installing a plug-in in-process)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _load_entry_points()
