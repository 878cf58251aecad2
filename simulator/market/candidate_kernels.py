"""Compiled pass of the candidate mode's stratified tail draws (`CandidateView.draw_tail` in
rules/allocation/candidates.py), one user at a time.

In numpy each user's excluded goods were sorted twice across the whole block, counted into
their strata with `np.subtract.at`, and stepped over in one round of fancy indexing per
excluded column, and the draws' log weights were a log over every draw. Here a user's distinct
excluded tail indices are found and kept sorted in a small buffer, its draws step over them in
ascending order, and a draw's weight is looked up in a table of numpy's logs. The arithmetic is numpy's (the same float64 product of uniform and count, truncated), so the draws
are the same (`tests/test_candidates.py` compares them with the numpy version).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _stratum_of(index, strata, total):
    # bounds[j] = ⌊j·N/r⌋, so the stratum holding tail index i is ⌈(i + 1)·r/N⌉ − 1
    return min(max(((index + 1) * strata + total - 1) // total - 1, 0), strata - 1)


@njit(cache=True, inline="always")
def _tail_index(position, list_of_position, place_of_position, indptr, rank_of_list, start):
    """The tail index of a catalogue position (its place among the tail's lists, nearest first); -1 for none or outside the tail."""
    if position < 0:
        return -1
    lists = list_of_position[position]
    rank = rank_of_list[lists]
    if rank < 0:
        return -1
    return start[rank] + place_of_position[position] - indptr[lists]


@njit(cache=True)
def _draw_tail_span(uniforms, bounds, excluded, lookup, tail_positions, log_counts, positions, weights):
    list_of_position, place_of_position, indptr, rank_of_list, start = lookup
    rows, strata = uniforms.shape
    total = bounds[strata]
    skips = np.empty(max(excluded.shape[1], 1), dtype=np.int64)
    eligible = np.empty(strata, dtype=np.int64)
    for row in range(rows):
        unique = 0  # the row's distinct excluded tail indices, ascending (insertion into a small buffer)
        for column in range(excluded.shape[1]):
            value = _tail_index(excluded[row, column], list_of_position, place_of_position, indptr, rank_of_list, start)
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
            eligible[stratum] = bounds[stratum + 1] - bounds[stratum]
        for k in range(unique):
            eligible[_stratum_of(skips[k], strata, total)] -= 1
        for stratum in range(strata):
            count = eligible[stratum]
            index = np.int64(uniforms[row, stratum] * np.float64(count))
            positions[row, stratum] = min(index, max(count - 1, 0)) + bounds[stratum]
        for k in range(unique):  # the k-th eligible good: step over the excluded at or below it
            stratum = _stratum_of(skips[k], strata, total)
            if positions[row, stratum] >= skips[k]:
                positions[row, stratum] += 1
        for stratum in range(strata):
            weights[row, stratum] = log_counts[eligible[stratum]]
            if eligible[stratum] <= 0:
                positions[row, stratum] = -1
            else:
                positions[row, stratum] = tail_positions[positions[row, stratum]]


def draw_tail_positions(
    uniforms: np.ndarray,
    bounds: np.ndarray,
    excluded: np.ndarray,
    lookup: tuple[np.ndarray, ...],
    tail_positions: np.ndarray,
    log_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, log weights), both (rows, strata): one draw per stratum of a tail per user.

    `uniforms` (rows, strata) in [0, 1); `bounds` (strata + 1,) the strata's bounds over tail
    indices; `excluded` (rows, m) catalogue positions each user may not be drawn (-1 for none),
    turned into tail indices through `lookup` (the view's list of and place of each position,
    its list pointers, and the tail's rank of each list and start of each ranked list);
    `tail_positions` the catalogue position of each tail index. A stratum's draw is uniform
    among its eligible goods (-1 where it has none) and weighs `log_counts[eligible]` (numpy's
    log of each count, 0 for none), the Horvitz-Thompson weight of its stratum."""
    rows, strata = uniforms.shape
    positions = np.empty((rows, strata), dtype=np.int64)
    weights = np.empty((rows, strata), dtype=log_counts.dtype)
    arguments = (
        np.ascontiguousarray(uniforms, dtype=np.float64), bounds.astype(np.int64), np.ascontiguousarray(excluded),
        tuple(part.astype(np.int64, copy=False) for part in lookup), tail_positions.astype(np.int64), log_counts, positions, weights,
    )  # fmt: skip
    # Serial: one call is one group's users (a few hundred rows, ~1 ms), too little to share
    # between threads without waiting on a descheduled one when the machine is busy.
    _draw_tail_span(*arguments)
    return positions, weights


@njit(cache=True)
def _block_columns(positions, run_bounds, shared, shared_offsets, ranks, rank_offsets, starts, start_offsets, strata_of_run, own, shared_width, view, out):
    list_of_position, place_of_position, indptr = view
    column_of = np.full(list_of_position.shape[0], -1, dtype=np.int64)  # shared column of each position, per run
    for run in range(run_bounds.shape[0] - 1):
        run_shared = shared[shared_offsets[run] : shared_offsets[run + 1]]
        for column in range(run_shared.shape[0]):
            column_of[run_shared[column]] = column
        rank_of_list = ranks[rank_offsets[run] : rank_offsets[run + 1]]
        start = starts[start_offsets[run] : start_offsets[run + 1]]
        strata = strata_of_run[run]
        total = start[start.shape[0] - 1]  # the tail's size
        for row in range(run_bounds[run], run_bounds[run + 1]):
            for k in range(positions.shape[1]):
                position = positions[row, k]
                if position < 0:
                    out[row, k] = -1
                    continue
                column = column_of[position]
                lists = list_of_position[position]
                rank = rank_of_list[lists]
                if strata > 0 and rank >= 0:
                    stratum = _stratum_of(start[rank] + place_of_position[position] - indptr[lists], strata, total)
                    if own[row, stratum] == position:
                        column = shared_width + stratum
                out[row, k] = column
        for column in range(run_shared.shape[0]):
            column_of[run_shared[column]] = -1


def block_columns(
    positions: np.ndarray,
    run_bounds: np.ndarray,
    shared: list[np.ndarray],
    ranks: list[np.ndarray],
    starts: list[np.ndarray],
    strata: list[int],
    own: np.ndarray,
    shared_width: int,
    view: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Where catalogue `positions` ((b, k), a row per user of a candidate block, -1 for none) sit
    among the block's candidate columns, -1 where they are not candidates
    (`CandidateView.columns_of`): a shared candidate's column, or a stratum's column where the
    user's draw from that stratum (`own`, b × R) is that good. Per run of users (rows
    run_bounds[i]..run_bounds[i + 1]): its `shared` positions, and its tail's rank of each list,
    start of each ranked list and number of strata; `view`: the view's list of each position,
    place of each position and list pointers."""
    out = np.empty(positions.shape, dtype=np.int64)
    _block_columns(
        np.ascontiguousarray(positions), run_bounds.astype(np.int64),
        *_packed(shared), *_packed(ranks), *_packed(starts), np.asarray(strata, dtype=np.int64),
        own, int(shared_width), tuple(part.astype(np.int64, copy=False) for part in view), out,
    )  # fmt: skip
    return out


def _packed(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of different lengths as one flat int64 array and the offsets where each starts."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(part) for part in parts])
    return np.concatenate([np.zeros(0, dtype=np.int64), *parts]).astype(np.int64), offsets
