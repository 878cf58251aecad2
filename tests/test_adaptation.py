"""Creators who adapt: each rule moves niches and effort the way its definition says."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny

import simulator
from simulator.rules.allocation.base import ALLOCATION_RULES, NoParams
from simulator.rules.allocation.shapley import mediator_probabilities

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


# --- each rule's own model of its selection reaches the creators (audience_exposures) -----------


def _rule(name):
    return ALLOCATION_RULES.resolve(name).from_scenario(tiny({"allocation.rule": name}), NoParams())


def test_softmax_audience_exposures_are_the_new_good_joining_the_softmax():
    rng = np.random.default_rng(1)
    scores, new, budgets = rng.normal(size=(5, 7)), rng.normal(size=(5, 3)), rng.integers(1, 6, size=5).astype(float)
    got = _rule("attention_softmax").audience_exposures(scores, np.arange(7), budgets)(new)
    for user in range(5):
        for j in range(3):
            weights = np.exp(np.r_[scores[user], new[user, j]])
            assert got[user, j] == pytest.approx(budgets[user] * weights[-1] / weights.sum())


def test_top_k_audience_exposures_are_one_exactly_when_the_new_good_enters_the_top_k():
    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.2, 0.3, 0.4]])
    budgets = np.array([1.0, 2.0, 5.0])  # the last user has room for every good
    got = _rule("top_k").audience_exposures(scores, np.arange(3), budgets)(np.array([[0.95, 0.6], [0.95, 0.6], [-9.0, 0.0]]))
    np.testing.assert_array_equal(got, [[1, 0], [1, 1], [1, 1]])
    # A tie with the k-th best loses: the new good would come last in catalogue order.
    assert _rule("top_k").audience_exposures(scores, np.arange(3), budgets)(np.full((3, 1), 0.9))[0, 0] == 0


def test_shapley_audience_exposures_are_the_mediators_probability_of_one_more_player():
    rng = np.random.default_rng(2)
    owners = np.array([0, 0, 1, 2, 2, 2, 3])
    relevance = rng.uniform(0.05, 1.0, size=(6, 7))
    relevance[0] = relevance[0, 0]  # ties among incumbents
    new = rng.uniform(0.0, 1.0, size=(6, 4))
    new[1, 0] = relevance[1].max() + 0.01  # above every incumbent
    budgets = rng.integers(1, 4, size=6).astype(float)
    got = _rule("shapley").audience_exposures(np.log(relevance), owners, budgets)(np.log(new))
    best = np.stack([relevance[:, owners == c].max(axis=1) for c in range(4)], axis=1)
    for user in range(6):
        for j in range(4):
            probability, _ = mediator_probabilities(np.r_[best[user], new[user, j]][None, :])
            assert got[user, j] == pytest.approx(budgets[user] * probability[0, -1])
    # No incumbents: the new player alone is shown with its relevance.
    alone = _rule("shapley").audience_exposures(np.zeros((2, 0)), np.zeros(0, dtype=int), np.ones(2))(np.log(np.array([[0.3], [0.8]])))
    np.testing.assert_allclose(alone, [[0.3], [0.8]])
