"""Compiled kernels (numba) for the few loops numpy cannot express without big temporaries.

`draw_without_replacement` is the allocator's sampler. For each row of a block, the kernel accumulates the softmax weights into a cumulative sum and
draws columns by binary search; a column already taken is drawn again, which is exactly
successive sampling without replacement (each new exposure is drawn in proportion to the
weights of the goods not yet shown). After many repeats, or when every remaining weight has
underflowed, it rebuilds the cumulative sum over the goods not yet taken, rescaled to the best
of them — exact either way. One pass over the row plus one binary search per draw.

Each row draws from its own splitmix64 stream seeded by the caller. The kernels are
single-threaded on purpose: parallel numba loops fight the BLAS threads of the next block's
matrix product for a small machine's cores (measured 5x slower allocation on 2 cores with
numba's OpenMP layer), and its workqueue layer aborts when two simulations run in threads of
one process (a Dask worker). Sweeps get their parallelism from processes.

`gathered_dots` and `gathered_sums` serve the consumption stage and the candidate mode: dot
products of each user's vector with the keys of the goods it was shown (or its candidates), and
sums of those keys, without materialising a users × exposures × d gather (`fastmath` lets the
d-long sums vectorize).
"""

from __future__ import annotations

import numpy as np
from numba import njit

@njit(cache=True)
def _next_uniform(state: np.uint64) -> tuple[np.uint64, float]:
    """splitmix64: advance the row's counter and return a uniform in [0, 1)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return state, (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _cumulate(scores, weights, taken, row, cdf, rescale):
    """Cumulative weights of the row's goods not yet taken; `rescale` recomputes them from the
    scores relative to the best remaining one (for rows whose weights underflowed)."""
    columns = cdf.shape[0]
    total = 0.0
    if rescale:
        top = -np.inf
        for j in range(columns):
            if not taken[j] and scores[row, j] > top:
                top = scores[row, j]
        if top == -np.inf:
            return 0.0
        for j in range(columns):
            if not taken[j] and scores[row, j] > -np.inf:
                total += np.exp(np.float64(scores[row, j]) - top)
            cdf[j] = total
    else:
        for j in range(columns):
            if not taken[j]:
                total += weights[row, j]
            cdf[j] = total
    return total


@njit(cache=True)
def _draw_rows(weights, scores, counts, seeds, out):
    rows, columns = weights.shape
    cdf = np.empty(columns, dtype=np.float64)
    taken = np.zeros(columns, dtype=np.bool_)
    for row in range(rows):
        wanted = counts[row]
        if wanted <= 0:
            continue
        state = seeds[row]
        got = 0
        misses = 0
        total = _cumulate(scores, weights, taken, row, cdf, False)
        while got < wanted:
            if total <= 0.0 or misses > 4 * wanted + 16:
                total = _cumulate(scores, weights, taken, row, cdf, True)
                misses = 0
                if total <= 0.0:
                    break  # no eligible good left
            state, uniform = _next_uniform(state)
            target = uniform * total
            low = 0
            high = columns - 1
            while low < high:
                middle = (low + high) >> 1
                if cdf[middle] > target:
                    high = middle
                else:
                    low = middle + 1
            if taken[low]:
                misses += 1
                continue
            taken[low] = True
            out[row, got] = low
            got += 1
        for i in range(got):
            taken[out[row, i]] = False


def draw_without_replacement(
    weights: np.ndarray, scores: np.ndarray, counts: np.ndarray, seeds: np.ndarray, out: np.ndarray
) -> None:
    """Fill out[i, :counts[i]] with distinct columns drawn ∝ weights[i] (fewer if the row has
    fewer eligible columns: finite scores); `scores` are the log-weights, -inf for ineligible."""
    _draw_rows(weights, scores, counts, seeds, out)


@njit(cache=True, fastmath=True)
def gathered_dots(vectors, keys, index):
    """out[i, k] = vectors[i] · keys[index[i, k]], 0 where index[i, k] < 0."""
    rows, width = index.shape
    dim = vectors.shape[1]
    out = np.zeros((rows, width), dtype=np.float32)
    for i in range(rows):
        for k in range(width):
            good = index[i, k]
            if good >= 0:
                total = np.float32(0.0)
                for d in range(dim):
                    total += vectors[i, d] * keys[good, d]
                out[i, k] = total
    return out


@njit(cache=True, fastmath=True)
def gathered_sums(keys, index):
    """out[i] = Σ_k keys[index[i, k]] over index[i, k] >= 0."""
    rows, width = index.shape
    dim = keys.shape[1]
    out = np.zeros((rows, dim), dtype=np.float32)
    for i in range(rows):
        for k in range(width):
            good = index[i, k]
            if good >= 0:
                for d in range(dim):
                    out[i, d] += keys[good, d]
    return out
