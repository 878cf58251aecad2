"""`AttentionMarket`, the mesa model: one tick = acquisition → allocation → consumption → circulation.

Mesa provides the model conventions users know (`step`, `running`, `rng`, a `DataCollector`);
the populations themselves live in numpy arrays (see `state.py`) so a tick is vectorized.
"""

from __future__ import annotations

import difflib
from functools import partial
from pathlib import Path
from typing import Any

import mesa
import numpy as np
import pandas as pd
from mesa.agentset import AbstractAgentSet, _HardKeyAgentSet

from simulator.agents import AGENT_TYPES, AgentViews, MarketAgent
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
from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    ScenarioIssue,
    load_scenario,
)
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


# Constructor arguments that set a scenario key (what Mesa's batch_run and SolaraViz vary); any
# other key goes through `overrides={dotted.key: value}`. docs/model.md lists them.
ALIASES: dict[str, str] = {
    "ticks": "ticks",
    "users": "population.users.count",
    "creators": "population.creators.count",
    "goods": "population.goods.initial",
    "advertisers": "population.advertisers.count",
    "allocation_rule": "allocation.rule",
    "temperature": "allocation.temperature",
    "ad_slots": "allocation.ad_slots",
    "fairness_floor": "allocation.fairness_floor",
    "creator_cap": "allocation.creator_cap",
    "payout_rule": "circulation.creator_payout.rule",
    "pool_share": "circulation.creator_payout.pool_share",
    "auction_format": "circulation.auction.format",
    "bidding": "population.advertisers.bidding",
    "take_rate": "circulation.platform_take_rate",
}


class _FromScenario:
    """The default of `rng`: the scenario's own seed (pass rng=None for fresh entropy, as in Mesa)."""

    def __repr__(self) -> str:
        return "<the scenario's seed>"


FROM_SCENARIO: Any = _FromScenario()
MAX_SEED = 2**63 - 1  # the schema's bound on `seed`


def _seed_from(rng: Any) -> int:
    """An integer seed for Mesa's `rng` argument: an int as given, None fresh entropy, a generator one draw."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    return int(np.random.default_rng(rng).integers(MAX_SEED))


def _resolve(scenario: Any, settings: dict[str, Any], overrides: dict[str, Any] | None) -> Scenario:
    """The scenario with the constructor's aliases and overrides applied, validated like `--set`."""
    if scenario is None:
        scenario = Scenario()
    if not isinstance(scenario, (Scenario, str, Path, dict)):
        raise TypeError(
            f"AttentionMarket(scenario): expected a simulator.Scenario, a path to a scenario YAML file or a dict, "
            f"got {type(scenario).__module__}.{type(scenario).__qualname__}; other settings are keyword arguments"
        )
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"AttentionMarket(overrides=...): expected a dict of dotted scenario keys, got {type(overrides).__name__}")
    changes: dict[str, Any] = {}
    origins: list[str] = []
    for name, value in settings.items():
        changes[ALIASES.get(name, name)] = value
        origins.append(f"AttentionMarket({name}=...)")
    for key, value in (overrides or {}).items():
        if key in changes:
            raise TypeError(f"AttentionMarket: {key} is set twice (by an argument and in overrides)")
        changes[key] = value
        origins.append(f"AttentionMarket(overrides[{key!r}])")
    if not changes and isinstance(scenario, Scenario):
        return scenario
    source = scenario.model_dump() if isinstance(scenario, Scenario) else scenario
    try:
        return load_scenario(source, changes, overrides_from="--set")  # located by position, then relabelled below
    except ScenarioError as exc:
        issues = [
            ScenarioIssue(origins[issue.line - 1], 1, 1, issue.key, issue.message)
            if issue.source == "--set" and 1 <= issue.line <= len(origins)
            else issue
            for issue in exc.issues
        ]
        raise ScenarioError(issues) from None


