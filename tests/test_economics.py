"""Economic defects of issue 14, one test (or a few) per defect, each failing on the code before
its fix: products are had only when bought, auctions price truthfully with a reserve and over
the slots a user has, homogenization reads users alive now, and so on."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fresh_state, tiny

from simulator.market.streams import EntityDraws
from simulator.metrics.collect import homogenization
from simulator.model import AttentionMarket, advance
from simulator.rules import RuleSet
from simulator.rules.allocation.engine import make_rule
from simulator.rules.auction import run_auctions, sell_with_throttling
from simulator.rules.bidding import set_bids
from simulator.scenario.schema import with_overrides
from simulator.stages.acquisition import _publish_goods, acquire
from simulator.stages.allocation import allocate
from simulator.stages.circulation import _admit_creators
from simulator.stages.consumption import consume


def allocated(scenario, prepare=None, seed=1):
    state = fresh_state(scenario)
    if prepare is not None:
        prepare(state)
    state.tick += 1
    rng = np.random.default_rng(seed)
    arrivals = acquire(state, RuleSet.of(scenario).bidding, scenario, rng)
    return state, allocate(state, arrivals, make_rule(scenario), scenario, rng)


# --- defect 2: a product yields its value only if bought, once, net of its price ------------

ALL_PRODUCTS = {"population.goods.product_share": 1.0, "allocation.ad_slots": 0, "population.users.outside_option": -1.0}


def test_defect_2_unbought_products_deliver_nothing():
    """Empty wallets: every product is wanted (outside option −1), none can be paid for, so
    nothing is consumed and nobody gains utility from goods they did not buy."""

    def empty_wallets(state):
        state.ledger.balances["users"][:] = 0

    scenario = tiny({**ALL_PRODUCTS, "population.users.willingness_to_pay": 1_000_000})
    state, allocation = allocated(scenario, empty_wallets)
    shown = allocation.exposures >= 0
    consumption = consume(state, allocation, scenario, np.random.default_rng(3))
    assert shown.sum() > 100
    assert not consumption.consumed.any() and not consumption.bought.any()
    assert consumption.blocked.sum() == shown.sum()  # every one chosen, every one blocked by the wallet
    assert (consumption.utility == 0).all()
    assert state.goods.consumptions.sum() == 0 and state.goods.value_delivered.sum() == 0


def test_defect_2_price_enters_the_choice():
    """Same users, same shocks: dearer products are chosen less often (with ample wallets)."""
    counts = []
    for price_scale in (0, 1, 4):

        def set_prices(state, scale=price_scale):
            state.goods.price[:] = np.where(state.goods.is_product, 1_000 * scale, 0)

        scenario = tiny({"population.goods.product_share": 1.0, "allocation.ad_slots": 0, "population.users.willingness_to_pay": 3_000})
        state, allocation = allocated(scenario, set_prices)
        consumption = consume(state, allocation, scenario, np.random.default_rng(3))
        counts.append(int(consumption.consumed.sum()))
    assert counts[0] > counts[1] > counts[2] >= 0, counts


def test_defect_2_a_bought_product_counts_once_net_of_its_price():
    """Utility of a user = Σ over consumed goods of (value − price/wtp + shock − outside option):
    with a negligible shock, value counts once and the price is paid out of it."""
    scenario = tiny({**ALL_PRODUCTS, "population.users.choice_noise": 1e-9, "population.users.willingness_to_pay": 10_000,
                     "population.users.initial_wallet": 10**9})
    state, allocation = allocated(scenario)
    consumption = consume(state, allocation, scenario, np.random.default_rng(3))
    assert consumption.bought.sum() > 100
    np.testing.assert_array_equal(consumption.bought, consumption.consumed)
    price = state.goods.price[np.maximum(allocation.exposures, 0)]
    expected = np.where(consumption.consumed, consumption.value - price / 10_000 + 1.0, 0.0).sum(axis=1)
    np.testing.assert_allclose(consumption.utility, expected, rtol=1e-4, atol=1e-4)


def test_defect_2_a_dear_product_skipped_leaves_money_for_a_cheaper_one():
    scenario = tiny({**ALL_PRODUCTS, "population.users.willingness_to_pay": 10**9})
    state, allocation = allocated(scenario)
    shown = allocation.exposures >= 0
    user = int(np.argmax(shown.sum(axis=1)))
    row = allocation.users[user]
    goods = allocation.exposures[user, shown[user]]
    state.goods.price[goods] = 10
    state.goods.price[goods[0]] = 1_000
    state.ledger.balances["users"][row] = 500
    consumption = consume(state, allocation, scenario, np.random.default_rng(3))
    assert consumption.blocked[user, 0] and not consumption.bought[user, 0]
    assert consumption.bought[user, 1 : shown[user].sum()].all()


# --- defect 3: second price with a reserve charges threshold prices, so truth is dominant ----

# The hand-worked example: two slots (θ = 1, 0.5), reserve 30 per click. Bidders A, B, C bid
# 100, 40, 20 with predicted click rates 0.1, 0.2, 0.1: scores 10, 8 (C is under the reserve).
EXAMPLE_BIDS = np.array([100, 40, 20])
EXAMPLE_CTR = np.array([[0.1, 0.2, 0.1]])
EXAMPLE_POSITIONS = np.array([1.0, 0.5])
EXAMPLE_RESERVE = 30


def example(auction_format, bids=EXAMPLE_BIDS):
    outcome = run_auctions(bids, EXAMPLE_CTR, 2, EXAMPLE_POSITIONS, auction_format, reserve_price=EXAMPLE_RESERVE)
    return outcome.winners[0].tolist(), outcome.price_per_click[0].tolist()


def test_defect_3_hand_worked_two_slot_auction_with_a_reserve():
    # second price: A holds slot 0 against B's score 8 and slot 1 against the reserve in its own
    # score units, 30 × 0.1 = 3: ((1 − .5)·8 + .5·3) / (1 · 0.1) = 55 per click. B's slot 1 is
    # held against the reserve alone: .5 · (30 × 0.2) / (.5 · 0.2) = 30.
    assert example("second_price") == ([0, 1], [55, 30])
    # gsp: the next score over one's own click rate, at least the reserve: 8/0.1 = 80; 30.
    assert example("gsp") == ([0, 1], [80, 30])
    # first price: the bids.
    assert example("first_price") == ([0, 1], [100, 40])


def payoff_per_impression(auction_format, bidder, value, bid, bids, ctr, positions, reserve):
    """The bidder's expected surplus per impression when it bids `bid` and the others stay put."""
    trial = bids.copy()
    trial[bidder] = bid
    outcome = run_auctions(trial, ctr, len(positions), positions, auction_format, reserve_price=reserve)
    won = np.flatnonzero(outcome.winners[0] == bidder)
    if len(won) == 0:
        return 0.0
    slot = int(won[0])
    return float(positions[slot] * ctr[0, bidder] * (value - outcome.price_per_click[0, slot]))


