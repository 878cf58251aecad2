"""Compiled pass of the candidate mode's stratified tail draws (`CandidateView.draw_tail` in
rules/allocation/candidates.py), one user at a time.

In numpy each user's excluded goods were sorted twice across the whole block, counted into
their strata with `np.subtract.at`, and stepped over in one round of fancy indexing per
excluded column. Here a user's distinct excluded tail indices are kept sorted in a small
buffer and its draws step over them in ascending order. The arithmetic is numpy's (the same float64 product of uniform and count, truncated), so the draws
are the same (`tests/test_candidates.py` compares them with the numpy version).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _stratum_of(index, strata, total):
    # bounds[j] = ⌊j·N/r⌋, so the stratum holding tail index i is ⌈(i + 1)·r/N⌉ − 1
    return min(max(((index + 1) * strata + total - 1) // total - 1, 0), strata - 1)


@njit(cache=True)
def _draw_tail_span(uniforms, bounds, excluded, tail_positions, positions, eligible, low, high):
    rows, strata = uniforms.shape
    total = bounds[strata]
    skips = np.empty(max(excluded.shape[1], 1), dtype=np.int64)
    for row in range(low, high):
        unique = 0  # the row's distinct excluded tail indices, ascending (insertion into a small buffer)
        for column in range(excluded.shape[1]):
            value = excluded[row, column]
            if value < 0:
                continue
            slot = unique
            while slot > 0 and skips[slot - 1] > value:
                slot -= 1
            if slot > 0 and skips[slot - 1] == value:
                continue  # a good remembered twice is one good
            for move in range(unique, slot, -1):
                skips[move] = skips[move - 1]
            skips[slot] = value
            unique += 1
        for stratum in range(strata):
            eligible[row, stratum] = bounds[stratum + 1] - bounds[stratum]
        for k in range(unique):
            eligible[row, _stratum_of(skips[k], strata, total)] -= 1
        for stratum in range(strata):
            count = eligible[row, stratum]
            index = np.int64(uniforms[row, stratum] * np.float64(count))
            positions[row, stratum] = min(index, max(count - 1, 0)) + bounds[stratum]
        for k in range(unique):  # the k-th eligible good: step over the excluded at or below it
            stratum = _stratum_of(skips[k], strata, total)
            if positions[row, stratum] >= skips[k]:
                positions[row, stratum] += 1
        for stratum in range(strata):
            if eligible[row, stratum] <= 0:
                positions[row, stratum] = -1
                continue
            positions[row, stratum] = tail_positions[positions[row, stratum]]


def draw_tail_positions(uniforms: np.ndarray, bounds: np.ndarray, excluded: np.ndarray, tail_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, eligible), both (rows, strata): one draw per stratum of a tail per user.

    `uniforms` (rows, strata) in [0, 1); `bounds` (strata + 1,) the strata's bounds over tail
    indices; `excluded` (rows, m) tail indices each user may not be drawn (-1 for none); the tail's
    lists start at tail index `start[k]` and hold `members[offset[k]:]`. A stratum's draw is
    uniform among its eligible goods (positions -1 where it has none); `eligible` counts them."""
    rows, strata = uniforms.shape
    positions = np.empty((rows, strata), dtype=np.int64)
    eligible = np.empty((rows, strata), dtype=np.int64)
    arguments = (
        np.ascontiguousarray(uniforms, dtype=np.float64), bounds.astype(np.int64), np.ascontiguousarray(excluded, dtype=np.int64),
        tail_positions.astype(np.int64), positions, eligible,
    )  # fmt: skip
    # Serial: one call is one group's users (a few hundred rows, ~1 ms), too little to share
    # between threads without waiting on a descheduled one when the machine is busy.
    _draw_tail_span(*arguments, 0, rows)
    return positions, eligible
