"""Every allocation rule's tick against `attention_softmax`'s, in the same run.

    python benchmarks/bench_rules.py --size 10000x1000x32 --size 100000x1000x32 [--ticks 5]

For each size one model per rule (same scenario and seed otherwise) steps in lockstep: each
round runs one tick of every rule, in an order that rotates each round, so every rule sees the
same machine load. Prints JSON: per size and rule the median tick after `--warmup` ticks and its
ratio to `attention_softmax`'s (the target: the slowest rule within 1.2×), with the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from simulator.model import AttentionMarket
from simulator.rules.allocation.base import ALLOCATION_RULES
from simulator.scenario.schema import load_scenario

REFERENCE = "attention_softmax"


def load_average() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def one_size(size: str, ticks: int, warmup: int, rules: list[str]) -> dict:
    users, goods, dim = (int(part) for part in size.lower().split("x"))
    overrides = {
        "ticks": ticks + warmup,
        "embedding_dim": dim,
        "population.users.count": users,
        "population.goods.initial": goods,
        "population.creators.count": max(10, goods // 10),
        "metrics.homogenization_pairs": 256,
        "allocation.candidates.mode": "exact",
    }
    models = {rule: AttentionMarket(load_scenario("scenarios/baseline.yaml", {**overrides, "allocation.rule": rule})) for rule in rules}
    seconds: dict[str, list[float]] = {rule: [] for rule in models}
    started = load_average()
    order = list(models)
    for tick in range(ticks + warmup):
        shift = tick % len(order)
        for rule in order[shift:] + order[:shift]:
            start = time.perf_counter()
            models[rule].step()
            seconds[rule].append(time.perf_counter() - start)
    median = {rule: statistics.median(times[warmup:]) for rule, times in seconds.items()}
    ratios = {rule: value / median[REFERENCE] for rule, value in median.items()}
    slowest = max(ratios, key=ratios.get)
    return {
        "size": size,
        "load_average_start": started,
        "load_average_end": load_average(),
        "tick_seconds": median,
        "over_attention_softmax": ratios,
        "slowest": {"rule": slowest, "ratio": ratios[slowest]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", help="USERSxGOODSxDIM, repeatable (default 10000x1000x32)")
    parser.add_argument("--ticks", type=int, default=5, help="measured ticks per rule (median)")
    parser.add_argument("--warmup", type=int, default=1, help="ticks run before measuring")
    parser.add_argument("--rule", action="append", choices=ALLOCATION_RULES.names(), help=f"rules to measure, repeatable (default all; {REFERENCE} always)")
    args = parser.parse_args()
    rules = [REFERENCE, *[rule for rule in args.rule if rule != REFERENCE]] if args.rule else list(ALLOCATION_RULES.names())
    print(json.dumps([one_size(size, args.ticks, args.warmup, rules) for size in args.size or ["10000x1000x32"]], indent=2))


if __name__ == "__main__":
    main()
