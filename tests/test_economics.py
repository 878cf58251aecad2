"""Economic defects of issue 14, one test (or a few) per defect, each failing on the code before
its fix: products are had only when bought, auctions price truthfully with a reserve and over
the slots a user has, homogenization reads users alive now, and so on."""

from __future__ import annotations

import numpy as np
from conftest import fresh_state, tiny

from simulator.rules.allocation.engine import make_rule
from simulator.stages.acquisition import acquire
from simulator.stages.allocation import allocate
from simulator.stages.consumption import consume


def allocated(scenario, prepare=None, seed=1):
    state = fresh_state(scenario)
    if prepare is not None:
        prepare(state)
    state.tick += 1
    rng = np.random.default_rng(seed)
    arrivals = acquire(state, scenario, rng)
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
