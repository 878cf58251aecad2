"""Seconds per tick and peak memory of the simulator, against the baselines people would write.

For each size (users × goods × d) this measures, in the same run and on the same machine:

- `tick`: the simulator's full tick (all four stages), median over `--ticks` ticks after
  `--warmup`; `allocation`: the allocation stage within those ticks (content and ad auctions);
  `content_allocation`: the content allocation alone, the work the baselines do; `stages`: the
  median seconds of each stage and of the content allocation's parts (scores, masking,
  selection), the table in docs/performance.md;
- baseline (a) `mesa_agents`: the same allocation written the way a Mesa user would write it
  first — one `mesa.Agent` per user whose `step()` does its own numpy softmax over the catalogue
  and draws its exposures without replacement;
- baseline (b) `dense_floor`: the honest floor, the least any exact dense method must do for the
  tick just measured: one float32 matrix product of the tick's active users' queries against its
  live goods' keys plus one exp over the result, chunked like the allocator (blocks of
  `allocation.block_elements` scores in one reused buffer), in the same process with the same
  thread settings, measured after every tick (interleaved, so both see the same machine load)
  and reported as a median like the tick.

The floor is measured on a slice of rows and scaled linearly where the whole would take too long
(the JSON says `extrapolated_from`). Each size runs in its own subprocess so `peak_rss_gb` is
that configuration's own peak, and the JSON records `/proc/loadavg` at the start and the end:
the machine is shared, so compare ratios measured in one run, not seconds across runs.
Output: one JSON document on stdout.

    python benchmarks/bench_tick.py --size 100000x1000x32
    python benchmarks/bench_tick.py --preset targets      # the README's performance table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PRESETS = {
    "smoke": ["2000x200x16"],
    "targets": ["100000x1000x32", "100000x10000x32", "1000000x100000x32"],
}
MESA_AGENT_CAP = 20_000  # users simulated as Mesa agents before scaling linearly
DENSE_ELEMENTS_CAP = 200_000_000  # floor score elements computed per measurement before scaling linearly


def parse_size(text: str) -> tuple[int, int, int]:
    users, goods, dim = (int(part) for part in text.lower().split("x"))
    return users, goods, dim


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to read next to each figure on a shared machine."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


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


def timed(owner: Any, name: str, seconds: list[float], calls: list[tuple] | None = None) -> None:
    """Replace owner.name by a wrapper that appends each call's duration to `seconds` (and, with
    `calls`, each call's arguments)."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if calls is not None:
            calls.append(args)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


