"""What the Mesa agent views (simulator/agents.py) cost a tick, looked at and not.

    python benchmarks/agent_views.py [SCENARIO.yaml] [--ticks N] [--set KEY=VALUE ...]

Runs the scenario (default scenarios/baseline.yaml) three times in lockstep, alternating which
model goes first each tick so all see the same machine load:

- `before`: the tick as it was before the views existed: `AttentionMarket.step`'s body without
  the end-of-run guard the views' change added (the same stages, collection and checks);
- `untouched`: today's `AttentionMarket`, nobody reading `model.agents` (the fast path; the
  target is at most 2% over `before`);
- `inspected`: today's model with `model.agents` read after every tick plus one
  `agents_by_type[Creator].agg("wallet", max)`, the price of looking.

Prints one JSON document: median seconds per tick of each and the ratios to `before`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import yaml

from simulator.agents import Creator
from simulator.metrics.collect import collect
from simulator.metrics.invariants import check_tick
from simulator.model import AttentionMarket, advance
from simulator.scenario.schema import load_scenario


class BeforeViews(AttentionMarket):
    """The model's step as it was before the agent views: the strongest honest baseline is the old code itself."""

    def step(self) -> None:
        market, scenario = self.market, self.config
        tick = advance(market, scenario, self.rules, self.rng)
        mode = tick.allocation.mode
        self.allocation_mode, self.allocation_mode_reason = mode.mode, mode.reason
        self.allocation_modes = {**self.allocation_modes, mode.mode: self.allocation_modes.get(mode.mode, 0) + 1}
        self.latest_metrics = collect(
            market, tick.arrivals, tick.allocation, tick.consumption, tick.settlement, market.ledger.take_flows()
        )
        if self.check_invariants:
            check_tick(market, arrivals=tick.arrivals, allocation=tick.allocation, rule=self.rule)
        self.datacollector.collect(self)
        if self.panels is not None:
            self.panels.record(market, tick)
        if market.tick >= scenario.ticks:
            self.running = False


def look(model: AttentionMarket) -> None:
    len(model.agents)
    model.agents_by_type[Creator].agg("wallet", max)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="scenarios/baseline.yaml")
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, value in (text.split("=", 1) for text in args.sets)}
    overrides["ticks"] = args.ticks
    scenario = load_scenario(args.scenario, overrides=overrides)

    models = {"before": BeforeViews(scenario), "untouched": AttentionMarket(scenario), "inspected": AttentionMarket(scenario)}
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for tick in range(args.ticks):
        for name in order[tick % 3 :] + order[: tick % 3]:  # rotate who goes first
            model = models[name]
            start = time.perf_counter()
            model.step()
            if name == "inspected":
                look(model)
            times[name].append(time.perf_counter() - start)
    assert models["untouched"].metrics.equals(models["before"].metrics), "the views changed a result"
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "scenario": scenario.name,
        "ticks": args.ticks,
        "users": scenario.population.users.count,
        "median_tick_seconds": median,
        "untouched_over_before": median["untouched"] / median["before"],
        "inspected_over_before": median["inspected"] / median["before"],
        "agents_at_end": len(models["inspected"].agents),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
