"""Is the baseline a living market? Measures each calibration target of docs/calibration.md.

Runs a scenario tick by tick (the same `advance` the model uses) and reports, after a warm-up:

- `churn_per_10_ticks`: users who left in the measured ticks, per 10 ticks, as a share of the
  users alive at the start of the measured ticks (target: a few percent at most);
- `creator_effort_mean` / `creator_effort_sd`: quality (effort) of alive creators at the end
  (target: interior, away from 0.01 and 1, with spread);
- `creator_entries` / `creator_exits`: over the measured ticks (target: both positive);
- `advertiser_roi`: (value of clicks − ad spend) / ad spend over the measured ticks (target:
  positive, not absurd: below 5);
- `purchases_blocked_share`: chosen products the wallet did not cover / chosen products
  (money binds when this is not ~0), and `median_wallet_start` / `median_wallet_end` (alive
  users' wallets; money binds when they do not just grow);
- `money_conservation_error`: the largest per-tick value (must be 0).

    python benchmarks/calibration.py scenarios/baseline.yaml
    python benchmarks/calibration.py scenarios/payout_rules.yaml --set circulation.creator_payout.rule=quality

Output: one JSON document on stdout. Sweeps in the scenario are ignored (its base point runs).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from simulator.market.populations import initial_state
from simulator.metrics.collect import collect
from simulator.model import advance
from simulator.rules import RuleSet
from simulator.scenario.schema import load_scenario, parse_override_value


def measure(path: str, overrides: dict, warmup: int) -> dict:
    scenario = load_scenario(path, {**overrides, "sweep": None})
    rng = np.random.default_rng(scenario.seed)
    market = initial_state(scenario, rng)
    rules = RuleSet.of(scenario)
    users = market.ledger.balances["users"]
    wallet_start = float(np.median(users[: market.users_born]))
    totals = dict.fromkeys(("churned", "entries", "exits", "ad_spend", "advertiser_value", "blocked", "chosen"), 0)
    alive_at_warmup = 0
    worst_error = 0
    for tick in range(1, scenario.ticks + 1):
        outcome = advance(market, scenario, rules, rng)
        metrics = collect(market, outcome.arrivals, outcome.allocation, outcome.consumption, outcome.settlement, market.ledger.take_flows())
        worst_error = max(worst_error, abs(int(metrics["money_conservation_error"])))
        if tick == warmup:
            alive_at_warmup = int(metrics["alive_users"])
        if tick <= warmup:
            continue
        totals["churned"] += int(metrics["churned_users"])
        totals["entries"] += int(metrics["creator_entries"])
        totals["exits"] += int(metrics["creator_exits"])
        totals["ad_spend"] += int(metrics["ad_spend"])
        totals["advertiser_value"] += int(metrics["advertiser_value"])
        blocked = int(outcome.consumption.blocked.sum())
        totals["blocked"] += blocked
        totals["chosen"] += blocked + int(outcome.consumption.bought.sum())
    measured = scenario.ticks - warmup
    creators = market.creators
    alive = creators.alive[: market.creators_born]
    quality = creators.quality[: market.creators_born][alive].astype(np.float64)
    users_alive = market.users.alive[: market.users_born]
    return {
        "scenario": scenario.name,
        "overrides": overrides,
        "ticks": scenario.ticks,
        "warmup": warmup,
        "users_alive_end": int(users_alive.sum()),
        "churn_per_10_ticks": totals["churned"] / max(alive_at_warmup, 1) * 10 / max(measured, 1),
        "creators_alive_end": int(alive.sum()),
        "creator_effort_mean": float(quality.mean()) if len(quality) else float("nan"),
        "creator_effort_sd": float(quality.std()) if len(quality) else float("nan"),
        "creator_entries": totals["entries"],
        "creator_exits": totals["exits"],
        "advertiser_roi": (totals["advertiser_value"] - totals["ad_spend"]) / totals["ad_spend"] if totals["ad_spend"] else float("nan"),
        "purchases_blocked_share": totals["blocked"] / totals["chosen"] if totals["chosen"] else float("nan"),
        "median_wallet_start": wallet_start,
        "median_wallet_end": float(np.median(users[: market.users_born][users_alive])) if users_alive.any() else float("nan"),
        "money_conservation_error": worst_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", help="a scenario YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted-key override, as `attnsim run --set`")
    parser.add_argument("--warmup", type=int, default=None, help="ticks before measuring (default: a third of the run)")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_override_value(value)
    ticks = load_scenario(args.scenario, {**overrides, "sweep": None}).ticks
    warmup = args.warmup if args.warmup is not None else ticks // 3
    print(json.dumps(measure(args.scenario, overrides, warmup), indent=2))


if __name__ == "__main__":
    main()
