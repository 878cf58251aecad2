"""Creators who adapt: each rule moves niches and effort the way its definition says."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny

import simulator

# No entries or exits, so the set of creators (and so supply_diversity) changes only by adaptation.
CLOSED = {
    "population.creators.entry.rate": 0.0,
    "population.creators.exit.patience": 10_000,
    "ticks": 12,
}


def alive_creators(model):
    market = model.market
    rows = np.flatnonzero(market.creators.alive[: market.creators_born])
    return market.creators.topic[rows], market.creators.quality[rows]


def test_static_creators_keep_supply_diversity_fixed():
    result = simulator.run(tiny({**CLOSED, "population.creators.adaptation.rule": "static"}))
    assert result.metrics["supply_diversity"].nunique() == 1


@pytest.mark.parametrize("rule", ["gradient", "best_response"])
def test_adapting_creators_move_and_stay_on_the_unit_sphere(rule):
    result = simulator.run(tiny({**CLOSED, "population.creators.adaptation.rule": rule}))
    assert result.metrics["supply_diversity"].nunique() > 1
    topics, quality = alive_creators(result.model)
    np.testing.assert_allclose(np.linalg.norm(topics, axis=1), 1.0, atol=1e-5)
    assert quality.min() >= 0.01 and quality.max() <= 1.0
    assert result.summary["max_abs_money_conservation_error"] == 0


def test_adaptation_is_reproducible():
    scenario = tiny({**CLOSED, "population.creators.adaptation.rule": "best_response"})
    first, second = simulator.run(scenario), simulator.run(scenario)
    np.testing.assert_array_equal(alive_creators(first.model)[0], alive_creators(second.model)[0])


def effort_after(payout_rule: str, adaptation: str) -> float:
    overrides = {
        **CLOSED,
        "ticks": 25,
        "population.users.count": 800,
        "population.creators.count": 30,
        "population.goods.initial": 240,
        "population.creators.adaptation.rule": adaptation,
        "circulation.creator_payout.rule": payout_rule,
        "circulation.creator_payout.pool_share": 0.8,
        # Effort cheap enough that paying for quality can make it worth its cost.
        "population.creators.effort_cost": 300,
        "population.creators.cost_per_good": 100,
    }
    result = simulator.run(tiny(overrides))
    return float(alive_creators(result.model)[1].mean())


@pytest.mark.parametrize("adaptation", ["gradient", "best_response"])
def test_paying_for_quality_buys_more_effort_than_paying_for_exposure(adaptation):
    # Exposure is blind to quality, so effort is pure cost; the quality rule pays for it.
    assert effort_after("quality", adaptation) > effort_after("exposure", adaptation)
