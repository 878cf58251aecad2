"""Shared fixtures: a tiny scenario (300 users, 20 creators, 60 goods, 4 advertisers, d = 8,
10 ticks) and helpers that build a market state or run a tick stage by stage, without the CLI."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulator.market.outcomes import TickOutcome
from simulator.market.populations import initial_state
from simulator.market.state import MarketState
from simulator.model import AttentionMarket, advance
from simulator.rules import RuleSet
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.runs.driver import run
from simulator.scenario.schema import Scenario, load_scenario

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


# The tiny scenario as a YAML file's text, for tests that go through the command line.
TINY_YAML = """\
name: tiny
seed: 7
ticks: {ticks}
population:
  users: {{count: 300}}
  creators: {{count: 20}}
  goods: {{initial: 50}}
  advertisers: {{count: 5}}
"""


def tiny(overrides: dict[str, Any] | None = None) -> Scenario:
    """The tiny scenario with dotted-key overrides, validated like `--set`."""
    return load_scenario(copy.deepcopy(TINY), overrides)


def fresh_state(scenario: Scenario, seed: int = 0) -> MarketState:
    """The market at tick 0 for `scenario`, drawn with its own generator."""
    return initial_state(scenario, np.random.default_rng(seed))


def run_stages(state: MarketState, scenario: Scenario, rng: np.random.Generator) -> TickOutcome:
    """One tick by hand, through the same function `AttentionMarket.step` uses."""
    return advance(state, scenario, RuleSet.of(scenario), rng)


@pytest.fixture
def tiny_dict() -> dict[str, Any]:
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_scenario() -> Scenario:
    return tiny()


@pytest.fixture
def tiny_state(tiny_scenario: Scenario) -> MarketState:
    return fresh_state(tiny_scenario)


def assert_rule_run_resumes_identically(scenario: Scenario, checkpoint: Path, ticks_before: int) -> AttentionMarket:
    """A rule with state: a whole run equals `simulator.run`, keeps money exact, and a checkpoint
    taken after `ticks_before` ticks restores the rule's state and resumes to the same metrics.
    Returns the whole run, for rule-specific checks."""
    whole = AttentionMarket(scenario)
    while whole.running:
        whole.step()
    assert (whole.metrics["money_conservation_error"] == 0).all()
    pd.testing.assert_frame_equal(run(scenario).metrics, whole.metrics, check_exact=True)
    first = AttentionMarket(scenario)
    for _ in range(ticks_before):
        first.step()
    save_checkpoint(first, checkpoint)
    resumed = load_checkpoint(checkpoint)
    for name, value in first.rule.state_dict().items():
        again = resumed.rule.state_dict()[name]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(again, value)
        else:
            assert repr(again) == repr(value), name
    while resumed.running:
        resumed.step()
    pd.testing.assert_frame_equal(resumed.metrics, whole.metrics, check_exact=True)
    return whole
