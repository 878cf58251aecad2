"""Seconds per tick and peak memory of the simulator, against the baselines people would write.

For each size (users × goods × d) this measures, in the same run and on the same machine:

- `tick`: the simulator's full tick (all four stages), median over `--ticks` ticks after
  `--warmup`; `allocation`: the allocation stage within those ticks (content and ad auctions);
  `content_allocation`: the content allocation alone, the work the baselines do;
- baseline (a) `mesa_agents`: the same allocation written the way a Mesa user would write it
  first — one `mesa.Agent` per user whose `step()` does its own numpy softmax over the catalogue
  and draws its exposures without replacement;
- baseline (b) `dense_floor`: one float32 matrix product of all users' queries against all
  goods' keys plus one exp over the result: the least any exact dense method must do.

Large sizes are measured on a slice and scaled linearly where running whole would not fit
(the JSON says `extrapolated_from`). Each size runs in its own subprocess so `peak_rss_gb` is
that configuration's own peak. Output: one JSON document on stdout.

    python benchmarks/bench_tick.py --size 100000x1000x32
    python benchmarks/bench_tick.py --preset targets      # the README's performance table
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

PRESETS = {
    "smoke": ["2000x200x16"],
    "targets": ["100000x1000x32", "100000x10000x32", "1000000x100000x32"],
}
MESA_AGENT_CAP = 20_000  # users simulated as Mesa agents before scaling linearly
DENSE_ELEMENTS_CAP = 200_000_000  # score-matrix elements computed before scaling linearly


def parse_size(text: str) -> tuple[int, int, int]:
    users, goods, dim = (int(part) for part in text.lower().split("x"))
    return users, goods, dim


def scenario_for(users: int, goods: int, dim: int, ticks: int, extra: dict[str, Any]):
    import simulator

    overrides = {
        "ticks": ticks,
        "embedding_dim": dim,
        "population.users.count": users,
        "population.goods.initial": goods,
        "population.creators.count": max(10, goods // 10),
        "population.advertisers.count": 20,
        "metrics.homogenization_pairs": 256,
        **extra,
    }
    return simulator.load_scenario("scenarios/baseline.yaml", overrides)


def timed(module: Any, name: str, seconds: list[float]) -> None:
    """Replace module.name by a wrapper that appends each call's duration to `seconds`."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(module, name, wrapper)


def measure_simulator(users: int, goods: int, dim: int, ticks: int, warmup: int, extra: dict[str, Any]) -> dict[str, Any]:
    import simulator.model as model_module
    import simulator.stages.allocation as allocation_stage

    scenario = scenario_for(users, goods, dim, ticks + warmup, extra)
    allocation_seconds: list[float] = []
    content_seconds: list[float] = []
    timed(model_module, "allocate", allocation_seconds)  # the whole stage: content and ad auctions
    timed(allocation_stage, "allocate_exposures", content_seconds)  # content only, as the baselines
    started = time.perf_counter()
    model = model_module.AttentionMarket(scenario)
    setup = time.perf_counter() - started
    tick_seconds = []
    for _ in range(warmup + ticks):
        start = time.perf_counter()
        model.step()
        tick_seconds.append(time.perf_counter() - start)
    active = model.latest_metrics["active_users"]
    return {
        "setup_seconds": setup,
        "tick_seconds": statistics.median(tick_seconds[warmup:]),
        "allocation_seconds": statistics.median(allocation_seconds[warmup:]),
        "content_allocation_seconds": statistics.median(content_seconds[warmup:]),
        "active_users_last_tick": active,
        "candidate_mode": getattr(model, "allocation_mode", "exact"),
    }


