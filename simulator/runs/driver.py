"""Running a scenario to the end (or until asked to stop) and summarising it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd


from simulator.metrics.summary import summarize
from simulator.model import AttentionMarket
from simulator.scenario.schema import Scenario, load_scenario, with_overrides

@dataclass
class RunResult:
    scenario: Scenario
    metrics: pd.DataFrame
    summary: dict[str, Any]
    model: AttentionMarket = field(repr=False)
    completed: bool = True


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



