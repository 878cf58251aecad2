"""Compiled kernels (numba) for the few loops numpy cannot express without big temporaries.

`draw_without_replacement` is the allocator's sampler: it turns each row of a block of scores
(log-weights) into exposures drawn by successive sampling without replacement, each draw in
proportion to the softmax weights of the goods not yet shown. Per row it makes two vectorized
passes over the scores (the row's maximum; then the weights exp(score − max) from a polynomial
exp the compiler vectorizes, summed into LANES interleaved lanes, column j in lane j % LANES)
and then draws: a scan over the lane sums, a scan along the chosen lane, and the drawn good's
weight taken out of its lane. No cumulative sum over the whole row (a chain of dependent
additions, the slowest loop on a CPU) and no weights matrix: a row's weights live in a small
scratch buffer.
When every remaining weight has underflowed (goods far below the row's best, reached only once
the better ones are all shown), the weights are recomputed relative to the best remaining good,
so the draws stay exact.

Each row draws from its own splitmix64 stream seeded by the caller, so the kernels can run
rows in parallel (numba `prange` over ranges of rows) and give the same bytes for any thread
count. Each public kernel runs serially when numba has one thread (`numba.set_num_threads`, as
`simulator/runs/threads.py` pins sweep workers): a serial kernel never enters numba's threading
layer, so several simulations in threads of one process (a Dask worker) cannot collide in it.
How many threads, and how many BLAS threads the matrix products get, is chosen together
(`simulator/runs/threads.py`): BLAS threads that spin after a product slow the next kernel.

`gathered_dots` serves the consumption stage and the candidate mode: dot products of each
user's vector with the keys of the goods it was shown (or its candidates), without
materialising a users × exposures × d gather (`fastmath` lets the d-long sums vectorize).
`mask_remembered` masks the goods each user consumed recently in one pass over its history.
`drift_toward_consumed` moves users' tastes and profiles toward what they consumed, one user at
a time, without the users × d temporaries of doing it in numpy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange

# Reassociation lets the compiler vectorize sums; no `nnan`/`ninf`: masked scores are −inf.
VECTOR_MATH = {"reassoc", "nsz", "contract", "arcp"}
MAX_LANES = 16  # independent running maxima, so the row maximum vectorizes
LANES = 32  # a row's weights are summed in interleaved lanes: column j is in lane j % LANES
SPAN_ROWS = 64  # fewest rows per range a parallel kernel hands a thread

# float32 exp(x) for x <= 0: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two for accuracy),
# exp(r) by its degree-6 Taylor polynomial (relative error under 1e-6), 2**n from exponent bits.
LOG2E = np.float32(1.4426950408889634)
LN2_HIGH = np.float32(0.693359375)
LN2_LOW = np.float32(-2.12194440e-4)
EXP_FLOOR = np.float32(-87.0)  # exp(x) below this (1.6e-38) counts as 0: float32's normal range
TAYLOR = tuple(np.float32(1.0 / math.factorial(k)) for k in range(7))


@njit(cache=True)
def _next_uniform(state: np.uint64) -> tuple[np.uint64, float]:
    """splitmix64: advance the row's counter and return a uniform in [0, 1)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return state, (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, fastmath={"nnan", "reassoc", "nsz"}, inline="always")
def _row_max(scores, row, lanes):
    """max_j scores[row, j] (−inf for an all-masked row), over len(lanes) running maxima."""
    width = lanes.shape[0]
    lanes[:] = -np.inf
    columns = scores.shape[1]
    whole = columns - columns % width
    for start in range(0, whole, width):
        for lane in range(width):
            value = scores[row, start + lane]
            lanes[lane] = value if value > lanes[lane] else lanes[lane]
    top = -np.inf
    for lane in range(width):
        top = max(top, lanes[lane])
    for j in range(whole, columns):
        top = max(top, scores[row, j])
    return top