def best_deviation(auction_format, bidder, values, ctr, positions, reserve):
    """(truthful payoff, best payoff over a grid of bids 0..3 × value) for one bidder, others truthful."""
    value = int(values[bidder])
    truthful = payoff_per_impression(auction_format, bidder, value, value, values, ctr, positions, reserve)
    grid = np.unique(np.linspace(0, 3 * value, 301).astype(np.int64))
    best = max(payoff_per_impression(auction_format, bidder, value, int(b), values, ctr, positions, reserve) for b in grid)
    return truthful, best


def test_defect_3_overbidding_does_not_pay_in_the_hand_worked_example():
    # B (value 40) bidding 51 would take slot 0; a price of max(VCG, reserve) charged it 25 there
    # (surplus 0.2 · 15 = 3 per impression against 1 for the truth). The threshold price is 40.
    assert example("second_price", np.array([100, 51, 20])) == ([1, 0], [40, 30])
    for bidder in range(3):
        truthful, best = best_deviation("second_price", bidder, EXAMPLE_BIDS, EXAMPLE_CTR, EXAMPLE_POSITIONS, EXAMPLE_RESERVE)
        assert truthful >= best - 1e-9, (bidder, truthful, best)


def test_defect_3_second_price_is_truthful_with_a_reserve_on_random_markets():
    """Every bidder's best deviation on a grid gains at most the rounding of prices up to whole
    minor units (one unit per click); GSP, for contrast, is not truthful on the same markets."""
    rng = np.random.default_rng(14)
    gsp_gains = 0
    for _ in range(40):
        bidders, slots = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        values = rng.integers(20, 200, size=bidders)
        ctr = rng.uniform(0.02, 0.2, size=(1, bidders))
        positions = np.cumprod(np.r_[1.0, rng.uniform(0.4, 0.9, size=slots - 1)])
        reserve = int(rng.integers(0, 120))
        for bidder in range(bidders):
            truthful, best = best_deviation("second_price", bidder, values, ctr, positions, reserve)
            assert best - truthful <= ctr[0, bidder] * positions[0] * 1.0 + 1e-9, (values, ctr, positions, reserve, bidder)
            truthful, best = best_deviation("gsp", bidder, values, ctr, positions, reserve)
            gsp_gains += best > truthful + ctr[0, bidder]
    assert gsp_gains > 0


