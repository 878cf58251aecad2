"""Bots, click fraud, engagement farms, sybil creators and the platform's defences.

Invariants (money to the unit with everything on, over random shares), results from theory (a
perfect filter leaves advertisers nothing to lose; a clone that adds no value earns under the
`exposure` payout and not under `shapley`), the defences' mechanics, and bad input refused
where it was written.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fresh_state, run_stages, tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.market.adversaries import is_sybil
from simulator.market.outcomes import Allocation, Consumption
from simulator.model import AttentionMarket
from simulator.registry import RuleError, registry
from simulator.rules.defences import (
    DEFENCES,
    Defence,
    active,
    flag_clones,
    payable_creators,
)
from simulator.rules.payout import make_payout_rule, payout_weights
from simulator.scenario.schema import AuditConfig, ScenarioError, load_scenario

SMALL = {
    "population.users.count": 200,
    "population.creators.count": 20,
    "population.goods.initial": 80,
    "population.advertisers.count": 4,
    "population.advertisers.budget_per_tick": 3_000,
}
EVERY_DEFENCE = {
    "defences.click_filter": {"detection": 0.9, "false_positive": 0.05},
    "defences.clone_detection": {"threshold": 0.97},
    "defences.identity_gate": {"min_tenure": 1, "verified": True, "failure_rate": 0.1},
    "defences.audits": {"rate": 0.3, "fine": 500},
}


def run(overrides: dict, ticks: int = 6, seed: int = 1) -> AttentionMarket:
    model = AttentionMarket(tiny({**SMALL, "ticks": ticks, **overrides}), seed=seed)
    while model.running:
        model.step()  # the invariants (money conserved, no overdraft) are checked every tick
    return model


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bots=st.floats(0.0, 1.0),
    farms=st.floats(0.0, 1.0),
    owners=st.integers(0, 6),
    refunds_from=st.sampled_from(["platform", "pool"]),
    pricing=st.sampled_from(["per_click", "per_impression"]),
    target=st.sampled_from(["rivals", "any"]),
    seed=st.integers(0, 2**16),
)
def test_money_is_conserved_to_the_unit_with_every_adversary_and_defence_on(bots, farms, owners, refunds_from, pricing, target, seed):
    model = run(
        {
            "adversaries.bots": {"share": bots, "click_rate": 0.7, "target": target, "fee_per_click": 3},
            "adversaries.farms": {"share": farms, "orders": 4, "fee": 7},
            "adversaries.sybils": {"owners": owners, "identities": 3},
            "circulation.auction.pricing": pricing,
            "circulation.attention_reward": 1,
            "circulation.platform_initial_wallet": 2_000,
            **EVERY_DEFENCE,
            "defences.click_filter": {"detection": 0.9, "false_positive": 0.05, "refunds_from": refunds_from},
        },
        ticks=4,
        seed=seed,
    )
    metrics = model.metrics
    assert (metrics["money_conservation_error"] == 0).all()
    ledger = model.market.ledger
    assert ledger.conservation_error() == 0
    # The fraud operator holds exactly the fees it was paid, through the ledger.
    assert int(ledger.balances["fraudsters"].sum()) == int(metrics["fraudster_revenue"].sum())
    assert (metrics["advertiser_fraud_loss"] >= 0).all()


@pytest.mark.parametrize("pricing", ["per_click", "per_impression"])
def test_a_perfect_filter_leaves_advertisers_nothing_lost_to_fraud(pricing):
    metrics = run(
        {
            "adversaries.bots": {"share": 0.4, "click_rate": 0.8},
            "circulation.auction.pricing": pricing,
            "defences.click_filter": {"detection": 1.0, "false_positive": 0.0},
        }
    ).metrics
    assert metrics["ad_spend_on_fraud"].sum() > 0  # bots were billed ...
    assert metrics["fraud_refunds"].sum() == metrics["ad_spend_on_fraud"].sum()  # ... and all of it came back
    assert metrics["advertiser_fraud_loss"].sum() == 0
    assert metrics["honest_refunds"].sum() == 0 and metrics["defence_false_positives"].sum() == 0


def test_without_a_filter_advertisers_pay_for_bots_and_their_clicks_are_worth_nothing():
    model = run({"adversaries.bots": {"share": 0.4, "click_rate": 0.8}})
    metrics = model.metrics
    assert metrics["advertiser_fraud_loss"].sum() == metrics["ad_spend_on_fraud"].sum() > 0
    assert metrics["fraud_click_share"].mean() > 0.5
    # Advertisers' value counts human clicks only: at most the best value per click × human clicks.
    human_clicks = (metrics["ad_clicks"] * (1 - metrics["fraud_click_share"])).round()
    best = model.market.advertisers.value_per_click.max()
    assert (metrics["advertiser_value"] <= human_clicks * best + 1e-9).all()


def test_bots_have_no_welfare_income_or_purchases_and_click_only_rivals():
    scenario = tiny({**SMALL, "adversaries.bots": {"share": 0.5, "target": "rivals", "click_rate": 1.0}})
    state = fresh_state(scenario)
    bots = np.flatnonzero(state.users.bot[: state.users_born])
    assert 0 < len(bots) < state.users_born
    wallets = state.ledger.balances["users"][bots].copy()
    rng = np.random.default_rng(3)
    for _ in range(3):
        tick = run_stages(state, scenario, rng)
        consumption = tick.consumption
        is_bot = consumption.bots
        assert is_bot is not None and is_bot.any()
        assert (consumption.utility[is_bot] == 0).all() and not consumption.bought[is_bot].any()
        assert (consumption.value[is_bot] == 0).all()
        clicked_ads = tick.allocation.ads[is_bot]
        sponsors = state.users.sponsor[consumption.users[is_bot]]
        assert not (consumption.clicked[is_bot] & (clicked_ads == sponsors[:, None])).any()
        assert consumption.clicked[is_bot].any()
    # No income, no purchases: a bot's wallet moves only by attention rewards (off here).
    np.testing.assert_array_equal(state.ledger.balances["users"][bots], wallets)
    assert state.users.alive[bots].all()


def test_engagement_farms_inflate_their_clients_counts_for_a_fee():
    model = run(
        {
            "adversaries.bots": {"share": 0.3, "consume_rate": 0.0, "click_rate": 0.0},
            "adversaries.farms": {"share": 0.3, "orders": 6, "fee": 5},
        }
    )
    metrics = model.metrics
    assert metrics["farmed_consumptions"].sum() > 0
    # With consume_rate 0 every bot consumption is a farmed one, and each was paid for.
    bot_consumptions = (metrics["consumptions"] * metrics["fraud_consumption_share"]).round()
    np.testing.assert_array_equal(bot_consumptions, metrics["farmed_consumptions"])
    assert metrics["fraudster_revenue"].sum() == 5 * metrics["farmed_consumptions"].sum()
    assert metrics["farm_client_payout_share"].mean() > 0


def test_sybil_identities_share_an_owner_niche_and_quality():
    scenario = tiny({**SMALL, "adversaries.sybils": {"owners": 2, "identities": 4, "clone_noise": 0.0}})
    state = fresh_state(scenario)
    creators = state.creators
    sybil = is_sybil(state)
    assert sybil.sum() == 8
    for owner in np.unique(creators.owner[np.flatnonzero(sybil)]):
        group = np.flatnonzero(creators.owner[: state.creators_born] == owner)
        assert len(group) == 4 and owner in group
        np.testing.assert_allclose(creators.topic[group], np.repeat(creators.topic[owner][None], 4, axis=0), atol=1e-6)
        assert (creators.quality[group] == creators.quality[owner]).all()


def _one_user_case(state, exposures, consumed, value):
    users = np.array([0], dtype=np.int64)
    exposures = np.array([exposures], dtype=np.int64)
    allocation = Allocation(users, exposures, np.full((1, 0), -1, dtype=np.int64), np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0)), 0)
    consumption = Consumption(
        users,
        np.array([consumed], dtype=bool),
        np.array([value], dtype=np.float32),
        np.zeros(exposures.shape, dtype=bool),
        np.zeros((1, 0), dtype=bool),
        np.zeros(1, dtype=np.float32),
        np.zeros(0, dtype=np.int64),
        np.array([value], dtype=np.float32),  # one exposure each: value at full attention
        np.zeros(exposures.shape, dtype=bool),
    )
    return allocation, consumption


def _rule(name):
    return make_payout_rule(tiny({**SMALL, "circulation.creator_payout.rule": name}))


def _owner_share(weights, owner_rows):
    return weights[owner_rows].sum() / weights.sum()


def test_a_sybil_clone_gains_under_exposure_payout_and_not_under_shapley():
    """Honest creator H's good (value 1.0) and sybil owner S's good (0.8) are consumed by one
    user. S's second identity S2 publishes a near-clone; the user is shown it too but a copy of
    what it just consumed is worth nothing to it (not consumed). Exposure pays for the extra
    showing; Shapley pays for contributions to the user's welfare, which the clone has none of."""
    scenario = tiny({**SMALL, "population.goods.initial": 0, "population.advertisers.count": 0, "allocation.ad_slots": 0})
    state = fresh_state(scenario)
    H, S, S2 = 0, 1, 2
    goods = state.goods
    goods.live[:3] = True
    goods.owner[:3] = [H, S, S2]
    goods.penalty[:3] = 1.0
    before = {rule: payout_weights(_rule(rule), state, *_one_user_case(state, [0, 1, -1], [True, True, False], [1.0, 0.8, 0.0])) for rule in ("exposure", "shapley")}
    after = {rule: payout_weights(_rule(rule), state, *_one_user_case(state, [0, 1, 2], [True, True, False], [1.0, 0.8, 0.8])) for rule in ("exposure", "shapley")}
    owner = [S, S2]
    assert _owner_share(after["exposure"], owner) > _owner_share(before["exposure"], owner)  # 1/2 → 2/3
    assert _owner_share(after["exposure"], owner) == pytest.approx(2 / 3)
    assert _owner_share(after["shapley"], owner) == pytest.approx(_owner_share(before["shapley"], owner))  # 0.4 both
    assert _owner_share(after["shapley"], owner) == pytest.approx(0.4)


