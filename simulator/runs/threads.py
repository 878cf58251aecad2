"""How many threads a simulation uses: BLAS (the score products) and numba (the kernels), together.

A tick alternates between BLAS matrix products and numba kernels that run rows in parallel
(simulator/market/kernels.py). OpenBLAS threads spin for a while after each product, so a BLAS
pool as wide as the machine steals cores from the numba kernels that follow it, and on a shared
machine from everyone else. Results never depend on these counts (every row has its own seed;
tests/test_kernels.py runs one scenario at 1 and 2 threads and compares bytes), only speed does:

- one run (`attnsim run`, `use_threads(None)`): numba gets every core the process may use and
  BLAS one thread, the setting docs/performance.md measured fastest on the 2-core machine;
- a sweep worker (`pin_worker_threads`, from the local pool's initialiser and on Dask workers
  before each batch): one BLAS and one numba thread, so N workers use N cores without
  oversubscribing them. `attnsim sweep --worker-threads N` (or the environment variable
  ATTNSIM_WORKER_THREADS, which Dask workers read) gives each worker N instead; 0 leaves the
  libraries' own defaults.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import numba
from threadpoolctl import threadpool_limits

WORKER_THREADS_ENV = "ATTNSIM_WORKER_THREADS"
WORKER_THREADS_DEFAULT = 1


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(blas: int, kernels: int) -> None:
    """BLAS to `blas` threads (process-wide) and numba to `kernels` threads (this thread; numba's
    count is per thread), each at least 1 and numba's at most its pool's size."""
    threadpool_limits(limits=max(1, blas), user_api="blas")
    numba.set_num_threads(max(1, min(kernels, numba.config.NUMBA_NUM_THREADS)))


def use_threads(threads: int | None) -> tuple[int, int]:
    """Thread counts for one run on `threads` cores (None: every available core); returns (BLAS, numba)."""
    cores = available_cores() if threads is None else max(1, threads)
    blas, kernels = 1, cores
    set_threads(blas, kernels)
    return blas, kernels


def worker_threads() -> int:
    """Threads per sweep worker: ATTNSIM_WORKER_THREADS if set (0: the libraries' defaults), else 1."""
    text = os.environ.get(WORKER_THREADS_ENV, "").strip()
    if not text:
        return WORKER_THREADS_DEFAULT
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{WORKER_THREADS_ENV}={text!r}: expected a whole number of threads (0: library defaults)") from None
    if value < 0:
        raise ValueError(f"{WORKER_THREADS_ENV}={text!r}: expected 0 or more threads")
    return value


def pin_worker_threads() -> None:
    """Pin this sweep worker (process for BLAS, calling thread for numba) to `worker_threads()`."""
    threads = worker_threads()
    if threads > 0:
        set_threads(threads, threads)


@contextmanager
def worker_thread_limits() -> Iterator[None]:
    """`pin_worker_threads` for the duration of a block, then the previous counts again (a sweep
    run in the client's own process must not leave the client pinned)."""
    threads = worker_threads()
    if threads == 0:
        yield
        return
    before = numba.get_num_threads()
    with threadpool_limits(limits=threads, user_api="blas"):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(before)
