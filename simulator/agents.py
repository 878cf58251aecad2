"""Mesa agents as views over the struct-of-arrays state: `User`, `Creator`, `Good`, `Advertiser`.

The market lives in numpy arrays (simulator/market/state.py) so a tick is vectorized; these
agents are windows onto one row each, so Mesa's idioms (`model.agents`, `agents_by_type`,
`AgentSet.select / agg / groupby / shuffle_do`, DataCollector `agent_reporters`) work on the
same state. Nothing here runs during a tick: `AgentViews.sync` brings the views in line with the
populations (arrivals, churn, entry, exit, goods published and expired) only when someone reads
`model.agents`, so a run nobody inspects pays nothing.

Reads read the arrays at the moment of the read. A few writes make sense and write through,
checked so the state's invariants hold (interests and niches stay unit vectors, quality and
activity stay in their ranges); every other attribute refuses assignment. Wallets are reads of
the ledger: money only moves by ledger postings, so no agent attribute or method can create it.

    model = AttentionMarket("scenarios/baseline.yaml", ticks=20)
    model.run_model()
    creators = model.agents_by_type[Creator]
    creators.agg("wallet", max)
    creators.select(lambda c: c.quality > 0.8).set("quality", 0.8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import mesa
import numpy as np

from simulator.market.state import FLOAT


class AgentGone(LookupError):
    """A view of a good that has left the catalogue (its row now holds another good, or none)."""


def _unit_vector(value: Any, agent: MarketAgent, name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64)
    dim = agent.model.config.embedding_dim
    if vector.shape != (dim,) or not np.isfinite(vector).all():
        raise ValueError(f"{type(agent).__name__}.{name}: expected {dim} finite numbers, got shape {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise ValueError(f"{type(agent).__name__}.{name}: a zero vector has no direction")
    return (vector / norm).astype(FLOAT)  # every interest, niche and key is a unit vector


def _in_range(low: float, high: float) -> Callable[[Any, MarketAgent, str], float]:
    def check(value: Any, agent: MarketAgent, name: str) -> float:
        number = float(value)
        if not low <= number <= high:
            raise ValueError(f"{type(agent).__name__}.{name}: {number!r} is outside [{low}, {high}]")
        return number

    return check


def _non_negative(value: Any, agent: MarketAgent, name: str) -> float:
    number = float(value)
    if not (np.isfinite(number) and number >= 0.0):
        raise ValueError(f"{type(agent).__name__}.{name}: {number!r} must be finite and non-negative")
    return number


class Column:
    """An agent attribute that reads one array of its population at the agent's row.

    A data descriptor: with no `check` it refuses assignment (rather than letting an instance
    attribute shadow the state); with one it validates and writes through to the array.
    """

    def __init__(self, array: str | None = None, *, convert: Callable[[Any], Any] = lambda v: v.item(), check=None):
        self.array = array
        self.convert = convert
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.array = self.array or name

    def __get__(self, agent: MarketAgent | None, owner: type | None = None) -> Any:
        if agent is None:
            return self
        return self.convert(getattr(agent._struct(), self.array)[agent._row()])

    def __set__(self, agent: MarketAgent, value: Any) -> None:
        kind = type(agent).__name__
        if self.check is None:
            raise AttributeError(f"{kind}.{self.name} is read only; writable: {', '.join(type(agent).writable())}")
        if not agent.alive:
            raise AttributeError(f"{kind} {agent.key}: cannot set {self.name}, it has left the market")
        getattr(agent._struct(), self.array)[agent._row()] = self.check(value, agent, self.name)


class Balance:
    """An agent's wallet: a read of its ledger account, in integer minor units."""

    def __init__(self, account: str):
        self.account = account

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, agent: MarketAgent | None, owner: type | None = None) -> Any:
        if agent is None:
            return self
        return int(agent.model.market.ledger.balances[self.account][agent._row()])

    def __set__(self, agent: MarketAgent, value: Any) -> None:
        raise AttributeError(f"{type(agent).__name__}.{self.name} is a read of the ledger; money only moves by ledger postings")


def _copy(array: np.ndarray) -> np.ndarray:
    return array.copy()  # a copy, so editing it cannot bypass the attribute's checks


class MarketAgent(mesa.Agent):
    """A Mesa agent standing for one row of a population; `key` is that row (a good's uid)."""

    population: ClassVar[str]

    def __init__(self, model: mesa.Model, key: int):
        super().__init__(model)
        self.key = key

    def _struct(self) -> Any:
        return getattr(self.model.market, self.population)

    def _row(self) -> int:
        return self.key

    @classmethod
    def writable(cls) -> list[str]:
        """The attributes that write through to the state."""
        return [name for name in dir(cls) if isinstance(getattr(cls, name, None), Column) and getattr(cls, name).check]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}{'' if self.alive else ' (gone)'}>"


