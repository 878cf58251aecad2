"""Shared fixtures: a tiny scenario (300 users, 20 creators, 60 goods, 4 advertisers, d = 8,
10 ticks) and helpers that build a market state or run a tick stage by stage, without the CLI."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from simulator.allocator import make_rule
from simulator.populations import initial_state
from simulator.scenario import Scenario, load_scenario
from simulator.stages.acquisition import Arrivals, acquire
from simulator.stages.allocation import Allocation, allocate
from simulator.stages.circulation import Settlement, circulate
from simulator.stages.consumption import Consumption, consume
from simulator.state import MarketState

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 7,
    "ticks": 10,
    "embedding_dim": 8,
    "population": {
        "users": {"count": 300},
        "creators": {"count": 20},
        "goods": {"initial": 60},
        "advertisers": {"count": 4},
    },
}


def tiny(overrides: dict[str, Any] | None = None) -> Scenario:
    """The tiny scenario with dotted-key overrides, validated like `--set`."""
    return load_scenario(copy.deepcopy(TINY), overrides)


def fresh_state(scenario: Scenario, seed: int = 0) -> MarketState:
    """The market at tick 0 for `scenario`, drawn with its own generator."""
    return initial_state(scenario, np.random.default_rng(seed))


@dataclass
class Tick:
    arrivals: Arrivals
    allocation: Allocation
    consumption: Consumption
    settlement: Settlement


def run_stages(state: MarketState, scenario: Scenario, rng: np.random.Generator) -> Tick:
    """One tick by hand, exactly as `AttentionMarket.step` orders the stages."""
    state.tick += 1
    arrivals = acquire(state, scenario, rng)
    allocation = allocate(state, arrivals, make_rule(scenario), scenario, rng)
    consumption = consume(state, allocation, scenario, rng)
    settlement = circulate(state, arrivals, allocation, consumption, scenario, rng)
    return Tick(arrivals, allocation, consumption, settlement)


@pytest.fixture
def tiny_dict() -> dict[str, Any]:
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_scenario() -> Scenario:
    return tiny()


@pytest.fixture
def tiny_state(tiny_scenario: Scenario) -> MarketState:
    return fresh_state(tiny_scenario)
