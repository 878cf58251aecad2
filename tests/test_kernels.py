"""The compiled kernels agree with the numpy they replaced, ties and masks included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.rules.allocation.engine import top_k_positions


def numpy_top_k(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The numpy top-k the allocator used before the compiled one (partition, then lexsort)."""
    rows, columns = scores.shape
    width = min(int(counts.max(initial=0)), columns)
    if width == 0:
        return np.full((rows, 0), -1, dtype=np.int64)
    if width < columns:
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


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 12),
    columns=st.integers(1, 70),
    levels=st.integers(1, 6),
    masked=st.floats(0.0, 1.0),
    infinite=st.booleans(),
    max_count=st.integers(0, 80),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_compiled_top_k_equals_the_numpy_top_k(rows, columns, levels, masked, infinite, max_count, seed, dtype):
    rng = np.random.default_rng(seed)
    # Few distinct levels: many ties, across the cut and inside it; some −inf (masked) and +inf.
    scores = rng.integers(0, levels, size=(rows, columns)).astype(dtype) * dtype(0.5)
    scores[rng.random((rows, columns)) < masked] = -np.inf
    if infinite:
        scores[rng.random((rows, columns)) < 0.05] = np.inf
    counts = rng.integers(0, max_count + 1, size=rows)
    np.testing.assert_array_equal(top_k_positions(scores, counts), numpy_top_k(scores, counts))


def test_compiled_top_k_equals_the_numpy_top_k_on_allocator_sized_blocks():
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((500, 1000)).astype(np.float32)
    scores[:, ::7] = np.round(scores[:, ::7])  # ties among high scores too
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    counts = rng.integers(0, 33, size=500)
    np.testing.assert_array_equal(top_k_positions(scores, counts), numpy_top_k(scores, counts))