class User(MarketAgent):
    """A user: an attention budget, true interests, the platform's profile of it, a wallet."""

    population = "users"
    interest = Column(convert=_copy, check=_unit_vector)
    query = Column(convert=_copy)  # the platform's belief; the allocator moves it, not the user
    budget = Column()
    activity = Column(check=_in_range(0.05, 1.0))  # the range new users are drawn in
    fatigue = Column()
    utility_ema = Column()
    low_streak = Column()
    active_ticks = Column()
    consumed_total = Column()
    alive = Column(convert=bool)
    wallet = Balance("users")


class Creator(MarketAgent):
    """A creator: a niche (`topic`), an effort level (`quality`), a pace, a wallet."""

    population = "creators"
    topic = Column(convert=_copy, check=_unit_vector)
    quality = Column(check=_in_range(0.01, 1.0))  # the range entrants are drawn in
    clickbait = Column()
    publish_rate = Column(check=_non_negative)
    profit_ema = Column()
    loss_streak = Column()
    born_tick = Column()
    alive = Column(convert=bool)
    wallet = Balance("creators")

    @property
    def live_goods(self) -> int:
        """Goods of this creator in the catalogue now."""
        goods = self.model.market.goods
        return int(np.count_nonzero(goods.live & (goods.owner == self.key)))

    @property
    def exposure(self) -> int:
        """Lifetime exposures of this creator's goods in the catalogue now."""
        goods = self.model.market.goods
        return int(goods.exposures[goods.live & (goods.owner == self.key)].sum())


class Good(MarketAgent):
    """A good in the catalogue, named by its uid (catalogue rows are recycled, uids are not)."""

    population = "goods"
    owner = Column()
    embedding = Column("key", convert=_copy)
    quality = Column()
    is_product = Column(convert=bool)
    price = Column()
    expires = Column()
    clickbait = Column()
    exposures = Column()
    consumptions = Column()
    purchases = Column()
    value_delivered = Column()
    penalty = Column()

    @property
    def uid(self) -> int:
        return self.key

    @property
    def alive(self) -> bool:
        """Whether the good is still in the catalogue."""
        return int(self.model.market.uids.row_of[self.key]) >= 0

    def _row(self) -> int:
        row = int(self.model.market.uids.row_of[self.key])
        if row < 0:
            raise AgentGone(f"good {self.key} has left the catalogue")
        return row


class Advertiser(MarketAgent):
    """An advertiser: whom it targets, what a click is worth to it, what it bids, a wallet."""

    population = "advertisers"
    targeting = Column(convert=_copy)
    value_per_click = Column()
    bid = Column()
    budget_per_tick = Column()
    multiplier = Column()
    spent_last = Column()
    value_last = Column()
    wallet = Balance("advertisers")
    alive = True  # advertisers stay for the whole run


AGENT_TYPES: tuple[type[MarketAgent], ...] = (User, Creator, Good, Advertiser)


class AgentViews:
    """The model's agent views by type and key; brought up to date by `sync`, never during a tick.

    Pickles as empty: a checkpoint restores the arrays, and the views are rebuilt on the next
    read of `model.agents` (Mesa's own registries are rebuilt empty too).
    """

    def __init__(self) -> None:
        self.views: dict[type[MarketAgent], dict[int, MarketAgent]] = {kind: {} for kind in AGENT_TYPES}
        self.synced: tuple[int, int] | None = None  # (id of the market, tick) of the last sync

    def __reduce__(self) -> tuple[type, tuple]:
        return (AgentViews, ())

    def sync(self, model: Any) -> None:
        """Add a view for every agent present and remove those of agents that have left."""
        market = model.market
        stamp = (id(market), market.tick)
        if stamp == self.synced:
            return
        present = {
            User: np.flatnonzero(market.users.alive[: market.users_born]),
            Creator: np.flatnonzero(market.creators.alive[: market.creators_born]),
            Good: np.sort(market.goods.uid[market.goods.live]),
            Advertiser: np.arange(market.advertisers.capacity()),
        }
        for kind, keys in present.items():
            views = self.views[kind]
            wanted = set(keys.tolist())
            for key in [key for key in views if key not in wanted]:
                views.pop(key).remove()
            for key in keys.tolist():
                if key not in views:
                    views[key] = kind(model, key)
        self.synced = stamp