def test_shapley_does_pay_a_clone_the_user_values_as_much_as_the_original():
    """The limit of the property: if the user consumes the clone and values it like the original,
    the max-welfare game splits the shared increment among more players, and the owner's
    m identities at σ below the top collect m·σ/(m + 1) (documented in docs/adversarial.md)."""
    scenario = tiny({**SMALL, "population.goods.initial": 0, "population.advertisers.count": 0, "allocation.ad_slots": 0})
    state = fresh_state(scenario)
    goods = state.goods
    goods.live[:3] = True
    goods.owner[:3] = [0, 1, 2]
    goods.penalty[:3] = 1.0
    weights = payout_weights(_rule("shapley"), state, *_one_user_case(state, [0, 1, 2], [True, True, True], [1.0, 0.8, 0.8]))
    assert weights[[1, 2]].sum() == pytest.approx(2 * 0.8 / 3)


def test_clone_detection_flags_clones_of_other_creators_goods_only():
    scenario = tiny({**SMALL, "population.goods.initial": 0, "defences.clone_detection": {"threshold": 0.99}})
    state = fresh_state(scenario)
    goods = state.goods
    dim = goods.key.shape[1]
    keys = np.eye(dim, dtype=np.float32)[[0, 0, 1, 1]]
    goods.live[:4] = True
    goods.owner[:4] = [0, 1, 2, 2]  # good 1 copies creator 0's good 0; goods 2 and 3 are one creator's own
    goods.key[:4] = keys
    flagged, honest = flag_clones(state, scenario.defences.clone_detection, np.arange(4))
    np.testing.assert_array_equal(goods.clone[:4], [False, True, False, False])
    assert (flagged, honest) == (1, 1)  # creator 1 is no sybil: an honest false positive


