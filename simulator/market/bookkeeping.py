"""Compiled per-exposure bookkeeping of the consumption stage (numba), one pass each.

A tick shows every active user a few goods: at 100k users about 600k exposures, each needing a
dot product, a purchase decision against the user's wallet, the goods' counters, the user's ring
of recent consumption and the (users, K) records the later stages read. In numpy each of these is
a chain of masks, gathers, bincounts and a loop over feed positions, every link a temporary the
size of the tick; here each is one pass over the exposures.

Every kernel repeats the numpy arithmetic it replaces operation for operation (float32 where
numpy computed in float32, sums in float64 in exposure order as `np.bincount` adds them), so a
run's bytes do not change; `tests/test_bookkeeping.py` compares each with its numpy version.
Exposures are flat and ordered by user, then feed position (`consumption.Shown`). The passes
are serial: each costs a few milliseconds and several carry a user's state (a wallet, a ring
position) from one exposure to the next.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def shown_entries(exposures):
    """(flat, user, column, goods) of the entries of `exposures` (users, K) that are >= 0, in
    row-major order: `np.flatnonzero(exposures.ravel() >= 0)`, its divmod by K and the goods."""
    rows, width = exposures.shape
    count = 0
    for i in range(rows):
        for k in range(width):
            count += exposures[i, k] >= 0
    flat = np.empty(count, dtype=np.int64)
    user = np.empty(count, dtype=np.int64)
    column = np.empty(count, dtype=np.int64)
    goods = np.empty(count, dtype=exposures.dtype)
    e = 0
    for i in range(rows):
        for k in range(width):
            good = exposures[i, k]
            if good >= 0:
                flat[e] = i * width + k
                user[e] = i
                column[e] = k
                goods[e] = good
                e += 1
    return flat, user, column, goods


@njit(cache=True, fastmath=True)
def shown_dots(vectors, rows, user, keys, goods):
    """out[e] = vectors[rows[user[e]]] · keys[goods[e]] in float32, summed as `gathered_dots` sums."""
    out = np.empty(user.shape[0], dtype=np.float32)
    for e in range(user.shape[0]):
        row, good = rows[user[e]], goods[e]
        total = np.float32(0.0)
        for d in range(vectors.shape[1]):
            total += vectors[row, d] * keys[good, d]
        out[e] = total
    return out


@njit(cache=True)
def buy_in_feed_order(user, wanted, price, wallets):
    """Per exposure, whether the wanted product is bought: in feed order, each while the user's
    wallet (wallets[user], minor units) still covers its price, which it then pays; one the user
    cannot afford is skipped, and a cheaper one after it can still be bought."""
    bought = np.zeros(user.shape[0], dtype=np.bool_)
    current, wallet = -1, np.int64(0)
    for e in range(user.shape[0]):
        if user[e] != current:
            current, wallet = user[e], np.int64(wallets[user[e]])
        if wanted[e] and price[e] <= wallet:
            bought[e] = True
            wallet -= price[e]
    return bought


@njit(cache=True)
def settle_choices(user, users, chosen, is_product, bought, value, price_in_value, taste, outside_option):
    """(consumed, blocked, gain per user): a chosen good is consumed if it is content or bought, and
    blocked if it is a product the wallet did not cover; a consumption gains, in float32, its value
    less its price in value units plus its taste shock less the outside option, summed per user in
    float64 in feed order (as `np.bincount(user, weights=...)`)."""
    count = user.shape[0]
    consumed = np.empty(count, dtype=np.bool_)
    blocked = np.empty(count, dtype=np.bool_)
    gain = np.zeros(users, dtype=np.float64)
    outside = np.float32(outside_option)
    for e in range(count):
        consumed[e] = chosen[e] and (not is_product[e] or bought[e])
        blocked[e] = chosen[e] and is_product[e] and not bought[e]
        gained = np.float32(0.0)
        if consumed[e]:
            gained = value[e] - price_in_value[e] + taste[e] - outside
        gain[user[e]] += np.float64(gained)
    return consumed, blocked, gain


@njit(cache=True)
def count_engagement(goods, consumed, bought, value, exposures, consumptions, purchases, value_delivered):
    """The goods' lifetime counters, in place: exposures, consumptions, purchases, and value
    delivered (this tick's per-good float64 sum added to the old total, as numpy adds a bincount)."""
    delivered = np.zeros(value_delivered.shape[0], dtype=np.float64)
    for e in range(goods.shape[0]):
        good = goods[e]
        exposures[good] += 1
        if consumed[e]:
            consumptions[good] += 1
            delivered[good] += np.float64(value[e])
        if bought[e]:
            purchases[good] += 1
    for good in range(value_delivered.shape[0]):
        value_delivered[good] += delivered[good]


@njit(cache=True)
def remember_consumed(user, rows, goods, consumed, uid, history, consumed_total):
    """Each consumed good's uid into its user's ring of recent consumption (history[row], slot
    consumed_total % memory), in feed order, counting consumed_total up; in place."""
    memory = history.shape[1]
    for e in range(user.shape[0]):
        if consumed[e]:
            row = rows[user[e]]
            history[row, consumed_total[row] % memory] = uid[goods[e]]
            consumed_total[row] += 1


@njit(cache=True)
def _put(flat, values, out):
    target = out.reshape(out.size)
    for e in range(flat.shape[0]):
        target[flat[e]] = values[e]


def scatter(flat: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`values` (one per flat index) in a new matrix of `shape`, 0/False elsewhere (zeroed pages
    from the allocator, then one pass over the entries: faster than numpy's fancy assignment)."""
    out = np.zeros(shape, dtype=values.dtype)
    _put(flat, values, out)
    return out