def measure_dense_floor(users: int, goods: int, dim: int, repeats: int = 3) -> dict[str, Any]:
    """One float32 QKᵀ plus one exp over it, for all users (scaled up from a slice if huge)."""
    rng = np.random.default_rng(0)
    rows = min(users, max(1, DENSE_ELEMENTS_CAP // goods))
    queries = rng.standard_normal((rows, dim), dtype=np.float32)
    keys = rng.standard_normal((goods, dim), dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = queries @ keys.T
        np.exp(scores, out=scores)
        times.append(time.perf_counter() - start)
        del scores
    seconds = min(times) * users / rows
    return {"seconds": seconds, "extrapolated_from": rows if rows < users else None}


def measure_mesa_agents(users: int, goods: int, dim: int, budget: int = 8) -> dict[str, Any]:
    """Baseline (a): one agent object per user, each doing its own numpy softmax in step()."""
    import mesa

    class UserAgent(mesa.Agent):
        def __init__(self, model: mesa.Model, query: np.ndarray):
            super().__init__(model)
            self.query = query
            self.exposures: np.ndarray | None = None

        def step(self) -> None:
            keys = self.model.keys
            scores = keys @ self.query / np.sqrt(keys.shape[1])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            self.exposures = self.model.rng.choice(len(weights), size=budget, replace=False, p=weights)

    class Market(mesa.Model):
        def __init__(self, agents: int):
            super().__init__(rng=0)
            self.keys = self.rng.standard_normal((goods, dim)).astype(np.float32)
            for query in self.rng.standard_normal((agents, dim)).astype(np.float32):
                UserAgent(self, query)

        def step(self) -> None:
            self.agents.shuffle_do("step")

    agents = min(users, MESA_AGENT_CAP)
    market = Market(agents)
    market.step()  # warm-up
    start = time.perf_counter()
    market.step()
    seconds = (time.perf_counter() - start) * users / agents
    return {"seconds": seconds, "extrapolated_from": agents if agents < users else None}


def one_size(size: str, ticks: int, warmup: int, extra: dict[str, Any], baselines: bool) -> dict[str, Any]:
    from simulator.runs.memory import peak_rss_bytes

    users, goods, dim = parse_size(size)
    result: dict[str, Any] = {"size": size, "users": users, "goods": goods, "dim": dim}
    if baselines:
        result["dense_floor"] = measure_dense_floor(users, goods, dim)
        result["mesa_agents"] = measure_mesa_agents(users, goods, dim)
    result["simulator"] = measure_simulator(users, goods, dim, ticks, warmup, extra)
    result["peak_rss_gb"] = peak_rss_bytes() / 1024**3
    if baselines:
        floor = result["dense_floor"]["seconds"]
        sim = result["simulator"]
        mesa = result["mesa_agents"]["seconds"]
        result["ratios"] = {
            "content_allocation_over_dense_floor": sim["content_allocation_seconds"] / floor,
            "allocation_over_dense_floor": sim["allocation_seconds"] / floor,
            "tick_over_dense_floor": sim["tick_seconds"] / floor,
            "mesa_agents_over_content_allocation": mesa / sim["content_allocation_seconds"],
            "mesa_agents_over_allocation": mesa / sim["allocation_seconds"],
            "mesa_agents_over_tick": mesa / sim["tick_seconds"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", help="USERSxGOODSxDIM, repeatable")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named list of sizes")
    parser.add_argument("--ticks", type=int, default=3, help="measured ticks per size (median)")
    parser.add_argument("--warmup", type=int, default=1, help="ticks run before measuring")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override")
    parser.add_argument("--no-baselines", action="store_true", help="measure the simulator only")
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)  # one size, this process
    args = parser.parse_args()

    from simulator.scenario.schema import parse_override_value

    extra = {key: parse_override_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    sizes = (args.size or []) + PRESETS.get(args.preset or "", [])
    if not sizes:
        parser.error("give --size or --preset")
    if args.inline:
        print(json.dumps(one_size(sizes[0], args.ticks, args.warmup, extra, not args.no_baselines)))
        return
    results = []
    for size in sizes:
        command = [sys.executable, __file__, "--inline", "--size", size, "--ticks", str(args.ticks), "--warmup", str(args.warmup)]
        command += [flag for item in args.set for flag in ("--set", item)]
        if args.no_baselines:
            command.append("--no-baselines")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results.append({"size": size, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"})
        else:
            results.append(json.loads(done.stdout))
    print(json.dumps({"machine": {"cpus": __import__("os").cpu_count()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
