"""The compiled kernels agree with the numpy they replaced (ties and masks included), give the
same bytes for any thread count, and sweep workers get the threads they are given."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import tiny
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from simulator.market.kernels import _draw_rows, _draw_rows_parallel, _spans
from simulator.model import AttentionMarket
from simulator.rules.allocation.selection import top_k_positions
from simulator.runs.threads import (
    WORKER_THREADS_ENV,
    set_threads,
    worker_thread_limits,
    worker_threads,
)


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


# --- thread counts never change results -------------------------------------------------------


def run_bytes(scenario, blas: int, kernels: int) -> bytes:
    """A run's metrics and final user state as bytes, with BLAS and numba at the given threads."""
    before = numba.get_num_threads()
    try:
        set_threads(blas, kernels)
        model = AttentionMarket(scenario)
        for _ in range(scenario.ticks):
            model.step()
    finally:
        numba.set_num_threads(before)
    users = model.market.users
    return model.metrics.to_csv().encode() + users.interest.tobytes() + users.query.tobytes()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba's pool has one thread on this machine (NUMBA_NUM_THREADS)")
@pytest.mark.parametrize("rule", ["attention_softmax", "top_k"])
def test_one_and_two_threads_give_the_same_bytes(rule):
    # 1 000 users: blocks and consumption rows are wide enough that the kernels run in parallel.
    scenario = tiny({"ticks": 4, "population.users.count": 1_000, "population.goods.initial": 150, "allocation.rule": rule})
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    assert _spans(600) > 0  # with two threads the parallel kernels are the ones that run
    numba.set_num_threads(before)
    assert run_bytes(scenario, 2, 2) == run_bytes(scenario, 1, 1) == run_bytes(scenario, 1, 2)


def test_sampler_rows_do_not_depend_on_how_rows_are_split():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((700, 300)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    counts = rng.integers(0, 40, size=700)
    seeds = rng.integers(0, 2**63, size=700).astype(np.uint64)
    serial = np.full((700, 40), -1, dtype=np.int64)
    _draw_rows(scores, counts, seeds, serial)
    for spans in (1, 3, 8):
        split = np.full((700, 40), -1, dtype=np.int64)
        _draw_rows_parallel(scores, counts, seeds, split, spans)
        np.testing.assert_array_equal(split, serial)


# --- sweep workers' threads --------------------------------------------------------------------


def test_worker_threads_default_to_one_and_read_the_environment(monkeypatch):
    monkeypatch.delenv(WORKER_THREADS_ENV, raising=False)
    assert worker_threads() == 1
    monkeypatch.setenv(WORKER_THREADS_ENV, "0")
    assert worker_threads() == 0
    monkeypatch.setenv(WORKER_THREADS_ENV, "two")
    with pytest.raises(ValueError, match="ATTNSIM_WORKER_THREADS='two'"):
        worker_threads()


def test_worker_thread_limits_pin_then_restore(monkeypatch):
    monkeypatch.setenv(WORKER_THREADS_ENV, "1")
    before_numba = numba.get_num_threads()
    before_blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    with worker_thread_limits():
        assert numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    assert numba.get_num_threads() == before_numba
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == before_blas
