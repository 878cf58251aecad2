"""The market's state as structs of numpy arrays, one struct per population.

Every population keeps spare capacity: rows past the born count are unborn agents (not alive,
never active), so arrivals and entries fill rows instead of reallocating every tick, and
capacity doubles when it runs out. Goods recycle the rows of expired goods.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from simulator.market.ledger import Ledger

FLOAT = np.float32


def _slot(fill: Any, dtype: Any) -> Any:
    """A struct field: what unborn rows hold and the array's dtype."""
    return field(metadata={"fill": fill, "dtype": dtype})


class Population:
    """Shared growth for the structs below: every array field grows along its first axis."""

    def capacity(self) -> int:
        return len(getattr(self, fields(self)[0].name))  # type: ignore[arg-type]

    def ensure_capacity(self, rows: int) -> None:
        current = self.capacity()
        if rows <= current:
            return
        new = max(rows, 2 * current, 16)
        for spec in fields(self):  # type: ignore[arg-type]
            if "fill" not in spec.metadata:
                continue
            old = getattr(self, spec.name)
            grown = np.full((new, *old.shape[1:]), spec.metadata["fill"], dtype=old.dtype)
            grown[:current] = old
            setattr(self, spec.name, grown)

    @classmethod
    def empty(cls, rows: int, dim: int, **extra: Any) -> Any:
        """A struct of `rows` unborn rows; vector fields get `dim` columns, `<field>_width=n` gives a field n."""
        arrays = {}
        for spec in fields(cls):  # type: ignore[arg-type]
            if "fill" not in spec.metadata:
                continue
            width = extra.get(f"{spec.name}_width", dim if spec.metadata.get("vector") else None)
            shape = (rows,) if width is None else (rows, width)
            arrays[spec.name] = np.full(shape, spec.metadata["fill"], dtype=spec.metadata["dtype"])
        return cls(**arrays)


def _vector(dtype: Any = FLOAT) -> Any:
    return field(metadata={"fill": 0.0, "dtype": dtype, "vector": True})


@dataclass
class Users(Population):
    """Attention suppliers. `interest` is the truth; `query` is what the platform believes."""

    interest: np.ndarray = _vector()
    query: np.ndarray = _vector()
    budget: np.ndarray = _slot(0, np.int32)
    activity: np.ndarray = _slot(0.0, FLOAT)
    fatigue: np.ndarray = _slot(0.0, FLOAT)
    utility_ema: np.ndarray = _slot(0.0, FLOAT)
    low_streak: np.ndarray = _slot(0, np.int32)
    active_ticks: np.ndarray = _slot(0, np.int32)
    alive: np.ndarray = _slot(False, np.bool_)
    history: np.ndarray = _slot(-1, np.int64)
    consumed_total: np.ndarray = _slot(0, np.int64)
    bot: np.ndarray = _slot(False, np.bool_)  # a fake account (`adversaries.bots`): no welfare
    sponsor: np.ndarray = _slot(-1, np.int64)  # a bot's sponsoring advertiser row, -1 for none


@dataclass
class Creators(Population):
    """Suppliers of goods: a niche (`topic`), an effort level (`quality`) and a pace."""

    topic: np.ndarray = _vector()
    quality: np.ndarray = _slot(0.0, FLOAT)
    clickbait: np.ndarray = _slot(0.0, FLOAT)
    publish_rate: np.ndarray = _slot(0.0, FLOAT)
    alive: np.ndarray = _slot(False, np.bool_)
    profit_ema: np.ndarray = _slot(0.0, FLOAT)
    loss_streak: np.ndarray = _slot(0, np.int32)
    share_ema: np.ndarray = _slot(-1.0, np.float64)  # smoothed share for the viability exit rules; −1 before the first tick
    born_tick: np.ndarray = _slot(0, np.int32)
    owner: np.ndarray = _slot(-1, np.int64)  # the person behind the identity: its own row, or its sybil owner's first row
    farm_client: np.ndarray = _slot(False, np.bool_)  # hires an engagement farm (`adversaries.farms`)
    verification_failed: np.ndarray = _slot(False, np.bool_)  # an honest creator the identity gate wrongly refuses