def test_the_identity_gate_pays_one_verified_identity_per_sybil_owner():
    model = run(
        {
            "adversaries.sybils": {"owners": 3, "identities": 3},
            "defences.identity_gate": {"min_tenure": 0, "verified": True, "failure_rate": 0.0},
        }
    )
    state = model.market
    eligible = payable_creators(state, model.config.defences.identity_gate)
    sybil = is_sybil(state)
    principals = state.creators.owner[: state.creators_born] == np.arange(state.creators_born)
    np.testing.assert_array_equal(eligible, principals)
    assert sybil.sum() == 9 and (sybil & ~eligible).sum() == 6


def test_defences_describe_themselves_in_the_registry_and_compose():
    defences = registry("defence")
    assert defences.names() == sorted(["click_filter", "clone_detection", "identity_gate", "audits"])
    for name in defences.names():
        defence = defences.resolve(name)
        assert defence.summary and defence.Params.model_fields and defence is DEFENCES.rules[name]
    scenario = tiny({**SMALL, **EVERY_DEFENCE})
    assert [d.name for d in active(scenario)] == ["click_filter", "clone_detection", "identity_gate", "audits"]
    assert active(tiny(SMALL)) == []

    class Incomplete(Defence):
        name = "not_a_section"
        summary = "has no place in a scenario"
        Params = AuditConfig

    with pytest.raises(RuleError, match="a section under `defences`"):
        defences.register(Incomplete)


