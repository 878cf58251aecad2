"""Sweep throughput with 2 workers against 1, in the same run (the target: at least 1.8×).

    python benchmarks/bench_sweep.py [--runs 8] [--users 20000] [--goods 1000] [--ticks 10]
                                     [--worker-threads N]

Runs the same sweep (`--runs` replications of one scenario, local backend) into fresh
directories with 1 worker, then 2, then 1 and 2 again, and reports runs per second of each (the
better of the two passes per worker count, so one burst of load from elsewhere does not decide
it), their ratio, and /proc/loadavg before and after. Workers are pinned to one BLAS and one
numba thread each (simulator/runs/threads.py) unless `--worker-threads` says otherwise. Worker
start-up (spawning, imports, loading the numba cache) counts, as it does for a user.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from simulator.runs.sweep import run_sweep
from simulator.runs.threads import WORKER_THREADS_ENV
from simulator.scenario.schema import load_scenario


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--goods", type=int, default=1_000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2, help="sweeps per worker count, alternating")
    parser.add_argument("--worker-threads", type=int, default=None, help="BLAS and numba threads per worker (default 1)")
    args = parser.parse_args()
    if args.worker_threads is not None:
        os.environ[WORKER_THREADS_ENV] = str(args.worker_threads)
    scenario = load_scenario(
        "scenarios/baseline.yaml",
        {
            "ticks": args.ticks,
            "population.users.count": args.users,
            "population.goods.initial": args.goods,
            "population.creators.count": max(10, args.goods // 10),
            "sweep.grid": {},
            "sweep.replications": args.runs,
        },
    )
    seconds: dict[int, list[float]] = {1: [], 2: []}
    started = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for index in range(args.passes):
            for workers in (1, 2):
                start = time.perf_counter()
                result = run_sweep(scenario, out=Path(tmp) / f"w{workers}-{index}", workers=workers, force=True)
                seconds[workers].append(time.perf_counter() - start)
                if not result.ok:
                    raise SystemExit(f"the {workers}-worker sweep had failed runs: {result.status}")
    throughput = {workers: args.runs / min(times) for workers, times in seconds.items()}
    print(json.dumps({
        "runs": args.runs, "users": args.users, "goods": args.goods, "ticks": args.ticks,
        "worker_threads": os.environ.get(WORKER_THREADS_ENV, "1 (default)"),
        "load_average_start": started, "load_average_end": load_average(),
        "seconds": seconds, "runs_per_second": throughput,
        "two_over_one_worker_throughput": throughput[2] / throughput[1],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