# --- defect 6: each user's ads are priced over the slots that user has -----------------------


def test_defect_6_a_user_with_one_ad_slot_pays_the_one_slot_vickrey_price():
    bids = np.array([100, 50, 20])
    ctr = np.full((2, 3), 0.1)
    positions = np.array([1.0, 0.7])
    ads = np.full((2, 2), -1, dtype=np.int64)
    prices = np.zeros((2, 2), dtype=np.int64)
    rates = np.zeros((2, 2))
    sell_with_throttling(bids, np.full(3, 1e18), ctr, np.array([1, 2]), positions, np.ones(3), "second_price", 0, ads, prices, rates)
    # One slot: the runner-up's bid, 50 (over two slots it would be ((1 − .7)·5 + .7·2)/0.1 = 29).
    assert ads[0].tolist() == [0, -1] and prices[0].tolist() == [50, 0]
    # Two slots: the two-slot VCG prices, as before.
    assert ads[1].tolist() == [0, 1] and prices[1].tolist() == [29, 20]
    np.testing.assert_array_equal(prices[1], run_auctions(bids, ctr[:1], 2, positions, "second_price").price_per_click[0])


# --- defect 5: homogenization is read on pairs of users alive this tick -------------------------


def run_market(overrides, ticks):
    scenario = tiny({"ticks": ticks, **overrides})
    model = AttentionMarket(scenario)
    for _ in range(ticks):
        model.step()
    return model


CHURNING = {
    "population.users.churn.threshold": 0.3,
    "population.users.churn.patience": 1,
    "population.users.arrivals_per_tick": 20.0,
    "metrics.homogenization_pairs": 64,
}


def test_defect_5_homogenization_pairs_are_alive_users_including_arrivals():
    model = run_market(CHURNING, 8)
    market = model.market
    assert market.users.alive[:300].mean() < 0.8  # many of the tick-0 users left
    pairs = market.homogenization.pairs
    assert pairs.shape == (64, 2)
    assert market.users.alive[pairs].all() and (pairs[:, 0] != pairs[:, 1]).all()
    assert (pairs >= 300).any()  # arrivals are sampled too
    assert set(market.homogenization.consumed) == set(np.unique(pairs).tolist())


def test_defect_5_homogenization_window_compares_recent_consumption():
    """With a window of one tick the metric is the mean Jaccard of this tick's consumed sets,
    computed here from the tick's outcome alone (pairs that were already in the sample)."""
    scenario = tiny({**CHURNING, "metrics.homogenization_window": 1, "population.users.churn.threshold": -100.0})
    model = AttentionMarket(scenario)
    for _ in range(3):
        model.step()
    state = model.market
    seen = []
    for _ in range(6):
        pairs = state.homogenization.pairs.copy()
        outcome = advance(state, scenario, model.rules, model.rng)
        assert (state.homogenization.pairs == pairs).all()  # nobody left, the sample is unchanged
        consumed = {int(user): set() for user in np.unique(pairs)}
        for index, column in zip(*np.nonzero(outcome.consumption.consumed)):
            user = int(outcome.allocation.users[index])
            if user in consumed:
                consumed[user].add(int(state.goods.uid[outcome.allocation.exposures[index, column]]))
        expected = np.mean([len(consumed[a] & consumed[b]) / max(len(consumed[a] | consumed[b]), 1) for a, b in pairs.tolist()])
        assert homogenization(state) == pytest.approx(expected)
        seen.append(expected)
    assert max(seen) > 0


# --- defect 7: the minimum-quality bar is the creator programme's eligibility ------------------