def test_audits_fine_fraudulent_creators_and_cost_the_platform():
    metrics = run(
        {
            "adversaries.sybils": {"owners": 5, "identities": 2},
            "defences.audits": {"rate": 0.5, "detection": 1.0, "false_positive": 0.0, "fine": 100, "cost": 1},
            "circulation.platform_initial_wallet": 1_000,
        }
    ).metrics
    assert metrics["audit_fines"].sum() > 0 and metrics["audit_costs"].sum() > 0
    assert metrics["defence_false_positives"].sum() == 0


def test_adversaries_off_leave_every_fraud_metric_at_zero():
    metrics = run({}).metrics
    fraud = ["active_bots", "ad_spend_on_fraud", "fraudster_revenue", "farmed_consumptions", "defence_false_positives", "audit_costs"]
    assert (metrics[fraud] == 0).all().all()
    assert (metrics["sybil_payout_share"] == 0).all()


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("population: {creators: {count: 10}}\nadversaries:\n  sybils: {owners: 4, identities: 3}\n", "adversaries.sybils.owners", 3),
        ("adversaries:\n  bots:\n    share: 1.5\n", "adversaries.bots.share", 3),
        ("adversaries:\n  farms: {share: -0.1}\n", "adversaries.farms.share", 2),
        ("defences:\n  click_filter: {detection: 2}\n", "defences.click_filter.detection", 2),
    ],
)
def test_bad_adversary_input_is_refused_where_it_was_written(tmp_path, text, key, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    (issue,) = caught.value.issues
    assert (issue.key, issue.line, issue.source) == (key, line, str(path))


def test_adversaries_leave_the_honest_population_at_tick_0_as_it_was():
    """Their draws come from their own generators: the clean run of a seed is its pair."""
    clean = fresh_state(tiny(SMALL))
    rigged = fresh_state(tiny({**SMALL, "adversaries.bots.share": 0.3, "adversaries.farms.share": 0.2,
                               "adversaries.sybils": {"owners": 2, "identities": 3}, "defences.identity_gate": {}}))
    np.testing.assert_array_equal(clean.users.interest, rigged.users.interest)
    np.testing.assert_array_equal(clean.advertisers.targeting, rigged.advertisers.targeting)
    honest = ~is_sybil(rigged)
    of_honest = clean.goods.live & honest[np.maximum(clean.goods.owner, 0)]
    np.testing.assert_array_equal(clean.goods.owner, rigged.goods.owner)
    np.testing.assert_array_equal(clean.goods.key[of_honest], rigged.goods.key[of_honest])  # sybils' goods follow their owner's niche
    np.testing.assert_array_equal(clean.creators.topic[: clean.creators_born][honest], rigged.creators.topic[: rigged.creators_born][honest])
    assert rigged.users.bot.any() and not clean.users.bot.any()
