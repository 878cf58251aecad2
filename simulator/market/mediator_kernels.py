"""Compiled passes of the Shapley mediator's selection (`rules/allocation/shapley.py`), one row at a time.

In numpy the mediator gathered the whole score block into creator order to reduce it, sorted the
users × creators relevance matrix, searched the flattened cumulative probabilities and picked
goods in rounds of fancy indexing, each step a temporary the size of the block; here each row's
creators' best scores are one pass over its goods, and its probabilities, draws and picks one
pass over its creators and draws. The arithmetic repeats numpy's operation for operation
(`mediator_probabilities`, the offset `searchsorted`, first-maximum picks), so the draws are the
same bytes (`tests/test_rules_allocation.py` compares them with the numpy mediator).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from simulator.market.kernels import _spans


@njit(cache=True)
def _segment_max_span(scores, padded, out, low, high):
    for row in range(low, high):
        for segment in range(padded.shape[0]):
            best = -np.inf
            for slot in range(padded.shape[1]):
                column = padded[segment, slot]
                if column < 0:
                    break
                value = scores[row, column]
                if value > best:
                    best = value
            out[row, segment] = best


@njit(cache=True, parallel=True)
def _segment_max_parallel(scores, padded, out, spans):
    rows = scores.shape[0]
    for span in prange(spans):
        _segment_max_span(scores, padded, out, span * rows // spans, (span + 1) * rows // spans)


def segment_max_rows(scores: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """(rows, segments) float32: the best score of each creator's goods (`padded` catalogue
    positions, -1 padded) in each row; -inf where it has none. Rows in parallel (`kernels._spans`)."""
    out = np.empty((scores.shape[0], padded.shape[0]), dtype=scores.dtype)
    spans = _spans(scores.shape[0])
    if spans:
        _segment_max_parallel(scores, padded, out, spans)
    else:
        _segment_max_span(scores, padded, out, 0, scores.shape[0])
    return out


@njit(cache=True)
def _row_cumulative(relevance, row, ascending, probability, cumulative):
    """The mediator's cumulative probabilities over creators (creator order) for one row, as
    `mediator_probabilities` then `np.cumsum` compute them."""
    players = relevance.shape[1]
    order = np.argsort(relevance[row], kind="mergesort")  # stable, as numpy's
    for k in range(players):
        ascending[k] = relevance[row, order[k]]
    running = 0.0
    previous = 0.0
    for k in range(players):
        step = ascending[k] - previous
        previous = ascending[k]
        running += step / np.float64(players - k)
        probability[order[k]] = running
    running = 0.0
    for c in range(players):
        running += probability[c]
        cumulative[c] = running


@njit(cache=True)
def _draws_span(scores, relevance, counts, first_target, targets, padded, feed, low, high):
    players = relevance.shape[1]
    ascending = np.empty(players, dtype=np.float64)
    probability = np.empty(players, dtype=np.float64)
    cumulative = np.empty(players, dtype=np.float64)
    for row in range(low, high):
        if counts[row] <= 0:
            continue
        _row_cumulative(relevance, row, ascending, probability, cumulative)
        offset = 2.0 * row  # numpy searched all rows at once, each row's values shifted by 2·row
        filled = 0
        for draw in range(first_target[row], first_target[row] + counts[row]):
            target = targets[draw]
            shifted = target + offset
            creator = 0
            while creator < players and cumulative[creator] + offset <= shifted:
                creator += 1
            if creator >= players or not target < cumulative[players - 1]:
                continue  # the outside option
            best, chosen = -np.inf, -1
            for slot in range(padded.shape[1]):
                column = padded[creator, slot]
                if column < 0:
                    break
                if scores[row, column] > best:
                    best, chosen = scores[row, column], column
            if chosen < 0:
                continue  # the creator has nothing left to show
            scores[row, chosen] = -np.inf
            feed[row, filled] = chosen
            filled += 1


@njit(cache=True, parallel=True)
def _draws_parallel(scores, relevance, counts, first_target, targets, padded, feed, spans):
    rows = scores.shape[0]
    for span in prange(spans):
        _draws_span(scores, relevance, counts, first_target, targets, padded, feed, span * rows // spans, (span + 1) * rows // spans)


def mediator_draws(
    scores: np.ndarray, relevance: np.ndarray, counts: np.ndarray, targets: np.ndarray, padded: np.ndarray, width: int
) -> np.ndarray:
    """(rows, width) catalogue positions: each row's counts[row] units, each given to the first
    creator whose cumulative probability exceeds its uniform target (beyond the last, the outside
    option) and showing that creator's best remaining good (first maximum in `padded` order; none
    left: no good); shown goods are set to -inf in `scores`. Feeds are packed in draw order, -1
    padded. `targets` holds the rows' uniforms one after another. Rows in parallel: each row reads
    only its own targets, so the bytes do not depend on the thread count."""
    feed = np.full((scores.shape[0], width), -1, dtype=np.int64)
    first_target = np.cumsum(counts) - counts
    spans = _spans(scores.shape[0])
    if spans:
        _draws_parallel(scores, relevance, counts, first_target, targets, padded, feed, spans)
    else:
        _draws_span(scores, relevance, counts, first_target, targets, padded, feed, 0, scores.shape[0])
    return feed


@njit(cache=True)
def _relevance_span(cosines, low, high):
    half, one, zero = np.float32(0.5), np.float32(1.0), np.float32(0.0)
    for row in range(low, high):
        for column in range(cosines.shape[1]):
            value = (cosines[row, column] + one) * half
            cosines[row, column] = min(max(value, zero), one)


@njit(cache=True, parallel=True)
def _relevance_parallel(cosines, spans):
    rows = cosines.shape[0]
    for span in prange(spans):
        _relevance_span(cosines, span * rows // spans, (span + 1) * rows // spans)


def relevance_of_cosines(cosines: np.ndarray) -> None:
    """cosines (float32, rows × goods) → clip((1 + cos) / 2, 0, 1) in place, in one pass: numpy's
    three (add, multiply, clip) in the same float32 operations, rows in parallel."""
    spans = _spans(cosines.shape[0])
    if spans:
        _relevance_parallel(cosines, spans)
    else:
        _relevance_span(cosines, 0, cosines.shape[0])
