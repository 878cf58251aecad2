"""How a rule turns a block of scores into exposures: softmax sampling without replacement or the best k.

These are the default `select` of every allocation rule (`AllocationRule.select`): sampling for
stochastic rules, top-k for deterministic ones. A rule with its own selection (the Shapley
mediator) overrides `select`.
"""

from __future__ import annotations

import numpy as np

from simulator.market.kernels import draw_without_replacement
from simulator.market.state import FLOAT


def top_k_positions(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The counts[i] highest finite scores of each row, best first; ties to the lower index."""
    rows, columns = scores.shape
    width = min(int(counts.max(initial=0)), columns)
    if width == 0:
        return np.full((rows, 0), -1, dtype=np.int64)
    if width < columns:
        # Everything above the width-th score, then the lowest-index columns tied with it.
        kth = -np.partition(-scores, width - 1, axis=1)[:, width - 1 : width]
        above = scores > kth
        tied = scores == kth
        room = width - np.count_nonzero(above, axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
        candidates = np.nonzero(chosen)[1].reshape(rows, width)
    else:
        candidates = np.broadcast_to(np.arange(columns), (rows, columns))
    chosen_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -chosen_scores), axis=1)
    picked = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    picked_scores = np.take_along_axis(chosen_scores, order, axis=1)
    keep = (np.arange(width) < counts[:, None]) & np.isfinite(picked_scores)
    return np.where(keep, picked, -1)


def sample_positions(scores: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample counts[i] distinct columns per row without replacement, P ∝ softmax(scores).

    A compiled kernel (`simulator/kernels.py`) draws each row's exposures in feed order by
    successive sampling. Each row's random stream comes from its own seed drawn here, so results
    do not depend on how many draws the rows before it took. `scores` is left untouched.
    """
    rows, columns = scores.shape
    width = int(counts.max(initial=0))
    picked = np.full((rows, width), -1, dtype=np.int64)
    if width == 0 or columns == 0:
        return picked
    seeds = rng.integers(0, 2**63, size=rows, dtype=np.int64).astype(np.uint64)
    draw_without_replacement(np.ascontiguousarray(scores, dtype=FLOAT), counts.astype(np.int64), seeds, picked)
    return picked
