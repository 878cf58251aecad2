"""The compiled ad auctions and ad settlement give the bytes of the numpy they replaced (issue 19).

Each kernel is checked against the code the stage ran before, written out here as the reference,
on random inputs: budgets that bind, tied bids and targeting, reserve prices, every registered
auction format, per click and per impression pricing; bytes, not closeness, since a run's metrics
must not move. (Whole runs were compared with the code before the kernels by
benchmarks/run_digests.py, on one machine.)
"""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.market.ad_settlement import billable_events, cap_charges, click_counts, group_by_advertiser
from simulator.market.streams import EntityDraws, stable_order
from simulator.market.values import match
from simulator.rules.auction import sell_matched, sell_with_throttling
from simulator.rules.formats import AUCTION_FORMATS

def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def numpy_ad_sales(query, users, targeting, order, step, click_rate, bids, budgets, shown, positions, calibration, code, reserve):
    """The allocation stage's block loop before the fused pass: rates for a block of users in
    numpy, its rows gathered out, sold, and scattered back."""
    ads = np.full((len(users), len(positions)), -1, dtype=np.int64)
    prices = np.zeros(ads.shape, dtype=np.int64)
    rates = np.zeros(ads.shape, dtype=np.float64)
    remaining = budgets.astype(np.float64)
    for start in range(0, len(users), step):
        index = order[start : start + step]
        predicted = click_rate * match(query[users[index]], targeting)
        block_ads, block_prices, block_rates = ads[index], prices[index], rates[index]
        sell_with_throttling(bids, remaining, predicted, shown[index], positions, calibration, code, reserve, block_ads, block_prices, block_rates)
        ads[index], prices[index], rates[index] = block_ads, block_prices, block_rates
    return ads, prices, rates, remaining


