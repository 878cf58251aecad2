"""Compiled per-event bookkeeping of the ad settlement (numba), one pass each.

Settling a tick's ads takes its billable events (clicks, or impressions) out of the (users, slots)
records, orders them for billing (by advertiser, then a keyed uniform), caps each advertiser's
charges at its budget, and counts per advertiser the predicted and realised clicks and its spend.
In numpy each is a chain of masks, gathers, a lexsort, a cumulative sum and bincounts, every link
a temporary the size of the tick's ads; here each is one pass.

Every kernel repeats the arithmetic it replaces (float64 sums in event order as `np.bincount`
adds them, integer money exact), so a run's bytes do not change; `tests/test_ad_kernels.py`
compares each with its numpy version. The passes are serial: each costs well under a
millisecond, and the budget caps carry an advertiser's spend from one event to the next.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def billable_events(ads, prices, rates, clicked, per_impression):
    """(user, slot, advertiser, price) of the billable entries of the (users, slots) ad records in
    row-major order, as `np.nonzero` lists them: impressions (ads >= 0) or clicks. Per impression
    the price is the per-click price at the predicted click rate, rounded up to a minor unit
    (ceil(price × rate − 1e-9))."""
    rows, slots = ads.shape
    count = 0
    for i in range(rows):
        for j in range(slots):
            count += (ads[i, j] >= 0) if per_impression else clicked[i, j]
    user = np.empty(count, dtype=np.int64)
    slot = np.empty(count, dtype=np.int64)
    advertiser = np.empty(count, dtype=ads.dtype)
    price = np.empty(count, dtype=np.int64)
    e = 0
    for i in range(rows):
        for j in range(slots):
            if (ads[i, j] >= 0) if per_impression else clicked[i, j]:
                user[e] = i
                slot[e] = j
                advertiser[e] = ads[i, j]
                price[e] = np.int64(np.ceil(prices[i, j] * rates[i, j] - 1e-9)) if per_impression else prices[i, j]
                e += 1
    return user, slot, advertiser, price


@njit(cache=True)
def group_by_advertiser(order, advertiser, advertisers):
    """`order` (events) re-sorted stably by their advertiser in [0, advertisers), a counting sort:
    with `order` sorting the events by a key, this is `np.lexsort((key, advertiser))`."""
    starts = np.zeros(advertisers + 1, dtype=np.int64)
    for e in order:
        starts[advertiser[e] + 1] += 1
    for a in range(advertisers):
        starts[a + 1] += starts[a]
    grouped = np.empty_like(order)
    for e in order:
        grouped[starts[advertiser[e]]] = e
        starts[advertiser[e]] += 1
    return grouped


@njit(cache=True)
def cap_charges(advertiser, price, budgets, advertisers):
    """(charge per event, spend per advertiser, events charged less than their price) for events
    grouped by advertiser in billing order: each is charged its price, or what is left of its
    advertiser's budget once the events before it are billed, never below 0. The spend is the
    float64 sum in event order, as `np.bincount(advertiser, weights=charge)`, then int64."""
    charge = np.empty(price.shape[0], dtype=np.int64)
    spent = np.zeros(advertisers, dtype=np.float64)
    free = 0
    current, billed = -1, np.int64(0)
    for e in range(price.shape[0]):
        if advertiser[e] != current:
            current, billed = advertiser[e], np.int64(0)
        charge[e] = min(max(budgets[current] - billed, 0), price[e])
        billed += price[e]
        spent[current] += np.float64(charge[e])
        free += charge[e] < price[e]
    return charge, spent.astype(np.int64), free


@njit(cache=True)
def click_counts(ads, rates, clicked, bots, advertisers):
    """Per advertiser: predicted clicks of its impressions (float64 sums of their click rates in
    row-major order, as `np.bincount` adds them), realised clicks, and clicks by users not `bots`."""
    predicted = np.zeros(advertisers, dtype=np.float64)
    realised = np.zeros(advertisers, dtype=np.int64)
    by_humans = np.zeros(advertisers, dtype=np.int64)
    for i in range(ads.shape[0]):
        for j in range(ads.shape[1]):
            advertiser = ads[i, j]
            if advertiser < 0:
                continue
            predicted[advertiser] += rates[i, j]
            if clicked[i, j]:
                realised[advertiser] += 1
                if not bots[i]:
                    by_humans[advertiser] += 1
    return predicted, realised, by_humans
