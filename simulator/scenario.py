"""The scenario schema: every knob of a run, validated before anything runs.

A scenario is a YAML file (or a dict) checked against the pydantic models below. Unknown keys
are errors, never ignored, and every error carries the dotted key and, for files, the line and
column of the YAML node it came from, so a typo is reported where it was typed.

Money amounts are integer minor units (think cents); attention is counted in integer units,
one unit per exposure of a good or an ad.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ALLOCATION_RULES = ("attention_softmax", "top_k", "popularity", "random", "oracle", "learned", "shapley")
PAYOUT_RULES = ("exposure", "engagement", "quality", "shapley", "backward", "equal")
AUCTION_FORMATS = ("second_price", "first_price", "gsp")
# Rules of the library that the engine implements; the schema names every rule of the contract.
IMPLEMENTED_ALLOCATION_RULES = ("attention_softmax", "top_k", "random", "oracle")
IMPLEMENTED_PAYOUT_RULES = ("exposure",)
MAX_SCENARIO_BYTES = 1_000_000

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Money = Annotated[int, Field(ge=0, le=10**12)]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, NaN and inf are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class LogNormal(Strict):
    """A positive quantity drawn per agent: median `median`, log-scale spread `sigma`."""

    median: PositiveFloat
    sigma: NonNegativeFloat = 0.5


class ChurnConfig(Strict):
    """Users leave after `patience` consecutive active ticks with smoothed utility below `threshold`."""

    threshold: float = Field(0.05, allow_inf_nan=False)
    patience: int = Field(5, ge=1)
    smoothing: Probability = 0.3


class UsersConfig(Strict):
    count: int = Field(10_000, ge=1, le=50_000_000)
    arrivals_per_tick: NonNegativeFloat = 0.0
    budget: LogNormal = LogNormal(median=8.0, sigma=0.5)
    budget_max: int = Field(32, ge=1, le=1024)
    activity: Probability = 0.8
    interest_spread: NonNegativeFloat = 0.6
    income_per_tick: Money = 40
    initial_wallet: Money = 5_000
    overload: Annotated[float, Field(gt=0.0, le=1.0)] = 0.85
    fatigue_per_exposure: Probability = 0.005
    fatigue_per_ad: Probability = 0.02
    fatigue_recovery: Probability = 0.5
    taste_sharpness: NonNegativeFloat = 2.0
    outside_option: float = Field(0.25, allow_inf_nan=False)
    choice_noise: PositiveFloat = 0.1
    willingness_to_pay: Money = 3_000
    drift: Probability = 0.02
    ad_annoyance: NonNegativeFloat = 0.05
    churn: ChurnConfig = ChurnConfig()


class ExitConfig(Strict):
    """Creators leave after `patience` consecutive ticks of negative smoothed profit."""

    patience: int = Field(10, ge=1)
    smoothing: Probability = 0.3


class EntryConfig(Strict):
    """New creators arrive while the average smoothed creator profit is positive."""

    rate: NonNegativeFloat = 0.02
    imitation: Probability = 0.5


class CreatorsConfig(Strict):
    count: int = Field(200, ge=1, le=10_000_000)
    publish_rate: NonNegativeFloat = 0.5
    quality_mean: Probability = 0.5
    quality_sd: NonNegativeFloat = 0.15
    topic_spread: NonNegativeFloat = 0.6
    cost_per_good: Money = 600
    effort_cost: Money = 2_000
    initial_wallet: Money = 20_000
    exit: ExitConfig = ExitConfig()
    entry: EntryConfig = EntryConfig()


class GoodsConfig(Strict):
    initial: int = Field(2_000, ge=0, le=100_000_000)
    lifetime: int = Field(20, ge=1)
    product_share: Probability = 0.3
    price: LogNormal = LogNormal(median=1_500.0, sigma=0.5)
    key_noise: NonNegativeFloat = 0.2


class AdvertisersConfig(Strict):
    count: int = Field(20, ge=0, le=1_000_000)
    budget_per_tick: Money = 50_000
    total_budget: Money = 5_000_000
    value_per_click: LogNormal = LogNormal(median=120.0, sigma=0.5)
    targeting_spread: NonNegativeFloat = 0.6
    click_rate: Probability = 0.08
    bidding: Literal["truthful"] = "truthful"


class PopulationConfig(Strict):
    users: UsersConfig = UsersConfig()
    creators: CreatorsConfig = CreatorsConfig()
    goods: GoodsConfig = GoodsConfig()
    advertisers: AdvertisersConfig = AdvertisersConfig()


class TopicsConfig(Strict):
    """The world's topic structure: interests and creators' niches cluster around `clusters` centres."""

    clusters: int = Field(8, ge=1, le=100_000)


class AllocationConfig(Strict):
    rule: Literal[ALLOCATION_RULES] = "attention_softmax"  # type: ignore[valid-type]
    temperature: PositiveFloat = 1.0
    ad_slots: int = Field(2, ge=0, le=16)
    ad_position_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    mask_consumed: bool = True
    consumed_memory: int = Field(32, ge=1, le=4096)
    profile_noise: NonNegativeFloat = 0.5
    profile_learning_rate: Probability = 0.1
    block_elements: int = Field(4_194_304, ge=1_024)

    @field_validator("rule")
    @classmethod
    def _rule_is_built(cls, rule: str) -> str:
        if rule not in IMPLEMENTED_ALLOCATION_RULES:
            raise ValueError(f"allocation rule {rule!r} is not available yet; use one of {IMPLEMENTED_ALLOCATION_RULES}")
        return rule


class PayoutConfig(Strict):
    rule: Literal[PAYOUT_RULES] = "exposure"  # type: ignore[valid-type]
    pool_share: Probability = 0.5

    @field_validator("rule")
    @classmethod
    def _rule_is_built(cls, rule: str) -> str:
        if rule not in IMPLEMENTED_PAYOUT_RULES:
            raise ValueError(f"payout rule {rule!r} is not available yet; use one of {IMPLEMENTED_PAYOUT_RULES}")
        return rule


class AuctionConfig(Strict):
    format: Literal[AUCTION_FORMATS] = "second_price"  # type: ignore[valid-type]
    reserve_price: Money = 0


class CirculationConfig(Strict):
    platform_take_rate: Probability = 0.3
    creator_payout: PayoutConfig = PayoutConfig()
    auction: AuctionConfig = AuctionConfig()


class MetricsConfig(Strict):
    homogenization_pairs: int = Field(256, ge=1, le=100_000)
    summary_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2


class SweepConfig(Strict):
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    replications: int = Field(1, ge=1, le=10_000)

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
        return grid


class Scenario(Strict):
    """A fully resolved scenario: what `simulator.run` needs, with every default filled in."""

    name: str = Field("scenario", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    ticks: int = Field(100, ge=1, le=1_000_000)
    embedding_dim: int = Field(16, ge=1, le=1024)
    topics: TopicsConfig = TopicsConfig()
    population: PopulationConfig = PopulationConfig()
    allocation: AllocationConfig = AllocationConfig()
    circulation: CirculationConfig = CirculationConfig()
    metrics: MetricsConfig = MetricsConfig()
    sweep: SweepConfig | None = None

    @model_validator(mode="after")
    def _budgets_consistent(self) -> Scenario:
        users = self.population.users
        if users.budget.median > users.budget_max:
            raise ValueError(
                f"population.users.budget.median ({users.budget.median}) exceeds "
                f"population.users.budget_max ({users.budget_max})"
            )
        return self



@dataclass(frozen=True)
class ScenarioIssue:
    """One problem with a scenario, located in the file (or the --set option) it came from."""

    source: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.key}: {self.message}"


class ScenarioError(ValueError):
    """A scenario that cannot run; `issues` lists every problem found, not just the first."""

    def __init__(self, issues: list[ScenarioIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


Position = tuple[str, int, int]


class _Located:
    """The raw mapping of a scenario plus where each dotted key was written."""

    def __init__(self, data: dict[str, Any], positions: dict[str, Position], default: Position):
        self.data = data
        self.positions = positions
        self.default = default

    def locate(self, key: str) -> Position:
        """The position of `key`, or of its nearest written ancestor."""
        parts = key.split(".") if key else []
        while parts:
            found = self.positions.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return self.default


def _compose_with_positions(text: str, source: str) -> _Located:
    """Parse YAML safely, keeping the line and column of each mapping key."""
    positions: dict[str, Position] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([ScenarioIssue(source, line, col, "<yaml>", f"malformed YAML: {problem}")]) from None
    if node is None:
        raise ScenarioError([ScenarioIssue(source, 1, 1, "<root>", "the file is empty; a scenario is a YAML mapping")])
    if not isinstance(node, yaml.MappingNode):
        mark = node.start_mark
        raise ScenarioError([ScenarioIssue(source, mark.line + 1, mark.column + 1, "<root>", "a scenario must be a YAML mapping of keys to values")])

    def walk(current: yaml.Node, prefix: str) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                positions.setdefault(key, (source, key_node.start_mark.line + 1, key_node.start_mark.column + 1))
                walk(value_node, key)

    walk(node, "")
    try:
        data = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([ScenarioIssue(source, line, col, "<yaml>", f"refused YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ScenarioError([ScenarioIssue(source, 1, 1, "<root>", "a scenario must be a YAML mapping of keys to values")])
    return _Located(data, positions, (source, 1, 1))


def parse_override_value(text: str) -> Any:
    """Parse a --set value as a YAML scalar, so `0.5` is a float and `true` a bool."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key inside nested dicts, creating the sections on the way."""
    parts = key.split(".")
    if not all(parts):
        raise KeyError("an override key is dotted names, like allocation.temperature")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise KeyError(f"{part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _issues_from_validation(exc: ValidationError, located: _Located) -> list[ScenarioIssue]:
    issues = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc) or "<root>"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (allowed keys are listed in docs/scenario.md)"
        elif error["type"] == "literal_error":
            message = f"unknown name {error.get('input')!r}; {message.lower()}"
        elif "input" in error and not isinstance(error["input"], dict):
            message = f"{message} (got {error['input']!r})"
        source, line, col = located.locate(key)
        issues.append(ScenarioIssue(source, line, col, key, message))
    return issues


