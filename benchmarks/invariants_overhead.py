"""What the per-tick invariant pass (simulator/metrics/invariants.py) adds to a tick.

    python benchmarks/invariants_overhead.py [SCENARIO.yaml] [--ticks N] [--set KEY=VALUE ...]

Runs the scenario (default scenarios/baseline.yaml) twice in lockstep, one model with the checks
and one without, alternating ticks so both see the same machine load, and also times
`check_tick` alone on the checked model's tick outputs. Prints the median tick time of each,
the median cost of the checks alone, and the overhead as a share of a tick without them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import yaml

from simulator.metrics.collect import collect
from simulator.metrics.invariants import check_tick
from simulator.model import AttentionMarket, advance
from simulator.scenario.schema import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="scenarios/baseline.yaml")
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, value in (text.split("=", 1) for text in args.sets)}
    overrides["ticks"] = args.ticks
    scenario = load_scenario(args.scenario, overrides=overrides)

    checked, unchecked = AttentionMarket(scenario), AttentionMarket(scenario)
    unchecked.check_invariants = False
    with_checks, without_checks, check_only = [], [], []
    for tick in range(args.ticks):
        # Same scenario and seed: both models do the same work each tick. Alternate which goes first.
        for model, times in ((unchecked, without_checks), (checked, with_checks))[:: 1 if tick % 2 else -1]:
            start = time.perf_counter()
            model.step()
            times.append(time.perf_counter() - start)

    # The checks alone, on fresh tick outputs of a third model (same scenario, so same sizes).
    probe = AttentionMarket(scenario)
    for _ in range(args.ticks):
        outcome = advance(probe.market, probe.config, probe.rules, probe.rng)
        collect(probe.market, outcome.arrivals, outcome.allocation, outcome.consumption, outcome.settlement, probe.market.ledger.take_flows())
        start = time.perf_counter()
        check_tick(probe.market, arrivals=outcome.arrivals, allocation=outcome.allocation, rule=probe.rule)
        check_only.append(time.perf_counter() - start)

    base = statistics.median(without_checks)
    full = statistics.median(with_checks)
    alone = statistics.median(check_only)
    pop = scenario.population
    print(f"scenario {scenario.name}: {pop.users.count:,} users, {pop.creators.count:,} creators, {pop.goods.initial:,} goods, {args.ticks} ticks")
    print(f"median tick without checks  {base * 1e3:9.2f} ms")
    paired = statistics.median(w - wo for w, wo in zip(with_checks, without_checks))
    print(f"median tick with checks     {full * 1e3:9.2f} ms  ({(full / base - 1) * 100:+.1f}%, noisy)")
    print(f"median paired difference    {paired * 1e3:9.2f} ms  ({paired / base * 100:+.1f}% of a tick, noisy)")
    print(f"median check_tick alone     {alone * 1e3:9.3f} ms  ({alone / base * 100:.2f}% of a tick)")


if __name__ == "__main__":
    main()
