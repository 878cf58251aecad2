"""The incentive each payout rule shows adapting creators is the rule's own (issue 14, defects 1 and 4).

Adapting creators ask the payout rule in force what a new good would earn (`PayoutRule.marginal`).
These tests pin that answer to the real split: for random small markets, the weight a creator
gains when one of its goods is added to a user's consumptions equals what `marginal` predicts
for that user (exactly, since consumption is then given), and the user-game rules pay a good for
its value at full attention, not for where the allocator happened to put it in the feed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fresh_state, tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_payouts import hand_market, payout_rule, records, stock

from simulator.model import advance
from simulator.rules import RuleSet
from simulator.rules.payout import PAYOUT_RULES, Probe, contributions, payout_weights

RULES = ["exposure", "engagement", "quality", "shapley", "backward", "equal"]


def probe_for(creator: int, quality: float, value: float, owners: np.ndarray, values: np.ndarray, user: int) -> Probe:
    """One creator, one candidate strategy, the market's users; the candidate consumed by `user` only."""
    users = owners.shape[0]
    consume = np.zeros((1, 1, users))
    consume[0, 0, user] = 1.0
    sigma = np.zeros((1, 1, users))
    sigma[0, 0, user] = value
    return Probe(np.array([creator]), consume, sigma, np.array([[quality]]), owners, values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rule=st.sampled_from(RULES),
    discount=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    creator=st.integers(0, 2),
    quality=st.floats(0.05, 1.0),
    value=st.floats(0.0, 1.0),
    user=st.integers(0, 3),
)
def test_marginal_model_equals_the_realised_payout_change(rule, discount, seed, creator, quality, value, user):
    """Add one good of `creator`, consumed by `user` with value `value` at full attention: the
    creator's weight grows by exactly what the rule's marginal model says for that user."""
    value = float(np.float32(value))  # the consumption records hold float32 values
    rng = np.random.default_rng(seed)
    _, state = hand_market()
    width = 3
    owners_of_goods = rng.integers(0, 3, size=6)
    stock(state, np.r_[owners_of_goods, creator], quality=np.r_[rng.uniform(0.1, 1.0, 6), quality].astype(np.float32))
    exposures = np.array([rng.permutation(6)[:width] for _ in range(4)])
    consumed = rng.random((4, width)) < 0.7
    values = (rng.random((4, width)) * consumed).round(3)
    before = records(np.arange(4), exposures, consumed, values)
    chosen = payout_rule(rule, discount)
    paid_before = payout_weights(chosen, state, *before)
    # The same tick with the new good (catalogue row 6) appended to `user`'s feed and consumed.
    new_exposures = np.c_[exposures, np.full(4, -1)]
    new_exposures[user, width] = 6
    new_consumed = np.c_[consumed, np.zeros(4, dtype=bool)]
    new_consumed[user, width] = True
    new_values = np.c_[values, np.zeros(4)]
    new_values[user, width] = value
    paid_after = payout_weights(chosen, state, *records(np.arange(4), new_exposures, new_consumed, new_values))
    owners, incumbents = contributions(state, *before)
    predicted = chosen.marginal(probe_for(creator, quality, value, owners, incumbents, user))
    assert predicted.shape == (1, 1, 4)
    np.testing.assert_allclose(predicted[0, 0, user], paid_after[creator] - paid_before[creator], atol=1e-9)


def test_clones_earn_nothing_under_backward_with_zero_discount_in_the_creators_model():
    """Defect 1: with γ = 0 a clone of the top good adds no margin over the runner-up; the old
    model credited it its full value. Shapley splits the value of the two clones: 0.4 / 0.4."""
    _, state = hand_market()
    stock(state, [0, 1], quality=[0.8, 0.8])
    owners, values = contributions(state, *records([0], [[0]], [[True]], [[0.8]]))
    backward = payout_rule("backward", discount=0.0).marginal(probe_for(1, 0.8, 0.8, owners, values, 0))
    assert backward[0, 0, 0] == pytest.approx(0.0)
    shapley = payout_rule("shapley").marginal(probe_for(1, 0.8, 0.8, owners, values, 0))
    assert shapley[0, 0, 0] == pytest.approx(0.4)  # 0.8 − (0.8 − 0.4): the incumbent drops from 0.8 to 0.4


