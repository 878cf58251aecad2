"""Paired comparisons against a reference run of the same seed: what a setting costs.

Some figures only exist as comparisons: the welfare cost of privacy is a private run's welfare
minus the non-private run's *of the same seed*; honest creators' income loss to fraud is their
income in a run with adversaries minus the clean run's of the same seed. `attnsim sweep` derives
each grid point's seeds from the point (independent samples); here every grid point and its
reference run share the seeds (common random numbers), so the differences carry no
between-seed noise, and with the privacy mechanism on its own generator (see
rules/allocation/privacy.py) a private run differs from its reference only by the noise.

    python -m simulator.analysis.paired scenarios/privacy.yaml --reference privacy.mechanism=none \
        --seeds 3 --set population.users.count=1000 --metric user_welfare --metric homogenization

prints, for each grid point and metric, the mean over seeds of the point's summary figure, the
reference's, and their paired difference with a Student t interval (95%).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from simulator.metrics.summary import summarize
from simulator.model import AttentionMarket
from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_override_value,
    with_overrides,
)


def grid_points(scenario: Scenario) -> list[dict[str, Any]]:
    """The sweep grid's points, in the order `attnsim sweep` runs them (one empty point without a grid)."""
    grid = scenario.sweep.grid if scenario.sweep is not None else {}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _summary(scenario: Scenario) -> dict[str, Any]:
    model = AttentionMarket(scenario)
    while model.running:
        model.step()
    return summarize(model.metrics, scenario.metrics.summary_fraction)


def paired_runs(scenario: Scenario, reference: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """One row per (grid point, seed) with every summary figure of the point's run (`value.*`) and
    of its reference, the same point with `reference` overrides applied (`reference.*`)."""
    base = with_overrides(scenario, {"sweep": None})
    cache: dict[str, dict[str, Any]] = {}

    def summary_of(overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
        resolved = with_overrides(base, {**overrides, "seed": seed})
        key = json.dumps(resolved.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = _summary(resolved)
        return cache[key]

    rows = []
    for point in grid_points(scenario):
        for seed in seeds:
            row: dict[str, Any] = {"point": json.dumps(point, sort_keys=False), "seed": seed, **point}
            row.update({f"value.{k}": v for k, v in summary_of(point, seed).items()})
            row.update({f"reference.{k}": v for k, v in summary_of({**point, **reference}, seed).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(runs: pd.DataFrame, metrics: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Per grid point and metric: mean value, mean reference, mean paired difference and its
    Student t interval over seeds (no interval with one seed)."""
    rows = []
    for point, group in runs.groupby("point", sort=False):
        for metric in metrics:
            value = group[f"value.{metric}"].to_numpy(dtype=np.float64)
            ref = group[f"reference.{metric}"].to_numpy(dtype=np.float64)
            diff = value - ref
            n = len(diff)
            half = stats.t.ppf((1 + level) / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
            rows.append(
                {"point": point, "metric": metric, "n": n, "value": value.mean(), "reference": ref.mean(),
                 "difference": diff.mean(), "low": diff.mean() - half, "high": diff.mean() + half}
            )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.analysis.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario")
    parser.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE", help="what the reference run changes (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per point: the scenario's seed, +1, ...")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--metric", action="append", default=[], help="summary figures to compare (repeatable)")
    parser.add_argument("--csv", help="also write the per-seed runs here")
    args = parser.parse_args(argv)

    def pairs(items: list[str]) -> dict[str, Any]:
        return {key: parse_override_value(value) for key, _, value in (item.partition("=") for item in items)}

    try:
        scenario = load_scenario(args.scenario, pairs(args.overrides))
    except ScenarioError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    runs = paired_runs(scenario, pairs(args.reference), [scenario.seed + i for i in range(args.seeds)])
    if args.csv:
        runs.to_csv(args.csv, index=False)
    table = paired_differences(runs, args.metric or ["user_welfare"])
    sys.stdout.write(markdown(table))
    return 0


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of `table`, numbers to 4 significant digits."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
