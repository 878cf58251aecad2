"""`popularity`: every user sees goods in proportion to their recent consumption counts.

    score(u, g) = log(1 + consumptions of g in the last `popularity_window` ticks) / T

so a good's weight is (1 + recent consumptions)^(1/T): the same for every user, blind to
taste, and self-reinforcing (what is shown gets consumed, what is consumed gets shown). New
goods start at weight 1. The counts come from `state.consumption_window`, which the
consumption stage fills every tick (see `record_consumptions`).
"""

from __future__ import annotations


import numpy as np

from simulator.market.catalogue import Catalogue, window_counts
from pydantic import BaseModel

from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.base import ALLOCATION_RULES, AllocationRule
from simulator.scenario.schema import Scenario


def record_consumptions(state: MarketState, consumed_rows: np.ndarray, window: int) -> None:
    """Add this tick's consumptions (catalogue rows, one entry per consumption) to the window."""
    ticks = state.consumption_window.ticks
    counts = np.bincount(consumed_rows, minlength=0) if len(consumed_rows) else np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(counts)
    ticks.append((state.tick, state.goods.uid[rows].copy(), counts[rows].astype(np.int64)))
    # Forget ticks that left the window, and old ticks whose goods have all left the catalogue.
    while ticks and (ticks[0][0] <= state.tick - window or not (state.uids.rows(ticks[0][1]) >= 0).any()):
        ticks.popleft()


class Popularity(AllocationRule):
    """log(1 + recent consumption count) / T for every user alike."""

    name = "popularity"
    summary = "goods in proportion to (1 + recent consumptions)^(1/T), the same for every user"

    def __init__(self, temperature: float, window: int):
        self.temperature = temperature
        self.window = window

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> Popularity:
        return cls(scenario.allocation.temperature, scenario.allocation.popularity_window)

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        popular = np.log1p(window_counts(state, self.window)[catalogue.rows]).astype(FLOAT)
        popular *= FLOAT(1.0 / self.temperature)
        if out is None:
            return np.tile(popular, (len(users), 1))
        out[...] = popular
        return out

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """A new good has no consumptions yet: log(1 + 0) = 0 for everyone."""
        return np.zeros((len(users), len(keys)), dtype=FLOAT)


ALLOCATION_RULES.register(Popularity)