@pytest.mark.parametrize("rule", ["exposure", "equal"])
def test_defect_7_creators_under_the_bar_publish_nothing_are_paid_nothing_and_leave(rule):
    """Static creators under the bar never publish and the pool pays them nothing, even while
    their tick-0 goods are on offer and shown; once those expire they leave after
    `exit.patience` ticks with nothing on offer (docs/rules/market_rules.md, "Minimum quality").
    Content only, so a creator's income is its payout."""
    scenario = tiny({"circulation.min_quality": 0.5, "circulation.creator_payout.rule": rule, "population.creators.entry.rate": 0.0,
                     "population.goods.product_share": 0.0, "population.goods.lifetime": 4, "population.creators.exit.patience": 2,
                     "population.creators.quality_sd": 0.3, "ticks": 12})
    model = AttentionMarket(scenario)
    market = model.market
    under = np.flatnonzero(market.creators.quality[:20] < 0.5)
    over = np.flatnonzero(market.creators.quality[:20] >= 0.5)
    assert len(under) and len(over)
    wallets = market.ledger.balances["creators"][under].copy()
    on_offer_ticks = paid = 0
    for _ in range(12):
        on_offer_ticks += int(np.isin(under, market.goods.owner[market.goods.live]).sum())
        model.step()
        assert model.latest_metrics["money_conservation_error"] == 0
        paid += model.latest_metrics["creator_payouts"]
    assert paid > 0
    # Not a cent in (no payout) and not a cent out (nothing published, no production cost).
    np.testing.assert_array_equal(market.ledger.balances["creators"][under], wallets)
    assert on_offer_ticks > 0  # they had goods on offer for a while (the tick-0 catalogue)
    assert not market.creators.alive[under].any()  # all left: nothing on offer for `patience` ticks


# --- defect 9: pacing against what can be spent, an unbiased entry signal, publishing by profit --


def test_defect_9_paced_bidders_spending_their_tick_cap_do_not_raise_bids():
    """Total budget / ticks (2 500) above the tick cap (2 000): an advertiser spending its cap is on
    pace, so its multiplier stays put instead of drifting up to 1."""
    scenario = tiny({"population.advertisers.bidding": "paced", "population.advertisers.total_budget": 25_000,
                     "population.advertisers.budget_per_tick": 2_000, "ticks": 10})
    state = fresh_state(scenario)
    state.tick = 2
    state.advertisers.spent_last[:] = 2_000
    state.advertisers.multiplier[:] = 0.5
    before = state.advertisers.multiplier.copy()
    set_bids(state, RuleSet.of(scenario).bidding, scenario, np.random.default_rng(0))
    np.testing.assert_allclose(state.advertisers.multiplier, before)
    state.advertisers.spent_last[:] = 1_000  # under pace: bids go up
    set_bids(state, RuleSet.of(scenario).bidding, scenario, np.random.default_rng(0))
    assert (state.advertisers.multiplier > before).all()


def test_defect_9_entry_follows_every_creators_profit_not_the_survivors():
    """Survivors profit a little, but the creators of the tick lose on average (the leavers lost
    heavily): an entrant expects a loss, so nobody enters."""
    scenario = tiny({"population.creators.entry.rate": 1.0})
    state = fresh_state(scenario)
    state.creators.profit_ema[:20] = 10.0
    losing_tick = np.r_[np.full(15, 10), np.full(5, -500)]
    assert _admit_creators(state, losing_tick.astype(np.int64), scenario, EntityDraws(0)) == 0
    assert _admit_creators(state, np.full(20, 10, dtype=np.int64), scenario, EntityDraws(0)) > 0


def test_defect_9_creators_publish_less_while_they_lose_money():
    scenario = tiny({"population.creators.publish_rate": 2.0, "population.creators.initial_wallet": 10**8})
    counts = {}
    for profit in (-10_000.0, 0.0, 10_000.0):
        state = fresh_state(scenario)
        state.ledger.balances["creators"][:20] = 10**8
        state.creators.profit_ema[:20] = profit
        state.tick += 1
        published, _ = _publish_goods(state, scenario, EntityDraws(5))
        counts[profit] = len(published)
    assert counts[-10_000.0] < counts[0.0] < counts[10_000.0], counts
    fixed = with_overrides(scenario, {"population.creators.publish_elasticity": 0.0})
    state = fresh_state(fixed)
    state.creators.profit_ema[:20] = -10_000.0
    state.tick += 1
    assert len(_publish_goods(state, fixed, EntityDraws(5))[0]) == counts[0.0]
