"""The compiled per-exposure bookkeeping of consumption gives the bytes of the numpy it replaced (issue 19).

Each kernel in simulator/market/bookkeeping.py is checked against the numpy code the consumption
stage ran before (written out here as the reference) on random feeds: ragged, with empty rows,
products, tight wallets and repeated goods; bytes, not closeness, since a run's metrics must not
move. The whole stage is covered by `test_kernels.py::test_one_and_two_threads_give_the_same_bytes`
(thread counts) and the determinism tests.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.market.bookkeeping import (
    buy_in_feed_order,
    count_engagement,
    remember_consumed,
    scatter,
    settle_choices,
    shown_dots,
    shown_entries,
)
from simulator.market.kernels import gathered_dots


def random_feeds(rng: np.random.Generator, users: int, width: int, goods: int) -> np.ndarray:
    """(users, width) goods in feed order, -1 padded, some rows empty, goods repeating across rows."""
    exposures = np.full((users, width), -1, dtype=np.int64)
    for row, length in enumerate(np.minimum(rng.integers(0, width + 1, size=users), goods)):
        exposures[row, :length] = rng.choice(goods, size=length, replace=False)
    return exposures


def numpy_shown(exposures: np.ndarray):
    flat = np.flatnonzero(exposures.ravel() >= 0)
    user, column = np.divmod(flat, max(exposures.shape[1], 1))
    return flat, user, column, exposures.ravel()[flat]


def numpy_purchases(user, wanted, price, wallets, shape, flat):
    """The column-by-column wallet loop consumption ran before."""
    def matrix(values):
        out = np.zeros(shape, dtype=values.dtype)
        out.ravel()[flat] = values
        return out

    wallet = wallets.astype(np.int64)
    want = matrix(wanted)
    prices = matrix(np.where(wanted, price, 0).astype(np.int64))
    buys = np.zeros(shape, dtype=bool)
    for column in range(shape[1]):
        buys[:, column] = want[:, column] & (prices[:, column] <= wallet)
        wallet -= np.where(buys[:, column], prices[:, column], 0)
    return buys.ravel()[flat]


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), users=st.integers(0, 60), width=st.integers(1, 12), goods=st.integers(1, 30))
def test_consumption_bookkeeping_matches_the_numpy_it_replaced(seed, users, width, goods):
    rng = np.random.default_rng(seed)
    exposures = random_feeds(rng, users, width, goods)
    flat, user, column, good = shown_entries(exposures)
    for actual, expected in zip((flat, user, column, good), numpy_shown(exposures)):
        assert_same_bytes(actual, expected)

    # Dot products of each shown good with its user's taste, as gathered_dots gave them.
    dim = 16
    interest = rng.standard_normal((users + 5, dim)).astype(np.float32)
    keys = rng.standard_normal((goods, dim)).astype(np.float32)
    rows = rng.permutation(users + 5)[:users]
    assert_same_bytes(shown_dots(interest, rows, user, keys, good), gathered_dots(interest[rows], keys, exposures).ravel()[flat])

    # Purchases in feed order against tight wallets.
    price = rng.integers(0, 400, size=goods)[good]
    is_product = rng.random(goods)[good] < 0.6
    chosen = rng.random(len(good)) < 0.7
    wallets = rng.integers(0, 900, size=users)
    wanted = chosen & is_product
    bought = buy_in_feed_order(user, wanted, price, wallets)
    assert_same_bytes(bought, numpy_purchases(user, wanted, price, wallets, exposures.shape, flat))

    # Consumed, blocked and each user's gain, in float32 then summed per user in float64.
    value = rng.random(len(good)).astype(np.float32)
    price_in_value = (price / 300).astype(np.float32)
    taste = rng.logistic(0.0, 0.3, size=len(good)).astype(np.float32)
    outside = float(rng.uniform(0.0, 0.5))
    consumed, blocked, gain = settle_choices(user, users, chosen, is_product, bought, value, price_in_value, taste, outside)
    expected_consumed = chosen & (~is_product | bought)
    assert_same_bytes(consumed, expected_consumed)
    assert_same_bytes(blocked, chosen & is_product & ~bought)
    gained = np.where(expected_consumed, value - price_in_value + taste - outside, 0.0)
    # (astype: numpy's bincount of no entries is int64 zeros; the stage turns the gains into float32 utility anyway)
    assert_same_bytes(gain, np.bincount(user, weights=gained, minlength=users).astype(np.float64))

    # The goods' counters, added to what they held.
    counters = [rng.integers(0, 50, size=goods) for _ in range(3)]
    delivered = rng.random(goods) * 10
    expected = [counters[0] + np.bincount(good, minlength=goods), counters[1] + np.bincount(good[consumed], minlength=goods),
                counters[2] + np.bincount(good[bought], minlength=goods),
                delivered + np.bincount(good[consumed], weights=value[consumed], minlength=goods)]  # fmt: skip
    count_engagement(good, consumed, bought, value, *counters, delivered)
    for actual, wanted_counter in zip((*counters, delivered), expected):
        assert_same_bytes(actual, wanted_counter)

    # Rings of recent consumption: a user consuming more than the ring holds overwrites in order.
    memory = 3
    uid = rng.permutation(10 * goods)[:goods]
    history = rng.integers(-1, 10 * goods, size=(users + 5, memory))
    total = rng.integers(0, 20, size=users + 5)
    expected_history, expected_total = history.copy(), total.copy()
    index = user[consumed]
    user_rows = rows[index]
    running = np.cumsum(np.ones(len(index), dtype=np.int64))
    counts = np.bincount(index, minlength=users)
    first = (np.cumsum(counts) - counts)[index]
    order_in_user = running - running[first] if len(index) else running
    expected_history[user_rows, (expected_total[user_rows] + order_in_user) % memory] = uid[good[consumed]]
    expected_total[rows] += counts
    remember_consumed(user, rows, good, consumed, uid, history, total)
    assert_same_bytes(history, expected_history)
    assert_same_bytes(total, expected_total)

    # The (users, K) records the later stages read.
    for values in (consumed, value):
        reference = np.zeros(exposures.shape, dtype=values.dtype)
        reference.ravel()[flat] = values
        assert_same_bytes(scatter(flat, values, exposures.shape), reference)


def test_value_delivered_adds_the_ticks_sum_to_the_old_total():
    """numpy added the tick's per-good sum to the lifetime total; adding each value to the total
    in turn rounds differently, so the kernel must sum the tick first."""
    rng = np.random.default_rng(11)
    good = rng.integers(0, 5, size=2000)
    value = rng.random(2000).astype(np.float32)
    consumed = rng.random(2000) < 0.8
    counters = [np.zeros(5, dtype=np.int64) for _ in range(3)]
    delivered = 12345.678 + rng.random(5)
    expected = delivered + np.bincount(good[consumed], weights=value[consumed], minlength=5)
    count_engagement(good, consumed, np.zeros(2000, dtype=bool), value, *counters, delivered)
    assert_same_bytes(delivered, expected)