@njit(cache=True, inline="always")
def _best_remaining(scores, row, taken):
    """The row's best score among goods not yet taken (−inf if none is eligible)."""
    top = -np.inf
    for j in range(scores.shape[1]):
        if not taken[j] and scores[row, j] > top:
            top = scores[row, j]
    return top


@njit(cache=True, fastmath=VECTOR_MATH)
def _relative_weights(scores, row, top, weights, exponent_bits, lane_sums):
    """weights[j] = exp(min(scores[row, j] − top, 0)) in float32, 0 for −inf and below
    EXP_FLOOR; lane_sums[c] = Σ weights[j] over j ≡ c (mod LANES). Returns how many are positive."""
    top = np.float32(top)
    columns = weights.shape[0]
    for j in range(columns):
        x = min(max(scores[row, j] - top, EXP_FLOOR), np.float32(0.0))
        n = np.floor(x * LOG2E + np.float32(0.5))
        r = x - n * LN2_HIGH - n * LN2_LOW
        c0, c1, c2, c3, c4, c5, c6 = TAYLOR
        weights[j] = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6)))))
        exponent_bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    scale = exponent_bits.view(np.float32)
    positive = 0
    sums = np.zeros(LANES, dtype=np.float64)  # a local array: the compiler knows it aliases nothing
    whole = columns - columns % LANES
    for start in range(0, whole, LANES):  # full rounds of lanes: a constant-width loop vectorizes
        for lane in range(LANES):
            keep = scores[row, start + lane] - top > EXP_FLOOR
            weight = weights[start + lane] * scale[start + lane] if keep else np.float32(0.0)
            weights[start + lane] = weight
            sums[lane] += np.float64(weight)
            positive += keep
    for j in range(whole, columns):  # the last, partial round
        keep = scores[row, j] - top > EXP_FLOOR
        weight = weights[j] * scale[j] if keep else np.float32(0.0)
        weights[j] = weight
        sums[j - whole] += np.float64(weight)
        positive += keep
    lane_sums[:] = sums
    return positive


@njit(cache=True)
def _resum_lanes(weights, lane_sums):
    """lane_sums from scratch (after rounding drift); returns their total."""
    lane_sums[:] = 0.0
    for j in range(weights.shape[0]):
        lane_sums[j % LANES] += weights[j]
    return lane_sums.sum()


@njit(cache=True)
def _draw_row(scores, row, wanted, state, out, weights, exponent_bits, lane_sums, taken, running_max):
    """Row `row`'s draws into out[row, :wanted], from the splitmix64 stream seeded `state`; the
    scratch buffers are the caller's (one set per thread) and are left ready for the next row."""
    columns = scores.shape[1]
    top = _row_max(scores, row, running_max)
    if top == -np.inf:
        return  # nothing eligible
    positive = _relative_weights(scores, row, top, weights, exponent_bits, lane_sums)
    total = lane_sums.sum()
    got = 0
    while got < wanted:
        if positive == 0:
            # Every remaining weight underflowed: recompute relative to the best remaining good.
            top = _best_remaining(scores, row, taken)
            if top == -np.inf:
                break  # no eligible good left
            positive = _relative_weights(scores, row, top, weights, exponent_bits, lane_sums)
            for i in range(got):
                positive -= weights[out[row, i]] > 0.0
                weights[out[row, i]] = 0.0
            total = _resum_lanes(weights, lane_sums)
        state, uniform = _next_uniform(state)
        target = uniform * total
        lane = 0
        while lane < LANES - 1 and lane_sums[lane] <= target:
            target -= lane_sums[lane]
            lane += 1
        pick = -1
        for j in range(lane, columns, LANES):
            if weights[j] > 0.0:
                pick = j
                target -= weights[j]
                if target < 0.0:
                    break
        if pick < 0:
            # Subtractions left a lane's sum above its true weight (rounding): re-sum, draw again.
            total = _resum_lanes(weights, lane_sums)
            positive = np.count_nonzero(weights)
            continue
        out[row, got] = pick
        got += 1
        taken[pick] = True
        positive -= 1
        lane_sums[lane] = max(lane_sums[lane] - weights[pick], 0.0)
        total -= weights[pick]
        weights[pick] = 0.0
    for i in range(got):
        taken[out[row, i]] = False


