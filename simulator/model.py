"""`AttentionMarket`, the mesa model: one tick = acquisition → allocation → consumption → circulation.

Mesa provides the model conventions users know (`step`, `running`, `rng`, a `DataCollector`);
the populations themselves live in numpy arrays (see `state.py`) so a tick is vectorized.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import mesa
import numpy as np
import pandas as pd

from simulator.market.outcomes import TickOutcome
from simulator.market.populations import initial_state, spawn_streams
from simulator.market.state import MarketState
from simulator.metrics.collect import collect

# ConservationError (money appearing or vanishing) is the `money_conserved` invariant; re-exported here.
from simulator.metrics.invariants import (  # noqa: F401
    ConservationError,
    InvariantViolation,
    check_tick,
)
from simulator.metrics.panels import PanelRecorder
from simulator.metrics.table import INTEGER_COLUMNS, METRIC_COLUMNS
from simulator.rules import RuleSet
from simulator.rules.allocation.base import AllocationRule
from simulator.rules.allocation.feedback import record_outcomes
from simulator.scenario.schema import Scenario, load_scenario, with_overrides
from simulator.stages.acquisition import acquire
from simulator.stages.adaptation import adapt
from simulator.stages.allocation import allocate
from simulator.stages.circulation import circulate
from simulator.stages.fraud import consume_with_bots, work_farms


def advance(market: MarketState, scenario: Scenario, rules: RuleSet, rng: np.random.Generator) -> TickOutcome:
    """Run one tick's four stages on `market` in place; the only place that orders them.

    Each stage draws from its own stream of this tick (`spawn_streams`), so arms of a sweep that
    share a seed share every draw their rules do not change (common random numbers)."""
    market.tick += 1
    acquisition_rng, allocation_rng, consumption_rng, circulation_rng, adaptation_rng, fraud_rng = spawn_streams(rng, 6)
    arrivals = acquire(market, rules.bidding, scenario, acquisition_rng)
    allocation = allocate(market, arrivals, rules.allocation, scenario, allocation_rng)
    # Engagement farms put their orders into bots' feeds (simulator/stages/fraud.py); bots act as bots.
    farms = work_farms(market, arrivals, allocation, scenario, fraud_rng)
    if farms is not None:
        allocation = farms.allocation
    consumption = consume_with_bots(market, allocation, None if farms is None else farms.farmed, scenario, consumption_rng)
    record_outcomes(market, rules.allocation, allocation, consumption, scenario)
    settlement = circulate(market, arrivals, allocation, consumption, rules.payout, scenario, circulation_rng, farms)
    adapt(market, allocation, consumption, settlement, rules, scenario, adaptation_rng)
    return TickOutcome(arrivals, allocation, consumption, settlement)


def _latest_metric(model: AttentionMarket, name: str) -> float | int:
    return model.latest_metrics[name]


class AttentionMarket(mesa.Model):
    """An attention-economy marketplace: users, creators, goods and advertisers under one platform.

    `AttentionMarket(scenario)` takes a validated `Scenario`, a path to a YAML file or a dict;
    `seed` overrides the scenario's seed. Each `step()` runs one tick and records its metrics.
    """

    def __init__(self, scenario: Scenario | str | Path | dict[str, Any], *, seed: int | None = None):
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if seed is not None:
            scenario = with_overrides(scenario, {"seed": seed})
        super().__init__(rng=scenario.seed)
        self.config = scenario
        self.market = initial_state(scenario, self.rng)
        self.rules = RuleSet.of(scenario)
        self.latest_metrics: dict[str, float | int] = {}
        # Agent panels (simulator/metrics/panels.py), None when `metrics.agent_panels` is off; their own seeded stream.
        self.panels: PanelRecorder | None = (
            PanelRecorder(scenario, self.market) if scenario.metrics.agent_panels is not None else None
        )
        self.datacollector = self.new_datacollector()

    # Checked at the end of every tick (simulator/metrics/invariants.py); False skips the pass.
    check_invariants: bool = True
    # How content was allocated (`allocation.candidates`): the latest tick's mode (`exact` or
    # `ivf`, None before the first tick), why, and ticks per mode; manifest.json records them.
    allocation_mode: str | None = None
    allocation_mode_reason: str = ""
    allocation_modes: dict[str, int] = {}  # replaced, never mutated in place
    # True while a checkpoint restore brings mesa's clock to the saved step (runs/checkpoint.py):
    # mesa's public `run_for` then steps the clock while `step` leaves the market alone.
    replaying_clock: bool = False

    def new_datacollector(self) -> mesa.DataCollector:
        """An empty collector of the metric columns (also used when restoring a checkpoint)."""
        return mesa.DataCollector(model_reporters={name: partial(_latest_metric, name=name) for name in METRIC_COLUMNS})

    def step(self) -> None:
        if self.replaying_clock:
            return
        market, scenario = self.market, self.config
        tick = advance(market, scenario, self.rules, self.rng)
        mode = tick.allocation.mode
        self.allocation_mode, self.allocation_mode_reason = mode.mode, mode.reason
        self.allocation_modes = {**self.allocation_modes, mode.mode: self.allocation_modes.get(mode.mode, 0) + 1}
        self.latest_metrics = collect(
            market, tick.arrivals, tick.allocation, tick.consumption, tick.settlement, market.ledger.take_flows()
        )
        if self.check_invariants:  # before recording, so a failed run keeps only the ticks that passed
            check_tick(market, arrivals=tick.arrivals, allocation=tick.allocation, rule=self.rule)
        self.datacollector.collect(self)
        if self.panels is not None:
            self.panels.record(market, tick)
        if market.tick >= scenario.ticks:
            self.running = False

    @property
    def rule(self) -> AllocationRule:
        """The allocation rule in force (`rules.allocation`)."""
        return self.rules.allocation

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per tick so far, the columns of `metrics.METRIC_COLUMNS`."""
        frame = pd.DataFrame(self.datacollector.model_vars, columns=list(METRIC_COLUMNS))
        return frame.astype({column: np.int64 for column in INTEGER_COLUMNS})