def test_user_game_pay_does_not_depend_on_feed_position():
    """Defect 4: the same good consumed at feed position 7 or 0 earns its creator the same under
    shapley and backward (σ is the value at full attention, not the realised value)."""
    scenario = tiny({"population.users.count": 300, "population.goods.initial": 60, "ticks": 1})
    state = fresh_state(scenario)
    rules = RuleSet.of(scenario)
    outcome = advance(state, scenario, rules, np.random.default_rng(3))
    allocation, consumption = outcome.allocation, outcome.consumption
    consumed = consumption.consumed & (allocation.exposures >= 0)
    assert consumed[:, 1:].any()
    # Realised value falls with the position (overload) and fatigue; the contribution does not.
    ratio = consumption.value[consumed] / consumption.intrinsic[consumed]
    assert ratio.min() < 0.9 * ratio.max()
    for name in ("shapley", "backward"):
        rule = PAYOUT_RULES.resolve(name).from_scenario(scenario, None)
        reversed_feed = allocation.__class__(
            allocation.users, allocation.exposures[:, ::-1], allocation.ads, allocation.ad_prices, allocation.ad_click_rates, allocation.ad_slots_offered
        )
        reversed_consumption = consumption.__class__(
            consumption.users, consumption.consumed[:, ::-1], consumption.value[:, ::-1] * 0.5, consumption.bought[:, ::-1],
            consumption.clicked, consumption.utility, consumption.churned, consumption.intrinsic[:, ::-1],
            consumption.blocked[:, ::-1],
        )
        np.testing.assert_allclose(
            payout_weights(rule, state, allocation, consumption), payout_weights(rule, state, reversed_feed, reversed_consumption), rtol=1e-9
        )


@pytest.mark.parametrize("rule", ["shapley", "backward"])
def test_best_responding_creators_see_the_anti_cloning_pay(rule):
    """Defect 1 end to end: under the user-game rules the creators' model of a clone of an
    incumbent's niche is worth less than of an uncontested niche; under exposure it is the same."""
    _, state = hand_market()
    stock(state, [0, 1], quality=[0.9, 0.9])
    owners, values = contributions(state, *records([0, 1], [[0], [1]], [[True], [False]], [[0.9], [0.0]]))
    contested = payout_rule(rule, 0.0).marginal(probe_for(2, 0.9, 0.9, owners, values, 0))[0, 0, 0]
    open_niche = payout_rule(rule, 0.0).marginal(probe_for(2, 0.9, 0.9, owners, values, 1))[0, 0, 1]
    assert contested < open_niche
    exposure = payout_rule("exposure")
    assert exposure.marginal(probe_for(2, 0.9, 0.9, owners, values, 0))[0, 0, 0] == exposure.marginal(probe_for(2, 0.9, 0.9, owners, values, 1))[0, 0, 1]


def test_contributions_of_a_sample_of_rows_are_those_rows_of_the_whole():
    """Adapting creators take their audience sample's contributions only (issue 19: for every
    active user they cost more than the whole market model); the rows are the whole's rows."""
    rng = np.random.default_rng(5)
    _, state = hand_market()
    stock(state, rng.integers(0, 3, size=6), quality=rng.uniform(0.1, 1.0, 6).astype(np.float32))
    exposures = np.array([np.r_[rng.permutation(6)[:3], -1] for _ in range(8)])
    consumed = (rng.random((8, 4)) < 0.6) & (exposures >= 0)
    tick = records(np.arange(8), exposures, consumed, (rng.random((8, 4)) * consumed).round(3))
    sample = np.array([6, 1, 3])
    owners, values = contributions(state, *tick)
    sample_owners, sample_values = contributions(state, *tick, sample)
    np.testing.assert_array_equal(sample_owners, owners[sample])
    np.testing.assert_array_equal(sample_values, values[sample])