def fused_ad_sales(query, users, targeting, order, step, click_rate, bids, budgets, shown, positions, calibration, code, reserve):
    """The stage's block loop now: the product in numpy, everything after it in one pass."""
    ads = np.full((len(users), len(positions)), -1, dtype=np.int64)
    prices = np.zeros(ads.shape, dtype=np.int64)
    rates = np.zeros(ads.shape, dtype=np.float64)
    remaining = budgets.astype(np.float64)
    for start in range(0, len(users), step):
        index = order[start : start + step]
        products = np.take(query, users[index], axis=0) @ targeting.T
        sell_matched(bids, remaining, products, click_rate, index, shown, positions, calibration, code, reserve, ads, prices, rates)
    return ads, prices, rates, remaining


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    users=st.integers(0, 80),
    advertisers=st.integers(1, 9),
    slots=st.integers(1, 4),
    step=st.integers(1, 90),
    auction_format=st.sampled_from(AUCTION_FORMATS.names()),
    per_click=st.booleans(),
    reserve=st.sampled_from([0, 0, 40, 150]),
    budget_scale=st.sampled_from([5.0, 60.0, 1e9]),
)
def test_fused_ad_auctions_match_the_numpy_they_replaced(seed, users, advertisers, slots, step, auction_format, per_click, reserve, budget_scale):
    rng = np.random.default_rng(seed)
    dim = 8
    population = users + 7
    query = rng.standard_normal((population, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    targeting = rng.standard_normal((advertisers, dim)).astype(np.float32)
    targeting /= np.linalg.norm(targeting, axis=1, keepdims=True)
    # Ties: advertisers sharing a targeting and a bid score alike for every user; a few users
    # targeted exactly opposite are never clicked (predicted rate 0).
    twins = rng.integers(0, advertisers, size=advertisers // 2)
    targeting[: len(twins)] = targeting[twins]
    bids = rng.choice(np.array([0, 30, 120, 120, 400]), size=advertisers)
    bids[: len(twins)] = bids[twins]
    active = np.sort(rng.choice(population, size=users, replace=False))
    if users:
        query[active[0]] = -targeting[0]
    shown = rng.integers(0, slots + 1, size=users)
    positions = 0.7 ** np.arange(slots, dtype=np.float64)
    # Per impression the stage charges the predicted rate (calibration 1); per click, the learnt one.
    calibration = rng.choice(np.array([0.0, 0.4, 1.0, 2.5]), size=advertisers) if per_click else np.ones(advertisers)
    budgets = (rng.random(advertisers) * budget_scale).astype(np.int64)
    order = EntityDraws(int(rng.integers(0, 2**62))).order(active)
    code = AUCTION_FORMATS.resolve(auction_format).code
    arguments = (query, active, targeting, order, step, 0.05, bids, budgets, shown, positions, calibration, code, reserve)
    for actual, expected in zip(fused_ad_sales(*arguments), numpy_ad_sales(*arguments)):
        assert_same_bytes(actual, expected)


def test_budgets_bind_in_the_fused_auctions():
    """The random test's tight budgets do stop advertisers mid-block (the branch it compares)."""
    rng = np.random.default_rng(3)
    query = rng.standard_normal((500, 4)).astype(np.float32)
    targeting = rng.standard_normal((3, 4)).astype(np.float32)
    users = np.arange(500)
    arguments = (query, users, targeting, rng.permutation(500), 200, 0.3, np.array([90, 100, 110]), np.array([200, 200, 200]),
                 np.full(500, 2), np.array([1.0, 0.5]), np.ones(3), AUCTION_FORMATS.resolve("gsp").code, 0)  # fmt: skip
    ads, prices, rates, remaining = fused_ad_sales(*arguments)
    assert (remaining <= 0).sum() == 2 and (ads < 0).any()
    for actual, expected in zip((ads, prices, rates, remaining), numpy_ad_sales(*arguments)):
        assert_same_bytes(actual, expected)


def test_fused_auctions_refuse_products_of_another_dtype():
    with pytest.raises(ValueError, match="float32"):
        sell_matched(np.array([5]), np.ones(1), np.zeros((1, 1)), 0.1, np.array([0]), np.array([1]), np.ones(1), np.ones(1),
                     "gsp", 0, np.full((1, 1), -1), np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1)))  # fmt: skip


def numpy_settlement(ads, prices, rates, clicked, bots, key, budgets, advertisers, per_impression):
    """The ad settlement's passes before the kernels: billable events, billing order, budget caps,
    and the per-advertiser counts (bots None: no bots)."""
    billed = ads >= 0 if per_impression else clicked
    user_index, slot = np.nonzero(billed)
    advertiser = ads[user_index, slot]
    price = prices[user_index, slot]
    if per_impression:
        price = np.ceil(price * rates[user_index, slot] - 1e-9).astype(np.int64)
    events = (user_index, slot, advertiser, price)
    order = np.lexsort((key(user_index, slot), advertiser))
    advertiser, price = advertiser[order], price[order]
    spent_before = np.cumsum(price) - price
    group_start = np.searchsorted(advertiser, advertiser, side="left")
    spent_before -= spent_before[group_start]
    charge = np.clip(budgets[advertiser] - spent_before, 0, price)
    spent = np.bincount(advertiser, weights=charge, minlength=advertisers).astype(np.int64)
    free = int(np.count_nonzero(charge < price))
    shown = ads >= 0
    # (astype: numpy's bincount of no entries is int64 zeros; the stage reads only `predicted > 0`)
    predicted = np.bincount(ads[shown], weights=rates[shown], minlength=advertisers).astype(np.float64)
    realised = np.bincount(ads[clicked], minlength=advertisers)
    by_humans = realised if bots is None else np.bincount(ads[clicked & ~bots[:, None]], minlength=advertisers)
    return events, order, charge, spent, free, predicted, realised, by_humans


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    users=st.integers(0, 120),
    slots=st.integers(0, 4),
    advertisers=st.integers(1, 8),
    per_impression=st.booleans(),
    with_bots=st.booleans(),
    tied_keys=st.booleans(),
    budget_scale=st.sampled_from([0, 50, 400, 10**9]),
)
def test_ad_settlement_kernels_match_the_numpy_they_replaced(seed, users, slots, advertisers, per_impression, with_bots, tied_keys, budget_scale):
    rng = np.random.default_rng(seed)
    ads = np.where(rng.random((users, slots)) < 0.7, rng.integers(0, advertisers, size=(users, slots)), -1)
    prices = np.where(ads >= 0, rng.integers(0, 300, size=(users, slots)), 0)
    rates = np.where(ads >= 0, rng.random((users, slots)) * 0.2, 0.0)
    clicked = (ads >= 0) & (rng.random((users, slots)) < 0.4)
    bots = rng.random(users) < 0.3 if with_bots else None
    budgets = rng.integers(0, budget_scale + 1, size=advertisers)
    draws = EntityDraws(int(rng.integers(0, 2**62)))
    row_ids = rng.permutation(10 * users + 1)[:users]

    def key(user_index, slot):
        """The keyed uniform of each event, or a coarse one whose ties only the stable order breaks."""
        uniform = draws.uniform(row_ids[user_index], slot)
        return np.floor(uniform * 3) if tied_keys else uniform

    events, order, charge, spent, free, predicted, realised, by_humans = numpy_settlement(
        ads, prices, rates, clicked, bots, key, budgets, advertisers, per_impression
    )
    fused_events = billable_events(ads, prices, rates, clicked, per_impression)
    for actual, expected in zip(fused_events, events):
        assert_same_bytes(actual, expected)
    user_index, slot, advertiser, price = fused_events
    fused_order = group_by_advertiser(stable_order(key(user_index, slot)), advertiser, advertisers)
    assert_same_bytes(fused_order, order)
    fused_charge, fused_spent, fused_free = cap_charges(advertiser[order], price[order], budgets, advertisers)
    assert_same_bytes(fused_charge, charge)
    assert_same_bytes(fused_spent, spent)
    assert fused_free == free
    humans = np.zeros(users, dtype=bool) if bots is None else bots
    for actual, expected in zip(click_counts(ads, rates, clicked, humans, advertisers), (predicted, realised, by_humans)):
        assert_same_bytes(actual, expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3000), levels=st.sampled_from([2, 50, 0]))
def test_stable_order_is_the_stable_argsort(seed, size, levels):
    """Keys with many ties (few levels) take the stable sort's order, distinct keys too (0: uniforms)."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, levels, size=size).astype(np.float64) if levels else rng.random(size)
    assert_same_bytes(stable_order(keys), np.argsort(keys, kind="stable"))
    draws = EntityDraws(seed)
    ids = rng.permutation(size)
    assert_same_bytes(draws.order(ids), np.argsort(draws.uniform(ids), kind="stable"))