def _validate_sweep(scenario: Scenario, located: _Located) -> list[ScenarioIssue]:
    """Each grid value must make a valid scenario on its own."""
    issues: list[ScenarioIssue] = []
    if scenario.sweep is None:
        return issues
    base = scenario.model_dump(exclude={"sweep"})
    for key, values in scenario.sweep.grid.items():
        for index, value in enumerate(values):
            trial = copy.deepcopy(base)
            try:
                _apply_override(trial, key, value)
                Scenario.model_validate(trial)
            except KeyError as exc:
                issues.append(ScenarioIssue(*located.locate(f"sweep.grid.{key}"), f"sweep.grid.{key}", str(exc.args[0])))
                break
            except ValidationError as exc:
                for error in exc.errors():
                    loc = ".".join(str(p) for p in error["loc"]) or key
                    message = "not a scenario key" if error["type"] == "extra_forbidden" else error["msg"]
                    issues.append(
                        ScenarioIssue(*located.locate(f"sweep.grid.{key}"), f"sweep.grid.{key}[{index}]", f"{loc}: {message}")
                    )
    return issues


def load_scenario(
    source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None
) -> Scenario:
    """Read, override and validate a scenario; raise ScenarioError listing every problem.

    `source` is a path to a YAML file or an already-parsed dict. `overrides` maps dotted keys
    (as `attnsim run --set` takes them) to values applied on top before validation.
    """
    if isinstance(source, dict):
        located = _Located(copy.deepcopy(source), {}, ("<dict>", 1, 1))
    else:
        path = Path(source)
        name = str(source)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScenarioError([ScenarioIssue(name, 1, 1, "<file>", f"cannot read the file: {exc.strerror or exc}")]) from None
        if len(raw) > MAX_SCENARIO_BYTES:
            raise ScenarioError(
                [ScenarioIssue(name, 1, 1, "<file>", f"the file is {len(raw)} bytes; a scenario is at most {MAX_SCENARIO_BYTES}")]
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ScenarioError([ScenarioIssue(name, 1, 1, "<file>", "not a text file (it is not UTF-8)")]) from None
        if "\x00" in text:
            raise ScenarioError([ScenarioIssue(name, 1, 1, "<file>", "not a text file (it contains NUL bytes)")])
        located = _compose_with_positions(text, name)

    issues: list[ScenarioIssue] = []
    for index, (key, value) in enumerate((overrides or {}).items(), start=1):
        try:
            _apply_override(located.data, key, value)
        except KeyError as exc:
            issues.append(ScenarioIssue("--set", index, 1, key, str(exc.args[0])))
            continue
        located.positions[key] = ("--set", index, 1)
    if issues:
        raise ScenarioError(issues)
    try:
        scenario = Scenario.model_validate(located.data)
    except ValidationError as exc:
        raise ScenarioError(_issues_from_validation(exc, located)) from None
    issues = _validate_sweep(scenario, located)
    if issues:
        raise ScenarioError(issues)
    return scenario


def with_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """A copy of a validated scenario with dotted-key overrides applied and validated."""
    return load_scenario(scenario.model_dump(), overrides)

