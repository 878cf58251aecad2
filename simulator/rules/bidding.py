"""Advertisers' bidding strategies: how each sets its per-click bid at the start of a tick.

A bid is `multiplier × value per click`; the strategies differ in how the multiplier moves,
using only what the advertiser itself saw last tick (what it paid, what its clicks were worth):

- `truthful`: multiplier 1, the dominant strategy in a second-price auction;
- `shaded`: a fixed `shading` fraction, the textbook response to first-price auctions;
- `paced`: the multiplier is corrected each tick toward spending the total budget evenly over
  the run, `m ← clip(m · exp(−pacing_rate · (spent − target) / target), 0.01, 1)`;
- `learning`: EXP3 over `learning_arms` shading factors, rewarded by last tick's surplus
  (value − paid) scaled by the tick budget, so it discovers how much to shade under the
  auction format it faces.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from simulator.market.state import MarketState
from simulator.registry import define_kind
from simulator.scenario.schema import Scenario

EXPLORATION = 0.05  # EXP3's uniform mixing: every arm keeps at least this share / arms


def shading_factors(arms: int) -> np.ndarray:
    return np.arange(1, arms + 1, dtype=np.float64) / arms


def arm_probabilities(weights: np.ndarray) -> np.ndarray:
    arms = weights.shape[1]
    return (1 - EXPLORATION) * weights / weights.sum(axis=1, keepdims=True) + EXPLORATION / arms


class BiddingStrategy(ABC):
    """How every advertiser's bid multiplier moves at the start of a tick (see the module doc)."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def update(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        """Set `state.advertisers.multiplier` from what each advertiser saw last tick."""


def check_strategy(cls: type) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, BiddingStrategy)):
        return ["the base class simulator.rules.bidding.BiddingStrategy"]
    missing = [f"`{name}`" for name in ("name", "summary") if not isinstance(getattr(cls, name, None), str)]
    return missing + [f"`{name}()`" for name in sorted(cls.__abstractmethods__)]


BIDDING_STRATEGIES = define_kind("bidding", check_strategy)


class Truthful(BiddingStrategy):
    name = "truthful"
    summary = "bid the value of a click (dominant in a second-price auction)"

    def update(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        state.advertisers.multiplier[:] = 1.0


class Shaded(BiddingStrategy):
    name = "shaded"
    summary = "bid a fixed `shading` fraction of the value (the textbook first-price response)"

    def update(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        state.advertisers.multiplier[:] = scenario.population.advertisers.shading


class Paced(BiddingStrategy):
    name = "paced"
    summary = "scale bids to spend the total budget evenly over the run"

    def update(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        cfg = scenario.population.advertisers
        ads = state.advertisers
        if state.tick <= 1:
            ads.multiplier[:] = cfg.shading  # where pacing starts
            return
        target = max(cfg.total_budget / scenario.ticks, 1.0)
        correction = np.exp(-cfg.pacing_rate * (ads.spent_last - target) / target)
        ads.multiplier[:] = np.clip(ads.multiplier * correction, 0.01, 1.0)


class Learning(BiddingStrategy):
    name = "learning"
    summary = "EXP3 over shading factors, rewarded by last tick's surplus: learns to shade under the format it faces"

    def update(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        cfg = scenario.population.advertisers
        ads = state.advertisers
        if state.tick > 1:
            _reward_played_arms(state, cfg.learning_rate)
        probabilities = arm_probabilities(ads.arm_weights)
        cumulative = probabilities.cumsum(axis=1)
        draws = rng.random(len(probabilities))[:, None]
        ads.arm[:] = np.minimum((cumulative < draws).sum(axis=1), probabilities.shape[1] - 1)
        ads.multiplier[:] = shading_factors(cfg.learning_arms)[ads.arm]


for _strategy in (Truthful, Shaded, Paced, Learning):
    BIDDING_STRATEGIES.register(_strategy)


def set_bids(state: MarketState, strategy: BiddingStrategy, scenario: Scenario, rng: np.random.Generator) -> None:
    """Update every advertiser's multiplier by the strategy in force, then its bid."""
    ads = state.advertisers
    if ads.capacity() == 0:
        return
    strategy.update(state, scenario, rng)
    ads.bid[:] = np.floor(ads.multiplier * ads.value_per_click).astype(np.int64)


def _reward_played_arms(state: MarketState, learning_rate: float) -> None:
    """EXP3: importance-weighted reward for the arm each advertiser played last tick."""
    ads = state.advertisers
    scale = np.maximum(ads.budget_per_tick, 1).astype(np.float64)
    reward = np.clip((ads.value_last - ads.spent_last) / scale, -1.0, 1.0)
    rows = np.arange(ads.capacity())
    probability = arm_probabilities(ads.arm_weights)[rows, ads.arm]
    ads.arm_weights[rows, ads.arm] *= np.exp(learning_rate * reward / (probability * ads.arm_weights.shape[1]))
    ads.arm_weights /= ads.arm_weights.max(axis=1, keepdims=True)
