"""Two plug-in rules: `explore` (allocation) and `quality_floor` (payout).

`explore` is attention_softmax with a cold-start bonus: goods with fewer than `below` lifetime
exposures get `bonus` added to their score, so new goods are tried before the allocator has
evidence about them. `quality_floor` pays consumptions like `engagement`, but only of goods whose
quality reaches `floor`: an incentive to cross a bar, which adapting creators see through
`marginal`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simulator.market.catalogue import Catalogue
from simulator.market.outcomes import Allocation, Consumption
from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.query_key import AttentionSoftmax
from simulator.rules.payout import PayoutRule, Probe
from simulator.scenario.schema import Scenario


class ExploreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bonus: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """Added to the score (a log-weight) of a good not yet shown `below` times."""
    below: int = Field(20, ge=1)
    """Lifetime exposures under which a good counts as new."""


class Explore(AttentionSoftmax):
    """attention_softmax plus a cold-start bonus for goods shown fewer than `below` times."""

    name = "explore"
    summary = "attention_softmax plus a cold-start bonus for goods shown fewer than `below` times (example plug-in)"
    Params = ExploreParams

    def __init__(self, temperature: float, bonus: float, below: int):
        super().__init__(temperature)
        self.bonus = bonus
        self.below = below

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: ExploreParams) -> Explore:
        return cls(scenario.allocation.temperature, params.bonus, params.below)

    def _bonus(self, state: MarketState, rows: np.ndarray) -> np.ndarray:
        return np.where(state.goods.exposures[rows] < self.below, FLOAT(self.bonus), FLOAT(0.0))

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        scores = super().scores(state, catalogue, users, out=out)
        scores += self._bonus(state, catalogue.rows)[None, :]
        return scores

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        scores = super().candidate_scores(state, catalogue, users, positions)
        bonus = self._bonus(state, catalogue.rows[positions])
        return scores + (bonus if positions.ndim == 2 else bonus[None, :])

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return super().audience_scores(state, users, keys, quality) + FLOAT(self.bonus)  # a new good is new


class QualityFloorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    floor: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    """Quality a good needs for its consumptions to be paid."""


class QualityFloor(PayoutRule):
    """Consumptions of goods whose quality reaches `floor`, each weighted by the good's penalty."""

    name = "quality_floor"
    summary = "consumptions of goods with quality at least `floor` (example plug-in)"
    Params = QualityFloorParams

    def __init__(self, floor: float):
        self.floor = floor

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: QualityFloorParams) -> QualityFloor:
        return cls(params.floor)

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        goods = state.goods
        consumed = allocation.exposures[consumption.consumed & (allocation.exposures >= 0)]
        paid = (goods.quality[consumed] >= self.floor) * goods.penalty[consumed].astype(np.float64)
        return np.bincount(consumed, weights=paid, minlength=goods.capacity())

    def marginal(self, probe: Probe) -> np.ndarray:
        return probe.consume * (probe.quality >= self.floor)[:, :, None]