class HonestFloor:
    """QKᵀ plus exp over the cells a tick's exact allocation scores, done as cheaply as possible.

    The same cells as the tick (active users × live goods), the same blocks (`block_rows` of
    `block_elements`), one buffer allocated once and reused, so no page faults are paid per repeat;
    queries and keys are unit vectors at the allocator's √d scale, so exp never overflows.
    """

    def __init__(self, dim: int, block_elements: int):
        self.dim = dim
        self.block_elements = block_elements
        self.rng = np.random.default_rng(0)
        self.queries = np.empty((0, dim), dtype=np.float32)
        self.keys = np.empty((0, dim), dtype=np.float32)
        self.buffer = np.empty(0, dtype=np.float32)

    def _unit(self, rows: int) -> np.ndarray:
        vectors = self.rng.standard_normal((rows, self.dim), dtype=np.float32)
        vectors *= np.float32(np.sqrt(self.dim)) / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def seconds(self, users: int, goods: int) -> tuple[float, int | None]:
        """Seconds for `users` × `goods` (scaled from a slice of rows if huge), and the slice."""
        from simulator.rules.allocation.engine import block_rows

        if users == 0 or goods == 0:
            return 0.0, None
        rows = min(users, max(1, DENSE_ELEMENTS_CAP // goods))
        step = block_rows(goods, self.block_elements)
        if self.queries.shape[0] < rows:
            self.queries = self._unit(rows)
        if self.keys.shape[0] != goods:
            self.keys = np.ascontiguousarray(self._unit(goods).T)
        if self.buffer.shape[0] < min(step, rows) * goods:
            self.buffer = np.empty(min(step, rows) * goods, dtype=np.float32)
        start = time.perf_counter()
        for low in range(0, rows, step):
            block = self.queries[low : min(low + step, rows)]
            scores = np.matmul(block, self.keys, out=self.buffer[: len(block) * goods].reshape(len(block), goods))
            np.exp(scores, out=scores)
        elapsed = time.perf_counter() - start
        return elapsed * users / rows, (rows if rows < users else None)


def measure_simulator(
    users: int, goods: int, dim: int, ticks: int, warmup: int, extra: dict[str, Any], floor: bool = True
) -> dict[str, Any]:
    """The simulator's tick, its stages, and (with `floor`) the honest floor after every tick."""
    import simulator.model as model_module
    import simulator.rules.allocation.engine as engine
    import simulator.stages.allocation as allocation_stage

    scenario = scenario_for(users, goods, dim, ticks + warmup, extra)
    stage_seconds: dict[str, list[float]] = {
        name: [] for name in ("acquire", "allocate", "consume", "circulate", "adapt", "collect", "check_tick")
    }
    for name, seconds in stage_seconds.items():
        # advance() reaches consumption through the fraud stage (bots and humans in one call)
        timed(model_module, "consume_with_bots" if name == "consume" else name, seconds)
    content_seconds: list[float] = []
    content_calls: list[tuple] = []
    timed(allocation_stage, "allocate_exposures", content_seconds, content_calls)  # content only, as the baselines
    part_seconds: dict[str, list[float]] = {"mask_consumed": [], "select": []}
    timed(engine, "mask_consumed", part_seconds["mask_consumed"])
    started = time.perf_counter()
    model = model_module.AttentionMarket(scenario)
    setup = time.perf_counter() - started
    score_seconds: list[float] = []
    timed(type(model.rule), "scores", score_seconds)  # the rule's score blocks (the product)
    timed(type(model.rule), "select", part_seconds["select"])  # its selection: sampler, top-k or its own
    honest = HonestFloor(dim, scenario.allocation.block_elements)
    tick_seconds, floor_seconds, cells, per_tick = [], [], [], []
    extrapolated = None
    for tick in range(warmup + ticks):
        marks = {name: len(seconds) for name, seconds in {**stage_seconds, **part_seconds, "scores": score_seconds}.items()}
        start = time.perf_counter()
        model.step()
        tick_seconds.append(time.perf_counter() - start)
        _, catalogue, active = content_calls[-1][:3]
        shape = (len(active), len(catalogue.rows))
        cells.append(shape)
        if floor:
            seconds, extrapolated = honest.seconds(*shape)
            floor_seconds.append(seconds)
        spent = {name: sum(seconds[marks[name] :]) for name, seconds in {**stage_seconds, **part_seconds, "scores": score_seconds}.items()}
        per_tick.append(spent)
    measured = slice(warmup, None)
    stages = {name: statistics.median(tick[name] for tick in per_tick[measured]) for name in per_tick[0]}
    stages["content_allocation"] = statistics.median(content_seconds[measured])
    stages["ad_auctions"] = statistics.median(a - c for a, c in zip(stage_seconds["allocate"][measured], content_seconds[measured]))
    result = {
        "setup_seconds": setup,
        "tick_seconds": statistics.median(tick_seconds[measured]),
        "allocation_seconds": statistics.median(stage_seconds["allocate"][measured]),
        "content_allocation_seconds": stages["content_allocation"],
        "stages_seconds": stages,
        "active_users_last_tick": model.latest_metrics["active_users"],
        "scored_users_x_goods": cells[measured],
        "candidate_mode": getattr(model, "allocation_mode", "exact"),
    }
    if floor:
        result["dense_floor"] = {"seconds": statistics.median(floor_seconds[measured]), "extrapolated_from": extrapolated}
    return result


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
    result: dict[str, Any] = {"size": size, "users": users, "goods": goods, "dim": dim, "load_average_start": load_average()}
    if baselines:
        result["mesa_agents"] = measure_mesa_agents(users, goods, dim)
    result["simulator"] = measure_simulator(users, goods, dim, ticks, warmup, extra, floor=baselines)
    result["peak_rss_gb"] = peak_rss_bytes() / 1024**3
    result["load_average_end"] = load_average()
    if baselines:
        sim = result["simulator"]
        result["dense_floor"] = sim.pop("dense_floor")
        floor = result["dense_floor"]["seconds"]
        mesa = result["mesa_agents"]["seconds"]
        tick = sim["tick_seconds"]
        result["ratios"] = {
            "content_allocation_over_dense_floor": sim["content_allocation_seconds"] / floor,
            "allocation_over_dense_floor": sim["allocation_seconds"] / floor,
            "tick_over_dense_floor": tick / floor,
            "mesa_agents_over_content_allocation": mesa / sim["content_allocation_seconds"],
            "mesa_agents_over_allocation": mesa / sim["allocation_seconds"],
            "mesa_agents_over_tick": mesa / tick,
        }
        result["stage_shares_of_tick"] = {name: seconds / tick for name, seconds in sim["stages_seconds"].items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", help="USERSxGOODSxDIM, repeatable")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named list of sizes")
    parser.add_argument("--ticks", type=int, default=3, help="measured ticks per size (median)")
    parser.add_argument("--warmup", type=int, default=1, help="ticks run before measuring")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override")
    parser.add_argument("--no-baselines", action="store_true", help="measure the simulator only")
    parser.add_argument(
        "--threads", metavar="BLAS,NUMBA", default=None,
        help="thread counts for the simulator and the floor alike (default: as `attnsim run`, one BLAS thread and every core for numba)",
    )  # fmt: skip
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)  # one size, this process
    args = parser.parse_args()

    from simulator.scenario.schema import parse_override_value

    extra = {key: parse_override_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    sizes = (args.size or []) + PRESETS.get(args.preset or "", [])
    if not sizes:
        parser.error("give --size or --preset")
    if args.inline:
        from simulator.runs.threads import set_threads, use_threads

        if args.threads:
            blas, kernels = (int(part) for part in args.threads.split(","))
            set_threads(blas, kernels)
        else:
            blas, kernels = use_threads(None)
        result = one_size(sizes[0], args.ticks, args.warmup, extra, not args.no_baselines)
        result["threads"] = {"blas": blas, "numba": kernels}
        print(json.dumps(result))
        return
    results = []
    for size in sizes:
        command = [sys.executable, __file__, "--inline", "--size", size, "--ticks", str(args.ticks), "--warmup", str(args.warmup)]
        command += [flag for item in args.set for flag in ("--set", item)]
        if args.no_baselines:
            command.append("--no-baselines")
        if args.threads:
            command += ["--threads", args.threads]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results.append({"size": size, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"})
        else:
            results.append(json.loads(done.stdout))
    print(json.dumps({"machine": {"cpus": os.cpu_count()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