@dataclass
class Goods(Population):
    """The catalogue. Rows are recycled: `uid` names a good for its whole life, the row does not."""

    live: np.ndarray = _slot(False, np.bool_)
    uid: np.ndarray = _slot(-1, np.int64)
    owner: np.ndarray = _slot(-1, np.int32)
    key: np.ndarray = _vector()
    quality: np.ndarray = _slot(0.0, FLOAT)
    is_product: np.ndarray = _slot(False, np.bool_)
    price: np.ndarray = _slot(0, np.int64)
    expires: np.ndarray = _slot(0, np.int32)
    clickbait: np.ndarray = _slot(0.0, FLOAT)  # how much the good oversells itself, from its creator
    exposures: np.ndarray = _slot(0, np.int64)  # lifetime counters, for rules and penalties
    consumptions: np.ndarray = _slot(0, np.int64)
    purchases: np.ndarray = _slot(0, np.int64)
    value_delivered: np.ndarray = _slot(0.0, np.float64)  # sum of realised value over consumptions
    penalty: np.ndarray = _slot(1.0, FLOAT)  # allocation and payout weight multiplier (clickbait penalty)
    clone: np.ndarray = _slot(False, np.bool_)  # flagged by clone detection (`defences.clone_detection`): no payout


@dataclass
class Advertisers(Population):
    """Buyers of attention: whom they target, what a click is worth to them, what they bid."""

    targeting: np.ndarray = _vector()
    value_per_click: np.ndarray = _slot(0, np.int64)
    bid: np.ndarray = _slot(0, np.int64)
    budget_per_tick: np.ndarray = _slot(0, np.int64)
    multiplier: np.ndarray = _slot(1.0, np.float64)  # bid / value, set by the bidding strategy
    arm: np.ndarray = _slot(0, np.int64)  # `learning`: the shading factor played this tick
    arm_weights: np.ndarray = _slot(1.0, np.float64)  # `learning`: (advertisers, arms) weights
    spent_last: np.ndarray = _slot(0, np.int64)  # paid last tick
    value_last: np.ndarray = _slot(0, np.int64)  # value gained from clicks last tick
    click_calibration: np.ndarray = _slot(1.0, np.float64)  # realised / predicted clicks, smoothed


@dataclass
class UidIndex:
    """Where each good (by uid) lives in the catalogue, or -1 once it is gone."""

    row_of: np.ndarray = field(default_factory=lambda: np.full(1024, -1, dtype=np.int64))
    issued: int = 0

    def issue(self, rows: np.ndarray) -> np.ndarray:
        """New uids for goods placed in `rows`."""
        uids = np.arange(self.issued, self.issued + len(rows), dtype=np.int64)
        self.issued += len(rows)
        if self.issued > len(self.row_of):
            grown = np.full(max(self.issued, 2 * len(self.row_of)), -1, dtype=np.int64)
            grown[: len(self.row_of)] = self.row_of
            self.row_of = grown
        self.row_of[uids] = rows
        return uids

    def rows(self, uids: np.ndarray) -> np.ndarray:
        """Catalogue rows of `uids` (any shape); -1 for empty entries and goods that are gone."""
        safe = np.where(uids >= 0, uids, 0)
        return np.where(uids >= 0, self.row_of[safe], -1)


@dataclass
class HomogenizationSample:
    """A seeded sample of pairs of alive users and, for each sampled user, the goods it consumed
    (uid → tick of its latest consumption). Pairs with a user who left are replaced by fresh
    pairs of alive users, drawn from the sample's own generator so the metric never moves the
    market's random stream (see `populations.refresh_homogenization_pairs`)."""

    pairs: np.ndarray  # (P, 2) user rows, both alive at the end of the last tick
    consumed: dict[int, dict[int, int]]  # user row -> {uid: tick last consumed}
    rng: np.random.Generator  # draws replacement pairs
    target: int  # pairs the sample keeps (`metrics.homogenization_pairs`)
    window: int | None  # `metrics.homogenization_window`: ticks of consumption compared, None for all


@dataclass
class ConsumptionWindow:
    """Consumption counts of recent ticks, for the `popularity` rule and the candidate mode's popular goods.

    One entry per tick: (tick, uids consumed that tick, how often each). Entries older than the
    window, or whose goods have all left the catalogue, are dropped, so it stays small.
    """

    ticks: deque = field(default_factory=deque)


@dataclass
class MarketState:
    """Everything a tick reads and writes, apart from the random generator."""

    tick: int
    users: Users
    creators: Creators
    goods: Goods
    advertisers: Advertisers
    ledger: Ledger
    uids: UidIndex
    topic_centres: np.ndarray
    homogenization: HomogenizationSample
    users_born: int
    creators_born: int
    consumption_window: ConsumptionWindow = field(default_factory=ConsumptionWindow)
    candidates: Any = None  # the candidate mode's index (simulator/rules/allocation/candidates.py), built on first use
    privacy_rng: Any = None  # the privacy mechanism's own generator (rules/allocation/privacy.py), made on first use
