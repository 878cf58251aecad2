"""Running a scenario to the end (or until asked to stop) and summarising it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd


from .model import AttentionMarket
from .scenario import Scenario, load_scenario, with_overrides

# Flows summed over the whole run in the summary, besides the tail means of every metric.
TOTALLED = (
    "churned_users",
    "consumptions",
    "purchases",
    "ad_clicks",
    "creator_entries",
    "creator_exits",
    "user_spend",
    "ad_spend",
    "platform_revenue",
    "creator_payouts",
    "creator_sales",
    "user_income",
    "production_costs",
    "advertiser_value",
    "attention_rewards",
)


@dataclass
class RunResult:
    scenario: Scenario
    metrics: pd.DataFrame
    summary: dict[str, Any]
    model: AttentionMarket = field(repr=False)
    completed: bool = True


def summarize(metrics: pd.DataFrame, fraction: float) -> dict[str, Any]:
    """Headline figures: each metric's mean over the last `fraction` of ticks (under the metric's
    own name, NaN ticks skipped), and run totals of events and money flows (`<column>_total`)."""
    summary: dict[str, Any] = {"ticks": int(len(metrics))}
    if metrics.empty:
        return summary
    tail = metrics.iloc[-max(1, math.ceil(fraction * len(metrics))) :]
    for column in metrics.columns:
        if column == "tick":
            continue
        values = tail[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[column] = float(finite.mean()) if len(finite) else None
    for column in TOTALLED:
        summary[f"{column}_total"] = int(metrics[column].sum())
    spend = summary["ad_spend_total"]
    summary["advertiser_roi_overall"] = (summary["advertiser_value_total"] - spend) / spend if spend else None
    summary["final_active_creators"] = int(metrics["active_creators"].iloc[-1])
    summary["final_alive_users"] = int(metrics["alive_users"].iloc[-1])
    summary["max_abs_money_conservation_error"] = int(metrics["money_conservation_error"].abs().max())
    return summary


def run(
    scenario: Scenario | str | Path | dict[str, Any],
    *,
    seed: int | None = None,
    ticks: int | None = None,
    on_tick: Callable[[AttentionMarket], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    model: AttentionMarket | None = None,
) -> RunResult:
    """Run a scenario tick by tick; `on_tick` sees the model after each tick.

    `should_stop` is polled between ticks: when it returns True the run ends at that tick
    boundary and the result has `completed=False` with the ticks done so far. `model` continues
    an existing model (e.g. one restored by `AttentionMarket.from_checkpoint`) instead of
    building a fresh one; `scenario` is then its scenario.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if ticks is not None:
        scenario = with_overrides(scenario, {"ticks": ticks})
    if model is None:
        model = AttentionMarket(scenario, seed=seed)
    scenario = model.config
    completed = True
    while model.running:
        if should_stop is not None and should_stop():
            completed = False
            break
        model.step()
        if on_tick is not None:
            on_tick(model)
    metrics = model.metrics
    return RunResult(model.config, metrics, summarize(metrics, scenario.metrics.summary_fraction), model, completed)