@njit(cache=True)
def _draw_span(scores, counts, seeds, out, low, high):
    """Rows low..high−1 with one set of scratch buffers."""
    columns = scores.shape[1]
    weights = np.empty(columns, dtype=np.float32)
    exponent_bits = np.empty(columns, dtype=np.int32)
    lane_sums = np.empty(LANES, dtype=np.float64)
    taken = np.zeros(columns, dtype=np.bool_)
    running_max = np.empty(MAX_LANES, dtype=scores.dtype)
    for row in range(low, high):
        if counts[row] > 0:
            _draw_row(scores, row, counts[row], seeds[row], out, weights, exponent_bits, lane_sums, taken, running_max)


@njit(cache=True)
def _draw_rows(scores, counts, seeds, out):
    _draw_span(scores, counts, seeds, out, 0, scores.shape[0])


@njit(cache=True, parallel=True)
def _draw_rows_parallel(scores, counts, seeds, out, spans):
    rows = scores.shape[0]
    for span in prange(spans):
        _draw_span(scores, counts, seeds, out, span * rows // spans, (span + 1) * rows // spans)


def _spans(rows: int) -> int:
    """How many row ranges a parallel kernel splits `rows` into: 0 means run serially.

    Serially with one numba thread (sweep workers, `pin_threads`): no threading layer is entered,
    so simulations in several threads of one process (a Dask worker) never share it. Otherwise a
    few ranges per thread, which balances rows of uneven cost. Which range a row falls in never
    changes its result: each row has its own seed and scratch state is reset between rows."""
    threads = get_num_threads()
    if threads <= 1 or rows < 2 * SPAN_ROWS:
        return 0
    return min(4 * threads, rows // SPAN_ROWS)


class NonFiniteScores(ValueError):
    """Scores with NaN or +inf (an overflowing temperature or value): no softmax of them exists,
    and the sampler would never finish a row. `rows` are the offending rows of the block."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        super().__init__(f"{len(rows)} row(s) of allocation scores hold NaN or +inf")


def draw_without_replacement(scores: np.ndarray, counts: np.ndarray, seeds: np.ndarray, out: np.ndarray) -> None:
    """Fill out[i, :counts[i]] with distinct columns drawn ∝ softmax(scores[i]) by successive
    sampling (fewer if the row has fewer eligible columns: finite scores); `scores` float32.
    Raises NonFiniteScores for rows holding NaN or +inf (-inf marks an ineligible column)."""
    if scores.size:
        with np.errstate(invalid="ignore"):
            top = scores.max(axis=1)  # NaN propagates, +inf is the maximum: one pass finds both
        bad = np.flatnonzero(np.isnan(top) | (top == np.inf))
        if len(bad):
            raise NonFiniteScores(bad)
    spans = _spans(scores.shape[0])
    if spans:
        _draw_rows_parallel(scores, counts, seeds, out, spans)
    else:
        _draw_rows(scores, counts, seeds, out)


@njit(cache=True, inline="always")
def keep_best(best_scores, best_columns, kept, wanted, value, column):
    """Offer (value, column) to a row's best-so-far buffer, kept sorted by value descending (an
    equal value loses to the earlier column), `wanted` long; returns how many are kept now."""
    if kept == wanted:
        if not value > best_scores[wanted - 1]:
            return kept
        slot = wanted - 1
    else:
        slot = kept
        kept += 1
    while slot > 0 and best_scores[slot - 1] < value:
        best_scores[slot] = best_scores[slot - 1]
        best_columns[slot] = best_columns[slot - 1]
        slot -= 1
    best_scores[slot] = value
    best_columns[slot] = column
    return kept


@njit(cache=True)
def _top_k_row(scores, row, wanted, best_scores, best_columns, out):
    """out[row, :wanted] = the row's `wanted` best columns by (score descending, column
    ascending), −1 where that score is not finite; −inf and NaN are never candidates.

    One pass keeps the best so far sorted in a `wanted`-long buffer: a column enters only when it
    beats the worst kept (an equal score loses, its column being higher), by insertion from the end."""
    kept = 0
    for column in range(scores.shape[1]):
        score = scores[row, column]
        if not score > -np.inf:
            continue
        kept = keep_best(best_scores, best_columns, kept, wanted, score, column)
    for slot in range(kept):
        out[row, slot] = best_columns[slot] if np.isfinite(best_scores[slot]) else -1


@njit(cache=True)
def _top_k_span(scores, counts, out, low, high):
    width = out.shape[1]
    best_scores = np.empty(width, dtype=scores.dtype)
    best_columns = np.empty(width, dtype=np.int64)
    for row in range(low, high):
        wanted = min(counts[row], width)
        if wanted > 0:
            _top_k_row(scores, row, wanted, best_scores, best_columns, out)


@njit(cache=True)
def _top_k_rows(scores, counts, out):
    _top_k_span(scores, counts, out, 0, scores.shape[0])


@njit(cache=True, parallel=True)
def _top_k_rows_parallel(scores, counts, out, spans):
    rows = scores.shape[0]
    for span in prange(spans):
        _top_k_span(scores, counts, out, span * rows // spans, (span + 1) * rows // spans)


def top_k_rows(scores: np.ndarray, counts: np.ndarray, out: np.ndarray) -> None:
    """Fill out[i, :min(counts[i], out.shape[1])] with row i's best columns, best first, ties to
    the lower column, −1 for a non-finite score (out starts at −1); one pass per row, no sort."""
    spans = _spans(scores.shape[0])
    if spans:
        _top_k_rows_parallel(scores, counts, out, spans)
    else:
        _top_k_rows(scores, counts, out)


@njit(cache=True, fastmath=True)
def _gathered_dots_row(vectors, keys, index, i, out):
    for k in range(index.shape[1]):
        good = index[i, k]
        if good >= 0:
            total = np.float32(0.0)
            for d in range(vectors.shape[1]):
                total += vectors[i, d] * keys[good, d]
            out[i, k] = total


@njit(cache=True)
def _gathered_dots(vectors, keys, index, out):
    for i in range(index.shape[0]):
        _gathered_dots_row(vectors, keys, index, i, out)


@njit(cache=True, parallel=True)
def _gathered_dots_parallel(vectors, keys, index, out):
    for i in prange(index.shape[0]):
        _gathered_dots_row(vectors, keys, index, i, out)


def gathered_dots(vectors: np.ndarray, keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """out[i, k] = vectors[i] · keys[index[i, k]], 0 where index[i, k] < 0 (float32)."""
    out = np.zeros(index.shape, dtype=np.float32)
    (_gathered_dots_parallel if _spans(index.shape[0]) else _gathered_dots)(vectors, keys, index, out)
    return out


@njit(cache=True, inline="always")
def _remembered_position(history, user, slot, row_of, position_of_row):
    """This tick's catalogue position of the good in history[user, slot]; -1 for an empty slot, a
    good that is gone (row_of[uid] < 0) or one that is not live (position_of_row[row] < 0)."""
    uid = history[user, slot]
    if uid < 0:
        return -1
    row = row_of[uid]
    if row < 0:
        return -1
    return position_of_row[row]


@njit(cache=True)
def _mask_row(scores, users, history, row_of, position_of_row, i):
    for slot in range(history.shape[1]):
        position = _remembered_position(history, users[i], slot, row_of, position_of_row)
        if position >= 0:
            scores[i, position] = -np.inf


@njit(cache=True)
def _mask_remembered(scores, users, history, row_of, position_of_row):
    for i in range(users.shape[0]):
        _mask_row(scores, users, history, row_of, position_of_row, i)


@njit(cache=True, parallel=True)
def _mask_remembered_parallel(scores, users, history, row_of, position_of_row):
    for i in prange(users.shape[0]):
        _mask_row(scores, users, history, row_of, position_of_row, i)


def mask_remembered(scores: np.ndarray, users: np.ndarray, history: np.ndarray, row_of: np.ndarray, position_of_row: np.ndarray) -> None:
    """scores[i, p] = −inf for every good users[i] remembers (uids in history[users[i]]) that is
    still in the catalogue (row_of[uid] >= 0) and live this tick (position_of_row[row] = p >= 0)."""
    kernel = _mask_remembered_parallel if _spans(users.shape[0]) else _mask_remembered
    kernel(scores, users, history, row_of, position_of_row)


@njit(cache=True)
def _remembered_positions(users, history, row_of, position_of_row, out):
    for i in range(users.shape[0]):
        for slot in range(history.shape[1]):
            out[i, slot] = _remembered_position(history, users[i], slot, row_of, position_of_row)


def remembered_positions(users: np.ndarray, history: np.ndarray, row_of: np.ndarray, position_of_row: np.ndarray) -> np.ndarray:
    """(len(users), memory) int32: the catalogue positions of the goods each user remembers, -1
    where a slot is empty or its good is gone or not live; the positions `mask_remembered` masks,
    in one pass, with no (users × memory) int64 temporaries (the candidate mode's largest at 1M users)."""
    out = np.empty((len(users), history.shape[1]), dtype=np.int32)
    _remembered_positions(users.astype(np.int64), history, row_of, position_of_row, out)
    return out


@njit(cache=True, fastmath=VECTOR_MATH, inline="always")
def _blend_unit(vectors, row, toward, weight):
    """vectors[row] = unit((1 − weight)·vectors[row] + weight·toward), unchanged if that is 0."""
    norm = 0.0
    for d in range(toward.shape[0]):
        mixed = (1.0 - weight) * vectors[row, d] + weight * toward[d]
        norm += mixed * mixed
    if norm > 0.0:
        scale = 1.0 / np.sqrt(norm)
        for d in range(toward.shape[0]):
            vectors[row, d] = ((1.0 - weight) * vectors[row, d] + weight * toward[d]) * scale


@njit(cache=True, fastmath=VECTOR_MATH)
def _drift_span(interest, query, rows, starts, goods, keys, drift, rate, low, high):
    mean = np.empty(keys.shape[1], dtype=np.float64)
    for u in range(low, high):
        mean[:] = 0.0
        for k in range(starts[u], starts[u + 1]):
            for d in range(keys.shape[1]):
                mean[d] += keys[goods[k], d]
        norm = np.sqrt(np.sum(mean * mean))
        if norm > 0.0:
            mean /= norm
        if drift > 0.0:
            _blend_unit(interest, rows[u], mean, drift)
        if rate > 0.0:
            _blend_unit(query, rows[u], mean, rate)


@njit(cache=True)
def _drift(interest, query, rows, starts, goods, keys, drift, rate):
    _drift_span(interest, query, rows, starts, goods, keys, drift, rate, 0, rows.shape[0])


@njit(cache=True, parallel=True)
def _drift_parallel(interest, query, rows, starts, goods, keys, drift, rate, spans):
    users = rows.shape[0]
    for span in prange(spans):
        _drift_span(interest, query, rows, starts, goods, keys, drift, rate, span * users // spans, (span + 1) * users // spans)


def drift_toward_consumed(interest, query, rows, starts, goods, keys, drift, rate) -> None:
    """For user rows[u] (distinct), who consumed goods[starts[u]:starts[u + 1]]: the unit mean of
    their keys pulls the user's interest by `drift` and the platform's profile (query) by `rate`,
    each renormalised to unit length, in place."""
    spans = _spans(rows.shape[0])
    if spans:
        _drift_parallel(interest, query, rows, starts, goods, keys, drift, rate, spans)
    else:
        _drift(interest, query, rows, starts, goods, keys, drift, rate)