class AttentionMarket(mesa.Model):
    """An attention-economy marketplace: users, creators, goods and advertisers under one platform.

    `AttentionMarket(scenario)` takes a validated `Scenario`, a path to a YAML file or a dict
    (default: every key at its default). Keyword arguments named in `ALIASES` (temperature,
    payout_rule, ...) and `overrides={dotted.key: value}` change scenario keys, validated like
    `attnsim run --set`. `rng` follows Mesa: an int seeds the run, None draws fresh entropy, a
    generator gives one draw; left out, the scenario's seed is used. `seed` is the older name for
    an int `rng` (None: the scenario's seed). The seed used is recorded as `model.config.seed`.
    Each `step()` runs one tick and records its metrics; after the last tick it does nothing.
    `model.agents` holds `User`, `Creator`, `Good` and `Advertiser` views (simulator/agents.py).
    """

    def __init__(
        self,
        scenario: Scenario | str | Path | dict[str, Any] | None = None,
        *,
        rng: Any = FROM_SCENARIO,
        overrides: dict[str, Any] | None = None,
        ticks: int | None = None,
        users: int | None = None,
        creators: int | None = None,
        goods: int | None = None,
        advertisers: int | None = None,
        allocation_rule: str | None = None,
        temperature: float | None = None,
        ad_slots: int | None = None,
        fairness_floor: float | None = None,
        creator_cap: float | None = None,
        payout_rule: str | None = None,
        pool_share: float | None = None,
        auction_format: str | None = None,
        bidding: str | None = None,
        take_rate: float | None = None,
        **unknown: Any,
    ):
        seed = unknown.pop("seed", None)  # not a named parameter: Mesa's batch_run would then pass seed=None, not rng
        if unknown:
            name = next(iter(unknown))
            close = difflib.get_close_matches(name, [*ALIASES, "rng", "seed", "overrides"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"AttentionMarket() got an unexpected keyword argument {name!r}{hint} "
                f"(scenario keys: {', '.join(ALIASES)}; any other key through overrides={{'dotted.key': value}})"
            )
        given = dict(
            ticks=ticks, users=users, creators=creators, goods=goods, advertisers=advertisers,
            allocation_rule=allocation_rule, temperature=temperature, ad_slots=ad_slots,
            fairness_floor=fairness_floor, creator_cap=creator_cap, payout_rule=payout_rule,
            pool_share=pool_share, auction_format=auction_format, bidding=bidding, take_rate=take_rate,
        )  # fmt: skip
        settings = {name: value for name, value in given.items() if value is not None}
        if seed is not None and rng is not FROM_SCENARIO:
            raise TypeError("AttentionMarket: pass either rng or seed, not both")
        if seed is not None or rng is not FROM_SCENARIO:
            if "seed" in (overrides or {}):
                raise TypeError("AttentionMarket: the seed is set twice (by rng/seed and in overrides)")
            settings["seed"] = seed if seed is not None else _seed_from(rng)
        scenario = _resolve(scenario, settings, overrides)
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

    # Mesa's `model.scenario` is its own (empty) parameter object; ours is `model.config`. Reading it
    # raises rather than hand back an object that looks like the scenario and is not.
    @property
    def scenario(self) -> Any:
        raise AttributeError(
            "AttentionMarket keeps its scenario in model.config (a simulator.Scenario); "
            "Mesa's model.scenario is not used"
        )

    @scenario.setter
    def scenario(self, value: Any) -> None:
        self._scenario = value  # Mesa's own, set by mesa.Model.__init__

    # The agent views, made on the first read of `agents` (a run nobody inspects never has them).
    _agent_views: AgentViews | None = None

    def _synced_views(self) -> None:
        if self._agent_views is None:
            self._agent_views = AgentViews()
        self._agent_views.sync(self)

    @property
    def agents(self) -> AbstractAgentSet:
        """Every user, creator, good in the catalogue and advertiser, as Mesa agents (simulator/agents.py).

        Brought up to date with the populations on each read (once per tick), never during a tick.
        """
        self._synced_views()
        return super().agents

    @property
    def agents_by_type(self) -> dict[type[MarketAgent], AbstractAgentSet]:
        """`agents` by type: `User`, `Creator`, `Good`, `Advertiser` (each present even when empty)."""
        self._synced_views()
        by_type = super().agents_by_type
        for kind in AGENT_TYPES:
            if kind not in by_type:
                by_type[kind] = _HardKeyAgentSet([], random=self.random)
        return by_type

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
        if market.tick >= scenario.ticks:  # past the last tick: nothing happens (Mesa's clock still counts the call)
            self.running = False
            return
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

