"""Invariants checked at the end of every tick: a broken one is a bug, never a modelling outcome.

`check_tick` runs one cheap vectorized pass over the market after a tick and raises an
`InvariantViolation` naming the tick, the invariant and the offending agents (rows, at most
`MAX_AGENTS` per population) at the first broken one. The checks, in order:

| name | what must hold |
| --- | --- |
| `money_conserved` | the ledger's total balances equal initial money + injected − removed |
| `non_negative_balances` | no wallet (user, creator, advertiser, platform) below zero |
| `non_negative_budgets` | no negative attention budget (users) or spending budget (advertisers) |
| `finite_floats` | no NaN or ±inf in any float array of the state or the allocation rule (found generically) |
| `exposures_within_budgets` | each active user's content exposures + ads this tick ≤ its attention budget |
| `attention_allocated_within_supplied` | the tick's attention allocated ≤ attention supplied |
| `goods_references_valid` | exposures, ads, owners, uids and users' consumption histories point at rows that exist |

`AttentionMarket.step` calls it after the tick's metrics are computed and before they are
recorded, so a run stopped by a violation keeps exactly the ticks that passed. Setting
`AttentionMarket.check_invariants = False` (on the class or one model) skips the pass.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from simulator.market.state import MarketState, Population

MAX_AGENTS = 20  # offending rows kept per population in a violation
INVARIANTS = (
    "money_conserved",
    "non_negative_balances",
    "non_negative_budgets",
    "finite_floats",
    "exposures_within_budgets",
    "attention_allocated_within_supplied",
    "goods_references_valid",
)


class InvariantViolation(RuntimeError):
    """An invariant of the market broke at the end of `tick`.

    `invariant` is one of `INVARIANTS`; `agents` maps a population (`users`, `creators`, `goods`,
    `advertisers`, `platform`, or a state path for arrays outside them) to offending rows, at most
    `MAX_AGENTS` each; `offending` counts them all.
    """

    def __init__(self, tick: int, invariant: str, message: str, agents: Mapping[str, Any] | None = None, offending: int | None = None):
        self.tick = int(tick)
        self.invariant = invariant
        self.message = message
        self.agents = {name: [int(row) for row in np.asarray(rows).ravel()[:MAX_AGENTS]] for name, rows in (agents or {}).items()}
        counted = sum(len(np.asarray(rows).ravel()) for rows in (agents or {}).values())
        self.offending = int(offending if offending is not None else counted)
        where = ", ".join(f"{name} {_rows_text(rows, len(np.asarray(agents[name]).ravel()))}" for name, rows in self.agents.items())
        super().__init__(f"tick {self.tick}: invariant {invariant} broken: {message}" + (f" (offending: {where})" if where else ""))

    def to_dict(self) -> dict[str, Any]:
        """For manifest.json: the tick, the invariant, the message and the offending agents."""
        return {
            "tick": self.tick,
            "invariant": self.invariant,
            "message": self.message,
            "agents": self.agents,
            "offending": self.offending,
        }


class ConservationError(InvariantViolation):
    """Money appeared or vanished (invariant `money_conserved`)."""


def _rows_text(rows: list[int], total: int) -> str:
    shown = ", ".join(str(row) for row in rows)
    return f"rows [{shown}{', ...' if total > len(rows) else ''}]" + (f" of {total}" if total > len(rows) else "")


def check_tick(
    market: MarketState,
    *,
    arrivals: Any = None,
    allocation: Any = None,
    rule: Any = None,
) -> None:
    """Check every invariant after a tick; raise `InvariantViolation` at the first broken one.

    `arrivals` and `allocation` are the tick's stage outputs (the attention checks need them and
    are skipped without them); `rule` is the allocation rule, whose float state is checked too.
    """
    tick = market.tick
    ledger = market.ledger

    error = ledger.conservation_error()
    if error != 0:
        raise ConservationError(
            tick,
            "money_conserved",
            f"money not conserved (error {error} minor units: balances {ledger.total()}, "
            f"initial {ledger.initial} + injected {ledger.injected} - removed {ledger.removed})",
        )

    negative = {name: np.flatnonzero(balance < 0) for name, balance in ledger.balances.items() if balance.size and balance.min() < 0}
    if negative:
        raise InvariantViolation(tick, "non_negative_balances", "negative wallet balance", negative)

    budgets = {
        "users": market.users.budget[: market.users_born],
        "advertisers": market.advertisers.budget_per_tick,
    }
    negative = {name: np.flatnonzero(values < 0) for name, values in budgets.items() if values.size and values.min() < 0}
    if negative:
        raise InvariantViolation(tick, "non_negative_budgets", "negative budget", negative)

    bad_fields, bad_rows = non_finite(market, "market")
    if rule is not None:
        more_fields, more_rows = non_finite(rule, "rule")
        bad_fields += more_fields
        for name, rows in more_rows.items():
            bad_rows[name] = rows
    if bad_fields:
        raise InvariantViolation(tick, "finite_floats", "NaN or inf in " + ", ".join(bad_fields), bad_rows)

    if arrivals is not None and allocation is not None:
        _check_attention(market, arrivals, allocation)

    _check_references(market, allocation)


def _check_attention(market: MarketState, arrivals: Any, allocation: Any) -> None:
    tick = market.tick
    used = np.count_nonzero(allocation.exposures >= 0, axis=1) + np.count_nonzero(allocation.ads >= 0, axis=1)
    budgets = np.asarray(arrivals.budgets)
    if len(used) != len(budgets):
        raise InvariantViolation(
            tick, "exposures_within_budgets", f"{len(used)} allocation rows for {len(budgets)} active users"
        )
    over = used > budgets
    if over.any():
        rows = np.asarray(allocation.users)[over]
        raise InvariantViolation(tick, "exposures_within_budgets", "exposures + ads exceed the user's attention budget", {"users": rows})
    allocated, supplied = int(used.sum()), int(budgets.sum())
    if allocated > supplied:  # implied by the per-user check; kept as the metrics' own definition
        raise InvariantViolation(
            tick, "attention_allocated_within_supplied", f"attention allocated {allocated} > supplied {supplied}"
        )


def _check_references(market: MarketState, allocation: Any) -> None:
    tick = market.tick
    goods, uids = market.goods, market.uids
    capacity = goods.capacity()
    if allocation is not None:
        exposures = allocation.exposures
        if exposures.size and (exposures.min() < -1 or exposures.max() >= capacity):
            bad = ((exposures < -1) | (exposures >= capacity)).any(axis=1)
            raise InvariantViolation(
                tick, "goods_references_valid", f"exposures outside the catalogue (rows -1..{capacity - 1})", {"users": np.asarray(allocation.users)[bad]}
            )
        ads = allocation.ads
        advertisers = market.advertisers.capacity()
        if ads.size and (ads.min() < -1 or ads.max() >= advertisers):
            bad = ((ads < -1) | (ads >= advertisers)).any(axis=1)
            raise InvariantViolation(
                tick, "goods_references_valid", f"ads from advertisers that do not exist (rows -1..{advertisers - 1})", {"users": np.asarray(allocation.users)[bad]}
            )

    live = np.flatnonzero(goods.live)
    owners = goods.owner[live]
    if owners.size and (owners.min() < 0 or owners.max() >= market.creators_born):
        bad = (owners < 0) | (owners >= market.creators_born)
        raise InvariantViolation(tick, "goods_references_valid", "live goods owned by creators that do not exist", {"goods": live[bad]})
    live_uids = goods.uid[live]
    if live_uids.size:
        valid = (live_uids >= 0) & (live_uids < uids.issued)
        if not valid.all():
            raise InvariantViolation(tick, "goods_references_valid", "live goods with uids never issued", {"goods": live[~valid]})
        misplaced = uids.row_of[live_uids] != live
        if misplaced.any():
            raise InvariantViolation(tick, "goods_references_valid", "the uid index does not point back at live goods", {"goods": live[misplaced]})
    history = market.users.history[: market.users_born]
    if history.size and (history.min() < -1 or history.max() >= uids.issued):
        bad = ((history < -1) | (history >= uids.issued)).any(axis=1)
        raise InvariantViolation(tick, "goods_references_valid", "consumption histories hold uids never issued", {"users": np.flatnonzero(bad)})


# --- finite floats, found generically --------------------------------------------------------------

_ATOMIC = frozenset({bool, int, str, bytes, set, frozenset, type(None)})
_ZEROS: dict[str, np.ndarray] = {}


def _all_finite(array: np.ndarray) -> bool:
    """Whether every element of a float array is finite, in one BLAS pass: x · 0 is 0 when all
    of x is finite and NaN as soon as one element is NaN or ±inf (no overflow, unlike a sum)."""
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8) or not array.flags.c_contiguous:
        return bool(np.isfinite(array).all())
    flat = array.reshape(-1)
    key = array.dtype.str
    zeros = _ZEROS.get(key)
    if zeros is None or len(zeros) < len(flat):
        zeros = _ZEROS[key] = np.zeros(max(len(flat), 2 * len(zeros) if zeros is not None else 0), dtype=array.dtype)
    return bool(np.isfinite(np.dot(flat, zeros[: len(flat)])))  # the caller silences "invalid"



def non_finite(root: Any, name: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Float arrays (and float scalars) under `root` holding NaN or inf.

    Walks dataclass fields, mappings, sequences and deques, and the attributes of plain objects
    of this package, so state added later is covered without listing it here. Returns the
    paths of the offending arrays and, per population (or per path outside them), the
    offending rows. Paths are only spelled out for offenders, so a clean walk is cheap.
    """
    paths: list[str] = []
    rows: dict[str, np.ndarray] = {}
    seen: set[int] = set()

    def spell(trail: tuple) -> str:
        return "".join(part if isinstance(part, str) else f"[{part[0]!r}]" for part in trail)

    def visit(value: Any, trail: tuple, population: str | None) -> None:
        kind = type(value)
        if kind is np.ndarray:
            if value.dtype.kind not in "fc" or value.size == 0 or _all_finite(value):
                return
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(value)
            if not bad.any():
                return
            path = spell(trail)
            paths.append(path)
            offending = np.flatnonzero(bad.reshape(len(value), -1).any(axis=1)) if value.ndim else np.zeros(1, dtype=np.int64)
            key = population or path
            rows[key] = np.union1d(rows[key], offending) if key in rows else offending
            return
        if kind in _ATOMIC:
            return
        if kind is float or isinstance(value, np.floating):
            if not np.isfinite(value):
                paths.append(spell(trail))
            return
        if isinstance(value, (np.generic, np.ndarray)) or id(value) in seen:
            if isinstance(value, np.ndarray):  # an ndarray subclass
                visit(np.asarray(value), trail, population)
            return
        seen.add(id(value))
        names = _FIELDS.get(kind)
        if names is None and dataclasses.is_dataclass(value):
            names = _FIELDS[kind] = tuple(spec.name for spec in dataclasses.fields(value))
        if names is not None:
            inner = trail[-1][1:] if isinstance(value, Population) else population
            for field_name in names:
                item = getattr(value, field_name, None)
                kind = type(item)
                if kind is np.ndarray and item.dtype.kind not in "fc":
                    continue  # integer and boolean arrays: nothing to check, no call
                if kind not in _ATOMIC:
                    visit(item, (*trail, f".{field_name}"), inner)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if type(item) not in _ATOMIC:  # e.g. the homogenization sample's sets: nothing to check
                    visit(item, (*trail, (key,)), population)
        elif isinstance(value, (list, tuple, deque)):
            for index, item in enumerate(value):
                if type(item) not in _ATOMIC:
                    visit(item, (*trail, (index,)), population)
        elif kind.__module__.split(".")[0] == _PACKAGE and hasattr(value, "__dict__"):
            for key, item in vars(value).items():
                if type(item) not in _ATOMIC:
                    visit(item, (*trail, f".{key}"), population)

    with np.errstate(invalid="ignore", over="ignore"):  # x · 0 with an inf in x: expected, not a warning
        visit(root, (name,), None)
    return paths, rows


_FIELDS: dict[type, tuple[str, ...]] = {}
_PACKAGE = __name__.split(".")[0]
