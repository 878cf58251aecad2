"""The scenario schema: every knob of a run, validated before anything runs.

A scenario is a YAML file (or a dict) checked against the pydantic models below. Unknown keys
are errors, never ignored, and every error carries the dotted key and, for files, the line and
column of the YAML node it came from, so a typo is reported where it was typed.

Money amounts are integer minor units (think cents); attention is counted in integer units,
one unit per exposure of a good or an ad.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator
from pydantic_core import PydanticCustomError

from simulator.registry import RuleError, registry

MAX_SCENARIO_BYTES = 1_000_000

# Bounds that keep every float finite and every money total within int64 (docs/scenario.md):
MAX_KNOB = 1e9  # no unbounded float knob may exceed this in magnitude (scores, utilities, noise scales)
MAX_MONEY = 10**12  # no money knob, and no drawn price or click value, above this (minor units)
MONEY_TOTAL_LIMIT = 2**62  # the run's worst-case money total (Scenario._money_fits_int64): half of int64, so the ledger's sums of totals cannot overflow

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0, le=MAX_KNOB, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, le=MAX_KNOB, allow_inf_nan=False)]
Money = Annotated[int, Field(ge=0, le=MAX_MONEY)]


def _rule_name(kind: str) -> Any:
    """A rule of `kind`: a registered name or a `module:Class` reference (imported and registered here)."""

    def check(value: str) -> str:
        registry(kind).resolve(value)  # RuleError (a ValueError) names the registered rules
        return value

    return Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check)]


def _check_params(kind: str, rule: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` validated by the rule's own `Params` model (when the rule itself is valid)."""
    try:
        cls = registry(kind).resolve(rule)
    except RuleError:
        return params  # the rule's own error is reported at its key
    try:
        cls.Params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '<params>'}: {error['msg']}" for error in exc.errors())
        raise ValueError(f"the {rule} rule's params: {problems}") from None
    return params


RuleParams = dict[str, Any]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, NaN and inf are refused.

    The docstring under each field is its documentation: docs/scenario.md is generated from
    it (`python -m simulator.scenario.schema`), and a test keeps the page in step with the schema.
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True, use_attribute_docstrings=True
    )


class LogNormal(Strict):
    """A positive quantity drawn once per agent: median × exp(sigma × standard normal)."""

    median: PositiveFloat
    """The median of the distribution."""
    sigma: NonNegativeFloat = 0.5
    """Spread on the log scale; 0 gives every agent the median."""


MONEY_SIGMAS = 8  # a money draw's bound is checked at median × exp(8 sigma): beyond it the normal has mass 6e-16


class MoneyLogNormal(LogNormal):
    """A money amount drawn once per good or agent, in minor units: median × exp(sigma × standard normal).

    Bounded so every draw fits the ledger: median × exp(8 × sigma), an 8-standard-deviation draw,
    may not exceed 1e12 minor units (the bound of every money knob)."""

    median: Annotated[float, Field(gt=0.0, le=MAX_MONEY, allow_inf_nan=False)]
    """The median, in minor units (at most 1e12)."""
    sigma: Annotated[float, Field(ge=0.0, le=4.0, allow_inf_nan=False)] = 0.5
    """Spread on the log scale, at most 4; 0 gives every draw the median. median × exp(8 × sigma) may not exceed 1e12."""

    @model_validator(mode="after")
    def _draws_fit_the_ledger(self) -> MoneyLogNormal:
        largest = self.median * math.exp(MONEY_SIGMAS * self.sigma)
        if largest > MAX_MONEY:
            raise ValueError(
                f"median × exp({MONEY_SIGMAS} × sigma) = {largest:.3g} minor units, more than the {MAX_MONEY:.0e} a money amount may reach; lower the median or sigma"
            )
        return self


class ChurnConfig(Strict):
    """Users leave after `patience` consecutive active ticks with smoothed utility below `threshold`."""

    threshold: float = Field(-0.05, ge=-MAX_KNOB, le=MAX_KNOB, allow_inf_nan=False)
    """Smoothed utility per active tick under which a tick counts as disappointing (0: the platform is worth less than the outside option; the default tolerates a little less, see docs/calibration.md)."""
    patience: int = Field(5, ge=1)
    """Consecutive disappointing active ticks before the user leaves for good."""
    smoothing: Probability = 0.3
    """Weight of the latest tick in the exponential moving average of utility."""


class ChoiceConfig(Strict):
    """How a user chooses among the goods it is shown (see docs/model.md, "Choice among what is shown")."""

    model: Literal["independent", "top_n"] = "independent"
    """independent: each exposure is taken on its own when its promised value less its price plus the taste shock beats the outside option (the default); top_n: of the exposures that beat the outside option, the user takes at most `n`, those with the largest surplus (what they beat it by, taste shock included) × position weight rank^−`position_bias` (rank 1 is the top of the feed), as in T-RECS and Chaney et al."""
    n: int = Field(1, ge=1, le=1024)
    """top_n: most goods a user takes in a tick; at most `budget_max` (the longest feed)."""
    position_bias: NonNegativeFloat = 1.0
    """top_n: a, the exponent of the position weight rank^−a (0: position does not matter beyond the attention it holds)."""


class UsersConfig(Strict):
    """Users: the attention supply."""

    @field_validator("budget")
    @classmethod
    def _median_within_cap(cls, budget: LogNormal, info: ValidationInfo) -> LogNormal:
        cap = info.data.get("budget_max")
        if cap is not None and budget.median > cap:
            raise ValueError(f"the median budget {budget.median} exceeds budget_max {cap}")
        return budget

    count: int = Field(10_000, ge=1, le=50_000_000)
    """Users at tick 0."""
    arrivals_per_tick: NonNegativeFloat = 0.0
    """Mean of the Poisson number of new users joining each tick."""
    budget_max: int = Field(32, ge=1, le=1024)
    """Cap on any user's attention budget."""
    budget: LogNormal = Field(LogNormal(median=8.0, sigma=0.5), validate_default=True)
    """Attention units a user brings on an active tick (one unit per exposure), drawn per user."""
    activity: Probability = 0.8
    """Mean probability that a user shows up on a tick (before fatigue); varies per user."""
    interest_spread: NonNegativeFloat = 0.6
    """How far users' true interests scatter around their topic cluster's centre."""
    income_per_tick: Money = 40
    """Money each alive user receives from outside the platform every tick."""
    initial_wallet: Money = 5_000
    """Money each user holds when joining."""
    overload: Annotated[float, Field(gt=0.0, le=1.0)] = 0.85
    """Information overload: the k-th exposure of a tick holds overload**k of a fresh one's attention."""
    fatigue_per_exposure: Probability = 0.005
    """Fatigue added by each content exposure; fatigue lowers showing up and the attention held."""
    fatigue_per_ad: Probability = 0.02
    """Fatigue added by each ad shown."""
    fatigue_recovery: Probability = 0.5
    """Share of fatigue kept from one tick to the next."""
    taste_sharpness: NonNegativeFloat = 2.0
    """How fast value falls with topic mismatch: match = exp(sharpness × (cos − 1))."""
    outside_option: float = Field(0.25, ge=-MAX_KNOB, le=MAX_KNOB, allow_inf_nan=False)
    """Value of not consuming: an exposure is consumed when its promised value plus a logistic taste shock beats it, and a consumption's utility is what it beat it by. Within ±1e9, like every unbounded float knob, so utilities summed over a run stay finite."""
    choice_noise: PositiveFloat = 0.1
    """Scale of the logistic taste shock in each consumption choice."""
    willingness_to_pay: Money = 6_000
    """Money a product of value 1 is worth to a user: a product's price enters the consumption choice as price / this (value units), and a product is had only if bought."""
    drift: Probability = 0.02
    """Rate at which true interests move toward what the user consumed this tick."""
    ad_annoyance: NonNegativeFloat = 0.02
    """Utility lost per ad shown."""
    churn: ChurnConfig = ChurnConfig()
    """The churn rule."""
    choice: ChoiceConfig = ChoiceConfig()
    """The choice among what is shown: independent per exposure (the default) or the top n by surplus and position."""

    @field_validator("choice")
    @classmethod
    def _choice_fits_the_feed(cls, choice: ChoiceConfig, info: ValidationInfo) -> ChoiceConfig:
        cap = info.data.get("budget_max")
        if choice.model == "top_n" and cap is not None and choice.n > cap:
            raise PydanticCustomError(
                "choice_exceeds_feed",
                "a user may take {n} goods but is shown at most {cap} (budget_max): n larger than the feed never binds; lower n or raise budget_max",
                {"n": choice.n, "cap": cap, "subkey": "n"},
            )
        return choice


class ExitConfig(Strict):
    """Creators leave after `patience` consecutive failing ticks: negative smoothed profit (`profit`) or a smoothed share of engagement or exposure below `min_share` (viability exits), or nothing on offer."""

    rule: Literal["profit", "engagement_share", "exposure_share"] = "profit"
    """What makes a tick a failing one: profit, negative smoothed profit (income − costs); engagement_share, a smoothed share of the tick's consumptions below `min_share`; exposure_share, the same with exposures (the provider-viability exits of Mladenov et al., ICML 2020). Under either share rule losses alone do not make a creator leave (a creator that cannot pay to publish ends up with nothing on offer, which does)."""
    min_share: Probability = 0.0
    """The viability threshold ν of the share rules, in [0, 1]: a creator whose smoothed share of all consumptions (or exposures) of the tick, over every creator, is below it fails the tick (0: only nothing on offer fails)."""
    patience: int = Field(10, ge=1)
    """Consecutive failing ticks before a creator leaves with its goods."""
    smoothing: Probability = 0.3
    """Weight of the latest tick in the exponential moving average of profit (or of the share, which starts at the creator's first tick's share)."""


class EntryConfig(Strict):
    """New creators arrive while creating pays: the mean profit of the tick over every creator that took part is positive."""

    rate: NonNegativeFloat = 0.01
    """Poisson mean of entrants per tick, per active creator, while the mean profit of the tick is positive."""
    imitation: Probability = 0.5
    """Share of entrants that copy the niche of a profitable creator (chosen by profit)."""


class AdaptationConfig(Strict):
    """Each tick creators move their niche and effort to raise their own expected reward."""

    rule: Literal["static", "gradient", "best_response"] = "static"
    """static: never change; gradient: step the niche toward the exposure-weighted direction of what earned, and effort along its marginal profit; best_response: try `candidates` sampled moves and keep the best under the current rules."""
    learning_rate: Probability = 0.1
    """Step size of niche moves (the niche is projected back to unit norm)."""
    effort_step: Probability = 0.05
    """Step size of quality (effort) changes."""
    candidates: int = Field(8, ge=1, le=256)
    """`best_response`: candidate moves evaluated per creator per tick."""


class CreatorsConfig(Strict):
    """Creators: they publish goods, pay production costs, earn sales and payouts."""

    count: int = Field(200, ge=1, le=10_000_000)
    """Creators at tick 0."""
    publish_rate: NonNegativeFloat = 0.5
    """Mean goods published per creator per tick (each creator's own rate varies around it)."""
    publish_elasticity: NonNegativeFloat = 1.0
    """How publishing responds to expected profit: a creator publishes at its rate × clip(1 + this × smoothed profit / (rate × unit cost), 0.1, 2), less while it loses money, more while it profits; 0 publishes at the fixed rate."""
    quality_mean: Probability = 0.5
    """Mean quality (effort) level, in [0, 1]."""
    quality_sd: NonNegativeFloat = 0.15
    """Spread of quality across creators."""
    topic_spread: NonNegativeFloat = 0.6
    """How far creators' niches scatter around their topic cluster's centre."""
    niches: Literal["clustered", "random"] = "clustered"
    """Where creators' niches start (entrants' too, unless they imitate): clustered, scattered by `topic_spread` around a topic centre drawn by `topics.creator_weights`; random, uniform on the unit sphere, belonging to no cluster (as in exposure-game setups where creators start anywhere)."""
    clickbait_share: Probability = 0.1
    """Share of creators whose goods oversell themselves (clickbait)."""
    clickbait_boost: NonNegativeFloat = 0.6
    """How much clickbait inflates the value users expect when choosing: expected = value × (1 + boost); realised value is unchanged."""
    cost_per_good: Money = 600
    """Fixed production cost of one good."""
    effort_cost: Money = 2_000
    """Production cost of quality: a good of quality q costs cost_per_good + effort_cost × q²."""
    initial_wallet: Money = 20_000
    """Money each creator holds when joining."""
    exit: ExitConfig = ExitConfig()
    """The exit rule."""
    entry: EntryConfig = EntryConfig()
    """The entry rule."""
    adaptation: AdaptationConfig = AdaptationConfig()
    """How creators change strategy in response to the rules."""


class GoodsConfig(Strict):
    """Goods: content (free) and products (priced)."""

    initial: int = Field(2_000, ge=0, le=100_000_000)
    """Goods in the catalogue at tick 0 (with staggered ages)."""
    lifetime: int = Field(20, ge=1)
    """Ticks a good stays in the catalogue after publishing."""
    product_share: Probability = 0.3
    """Probability that a published good is a product with a price rather than free content."""
    price: MoneyLogNormal = MoneyLogNormal(median=1_500.0, sigma=0.5)
    """Price of a product, in minor units (median × exp(8 × sigma) at most 1e12)."""
    key_noise: NonNegativeFloat = 0.2
    """How far a good's key scatters around its creator's niche."""


class AdvertisersConfig(Strict):
    """Advertisers: buyers of attention through ad auctions."""

    count: int = Field(20, ge=0, le=1_000_000)
    """Advertisers; 0 turns the ad market off."""
    budget_per_tick: Money = 2_000
    """Most an advertiser may spend in one tick."""
    total_budget: Money = 250_000
    """An advertiser's whole budget for the run (its wallet at tick 0)."""
    value_per_click: MoneyLogNormal = MoneyLogNormal(median=120.0, sigma=0.5)
    """What a click is worth to an advertiser, in minor units, drawn per advertiser (median × exp(8 × sigma) at most 1e12)."""
    targeting_spread: NonNegativeFloat = 0.6
    """How far advertisers' targeting vectors scatter around their topic cluster's centre."""
    click_rate: Probability = 0.08
    """Click probability of a perfectly matched ad in the top position."""
    bidding: _rule_name("bidding") = "truthful"  # type: ignore[valid-type]
    """Bidding strategy: truthful bids the value of a click; shaded a fixed fraction of it; paced scales bids to spend the total budget evenly over the run; learning picks its shading factor by a bandit (EXP3) on its own realised surplus."""
    shading: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    """Fraction of value bid by `shaded` bidders (and the starting multiplier of `paced` ones)."""
    pacing_rate: PositiveFloat = 0.5
    """How strongly `paced` bidders correct their multiplier toward the even spending rate."""
    learning_rate: PositiveFloat = 0.2
    """Step size of the `learning` bidders' multiplicative weights."""
    learning_arms: int = Field(8, ge=2, le=64)
    """Shading factors a `learning` bidder chooses among, evenly spaced in [1/arms, 1]."""


class PopulationConfig(Strict):
    """The four populations."""

    users: UsersConfig = UsersConfig()
    """Users."""
    creators: CreatorsConfig = CreatorsConfig()
    """Creators."""
    goods: GoodsConfig = GoodsConfig()
    """Goods."""
    advertisers: AdvertisersConfig = AdvertisersConfig()
    """Advertisers."""


WEIGHTS_SUM_TOLERANCE = 1e-6  # topic weights written with a few decimals sum to 1 up to rounding


class TopicsConfig(Strict):
    """The world's topic structure."""

    clusters: int = Field(8, ge=1, le=100_000)
    """Topic centres around which interests, niches and targeting cluster."""
    weights: list[NonNegativeFloat] | None = None
    """Users' shares per topic cluster, one per cluster (≥ 0, summing to 1), e.g. `[0.55, 0.25, 0.12, 0.08]`: each user (arrivals too) joins cluster c with probability weights[c]; null (the default) is uniform."""
    creator_weights: list[NonNegativeFloat] | None = None
    """Creators' shares per topic cluster, as `weights` (entrants that do not imitate too); null is uniform. Needs `population.creators.niches: clustered`."""
    advertiser_weights: list[NonNegativeFloat] | None = None
    """Advertisers' shares per topic cluster, as `weights`; null is uniform."""
    geometry: Literal["random", "orthogonal", "simplex"] = "random"
    """Where the topic centres lie: random, independent uniform unit vectors (the default); orthogonal, mutually orthogonal unit vectors (a random orthonormal set: needs clusters ≤ embedding_dim); simplex, the vertices of a regular simplex centred at the origin, every pair at cosine −1/(clusters − 1), randomly rotated (needs clusters ≤ embedding_dim + 1)."""

    @field_validator("weights", "creator_weights", "advertiser_weights")
    @classmethod
    def _shares_per_cluster(cls, weights: list[float] | None, info: ValidationInfo) -> list[float] | None:
        clusters = info.data.get("clusters")
        if weights is None or clusters is None:
            return weights
        if len(weights) != clusters:
            raise ValueError(f"{len(weights)} weights for {clusters} topics.clusters; give one share per cluster")
        total = sum(weights)
        if abs(total - 1.0) > WEIGHTS_SUM_TOLERANCE:
            raise ValueError(f"the weights sum to {total:g}; shares of the population must sum to 1")
        return weights


class LearnedConfig(Strict):
    """The `learned` rule's model: user and goods vectors fitted to the platform's own logs."""

    retrain_every: int = Field(5, ge=1)
    """Ticks between refits of the factorisation."""
    rank: int = Field(16, ge=1, le=256)
    """Dimension of the estimated user and goods vectors."""
    regularization: PositiveFloat = 10.0
    """L2 penalty of the factorisation, pulling each vector toward its prior (the platform's profile of the user, the good's key): the prior weighs as much as this many logged exposures."""
    iterations: int = Field(5, ge=1, le=100)
    """Alternating least squares sweeps per refit."""
    log_ticks: int = Field(20, ge=1)
    """Ticks of interaction logs the platform keeps for fitting."""
    feedback: Literal["explicit", "implicit"] = "explicit"
    """explicit: regress consumed (1) or not (0) on the logged exposures only; implicit: weighted ALS of Hu, Koren & Volinsky (2008) over every logged user × live good, preference 1 where the user consumed the good in the logs and 0 elsewhere, with confidence 1 + `confidence` × consumptions (learns from all-positive logs, where explicit labels are constant)."""
    confidence: NonNegativeFloat = 40.0
    """`implicit`: α, the confidence added per logged consumption of a pair (every other pair has confidence 1)."""


class CandidatesConfig(Strict):
    """Candidate mode for large catalogues: each user is scored against a candidate set instead of every live good (see docs/model.md, "Candidate mode")."""

    mode: Literal["auto", "exact", "ivf"] = "auto"
    """exact: score every live good for every user; ivf: score each user's candidates only (the goods of the inverted lists nearest to the user's group, fresh and popular goods, and a stratified random sample of the rest, weighted by the inverse of its sampling probability); auto: ivf above `auto_above` live goods, exact otherwise. Rules without candidate scores (popularity, random, shapley) and the fairness floor and creator cap always run exact. manifest.json records the mode used (`allocation_mode`)."""
    auto_above: int = Field(8_000, ge=0)
    """`auto`: live goods above which the candidate mode is used."""
    clusters: int = Field(0, ge=0, le=1_000_000)
    """Inverted lists: spherical k-means clusters of goods' keys; 0 gives ⌈√(live goods)⌉. Lists longer than half of `per_user` are cut in slabs."""
    probe: int = Field(0, ge=0, le=100_000)
    """Most lists searched per group of users (the lists nearest to the group's mean profile); 0: as many as fit in `per_user`."""
    per_user: int = Field(512, ge=1)
    """Goods from the searched lists per user: whole lists are taken, nearest first, while they fit (at least one list)."""
    fresh: int = Field(32, ge=0)
    """Newest goods added to every user's candidates."""
    popular: int = Field(32, ge=0)
    """Goods most consumed in the last `popularity_window` ticks added to every user's candidates."""
    random: int = Field(128, ge=0)
    """Goods sampled per user from the rest of the catalogue (one per stratum of equal size, strata in order of similarity to the user's group), each weighted by its stratum's size so the rest keeps its share of attention in expectation; 0 drops the rest."""
    refresh_every: int = Field(10, ge=1)
    """Ticks between k-means refits of the lists; in between, new goods join their nearest list and expired ones leave."""


MIN_TEMPERATURE = 1e-6  # allocation.temperature's bounds: see AllocationConfig.temperature
MAX_TEMPERATURE = 1e6


class AllocationConfig(Strict):
    """How the platform splits users' attention into exposures and ad slots."""

    rule: _rule_name("allocation") = "attention_softmax"  # type: ignore[valid-type]
    """The allocation rule: a registered name (`attnsim rules allocation`; see docs/rules/allocation_<rule>.md) or `module:Class` of a plug-in (docs/extending.md)."""
    params: RuleParams = {}
    """The allocation rule's own knobs, checked by the rule's `Params` model (built-in rules have none: their knobs are the keys below)."""
    temperature: Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)] = 1.0
    """Softmax temperature: toward 0 the allocation becomes the deterministic top-k, large values make it uniform. Bounded to 1e-6..1e6: below 1e-6 it is top-k already, and scores (√d·cos/T in float32) would overflow to infinity near 1e-38; above 1e6 it is uniform already."""
    ad_slots: int = Field(2, ge=0, le=16)
    """Ad exposures per user per tick (each uses one attention unit; at least one unit stays for content); 0 turns ads off."""
    ad_position_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    """Click-rate factor per ad position below the first."""
    sampling: Literal["keyed", "successive"] = "keyed"
    """How the exact mode draws feeds from the softmax (the law is the same): `keyed` gives each (user, good) its own Gumbel noise from a hash of the tick's key, so the arms of a paired sweep share their feeds wherever their scores agree (docs/sweeps.md, Seeding); `successive` draws only k uniforms per user, about 2-3x faster for the sampler, but one added or removed good reshuffles every later pick, which weakens common random numbers (docs/performance.md, Keyed sampling). The candidate mode always samples successively."""
    mask_consumed: bool = True
    """Never show a user a good it consumed within its last `consumed_memory` consumptions."""
    consumed_memory: int = Field(32, ge=1, le=4096)
    """How many recent consumptions per user the mask remembers."""
    profile_noise: NonNegativeFloat = 0.5
    """How far the platform's starting profile of a user (its query) is from the user's true interest."""
    profile_learning_rate: Probability = 0.1
    """Rate at which the platform's profile of a user moves toward what the user consumed."""
    block_elements: int = Field(4_194_304, ge=1_024)
    """Largest users × goods score block held at once; bounds the allocator's memory."""
    candidates: CandidatesConfig = CandidatesConfig()
    """Candidate mode for large catalogues (exact below `candidates.auto_above` live goods)."""
    popularity_window: int = Field(10, ge=1, le=10_000)
    """`popularity`: ticks of consumption counts that make a good popular (a sliding window)."""
    learned: LearnedConfig = LearnedConfig()
    """`learned`: the platform's matrix factorisation of its own interaction logs."""
    fairness_floor: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Modifier, any rule: each creator with live goods gets at least this share of all content exposure in expectation, through units reserved for a uniformly drawn creator (0 turns it off; see docs/rules/allocation_modifiers.md)."""
    creator_cap: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    """Modifier, any rule: no creator gets more than this share of the tick's content exposure, up to rounding (1 turns it off; see docs/rules/allocation_modifiers.md)."""
    engagement_weight: NonNegativeFloat = 0.0
    """Modifier, any rule: α in seed 002's engagement weighting, adding α·p/(p+r+c) to a good's score (p purchases, r exposures, c consumptions)."""

    @field_validator("params")
    @classmethod
    def _params_of_the_rule(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _check_params("allocation", info.data["rule"], params) if "rule" in info.data else params


class PayoutConfig(Strict):
    """How the creator payout pool is funded and divided."""

    rule: _rule_name("payout") = "exposure"  # type: ignore[valid-type]
    """The payout rule: a registered name (`attnsim rules payout`; see docs/rules/payout_<rule>.md) or `module:Class` of a plug-in (docs/extending.md)."""
    params: RuleParams = {}
    """The payout rule's own knobs, checked by the rule's `Params` model (built-in rules have none: `backward_discount` is below)."""
    pool_share: Probability = 0.5
    """Share of the platform's revenue of the tick (take plus ad spend) paid into the creator pool (never more than the platform holds)."""
    backward_discount: Probability = 0.5
    """`backward`: γ, the weight of the k-th ranked drop is γ^(k−1) (0 pays each user's top creator its margin over the runner-up; 1 pays every creator its own best value)."""

    @field_validator("params")
    @classmethod
    def _params_of_the_rule(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _check_params("payout", info.data["rule"], params) if "rule" in info.data else params


class AuctionConfig(Strict):
    """How ad slots are sold."""

    format: _rule_name("auction") = "second_price"  # type: ignore[valid-type]
    """Auction format: second_price (VCG per click), first_price, or gsp (next-price)."""
    reserve_price: Money = 0
    """Lowest price per click; lower bids do not take part."""
    pricing: Literal["per_click", "per_impression"] = "per_click"
    """What advertisers pay for: each click at the auction price, or each impression at the price × its predicted click rate."""


class ClickbaitPenaltyConfig(Strict):
    """A penalty on goods whose consumption rate runs far above the value users get from them."""

    threshold: NonNegativeFloat = 0.0
    """Gap (consumption rate − mean realised value per consumption) above which a good is penalised; 0 turns the penalty off."""
    strength: Probability = 0.5
    """Share of a penalised good's payout weight and allocation weight taken away."""
    min_exposures: int = Field(20, ge=1)
    """Lifetime exposures a good needs before the penalty judges it."""


class ExposurePayConfig(Strict):
    """A direct creator income source: money paid to a creator per exposure and per consumption of its goods, as in exposure-game papers whose producers are paid per exposure. Funded from outside the economy (a creator fund, injected into the ledger like user income), under the payout pool's eligibility (alive, at the quality bar, admitted by the defences); adapting creators count it in their expected profit."""

    per_exposure: Money = 0
    """Paid per exposure of a creator's goods this tick; 0 (with `per_engagement` 0, the default) turns the source off."""
    per_engagement: Money = 0
    """Paid per consumption of a creator's goods this tick."""
    budget_per_tick: Money | None = None
    """Most paid in one tick: when what is owed exceeds it, the budget is split pro rata to what each creator is owed, exactly (largest remainders); null (the default) is uncapped."""

    @model_validator(mode="after")
    def _budget_needs_a_rate(self) -> ExposurePayConfig:
        if self.budget_per_tick is not None and self.per_exposure == 0 and self.per_engagement == 0:
            raise PydanticCustomError(
                "budget_without_rate", "a budget with per_exposure and per_engagement both 0 pays nothing; set a rate", {"subkey": "budget_per_tick"}
            )
        return self


class CirculationConfig(Strict):
    """How money moves."""

    platform_take_rate: Probability = 0.3
    """Share of each purchase's price the platform keeps."""
    platform_initial_wallet: Money = 0
    """Money the platform holds at tick 0 (funds attention rewards before revenue comes in)."""
    attention_reward: Money = 0
    """Paid by the platform to a user per unit of attention spent (seed 001's incentive), while the platform can pay."""
    clickbait_penalty: ClickbaitPenaltyConfig = ClickbaitPenaltyConfig()
    """The clickbait penalty."""
    min_quality: Probability = 0.0
    """Minimum-quality bar, the creator programme's eligibility: creators whose quality (effort) is below it may not publish and are paid nothing from the payout pool (see docs/rules/market_rules.md); 0 turns it off."""
    creator_payout: PayoutConfig = PayoutConfig()
    """The creator payout rule."""
    exposure_pay: ExposurePayConfig = ExposurePayConfig()
    """Pay per exposure or engagement of creators' goods (off by default), e.g. `{per_exposure: 5, budget_per_tick: 20000}`."""
    auction: AuctionConfig = AuctionConfig()
    """The ad auction."""


class AgentPanelsConfig(Strict):
    """Per-agent time series (`agents/*.parquet`) for a fixed, seeded sample of agents; off unless set."""

    every: int = Field(1, ge=1, le=1_000_000)
    """Record the sampled agents on tick 1, every `every` ticks after it, and on the last tick."""
    sample: int = Field(100, ge=1, le=1_000_000)
    """Agents sampled from each population (users, creators, advertisers), or all of a smaller one; users and creators who join later enter the sample at the same rate."""


class MetricsConfig(Strict):
    """What the metrics collector samples and summarises."""

    homogenization_pairs: int = Field(256, ge=1, le=100_000)
    """User pairs in the seeded sample behind the homogenization metric; a pair with a user who left is replaced by a fresh pair of alive users."""
    homogenization_window: int | None = Field(None, ge=1, le=1_000_000)
    """Ticks of consumption the homogenization metric compares (the goods each user consumed in the last this many ticks); null (the default) compares everything consumed since the user entered the sample."""
    summary_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    """Fraction of final ticks averaged in summary.json."""
    agent_panels: AgentPanelsConfig | None = None
    """Agent panels (see docs/notebooks.md), e.g. `{every: 5, sample: 200}`; null (the default) records none and costs nothing."""


class SweepConfig(Strict):
    """A grid of scenario variants and replications, for `attnsim sweep`."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted scenario keys mapped to the values to try; runs cover the Cartesian product."""
    replications: int = Field(1, ge=1, le=10_000)
    """Runs per grid point, each with its own derived seed."""
    seeding: Literal["common", "independent"] = "common"
    """`common` (common random numbers): replication r of every grid point runs from the same seed, so arms share users, creators, goods and shocks and are compared in pairs; `independent`: every point and replication gets its own seed."""
    design: Literal["grid", "lhs", "sobol"] = "grid"
    """`grid`: the Cartesian product of `grid`; `lhs` (Latin hypercube) or `sobol` (scrambled Sobol sequence, scipy.stats.qmc): `samples` points spread over `ranges`, each crossed with the grid's points; `attnsim compare` then writes a sensitivity table."""
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(default_factory=dict)
    """For `lhs` and `sobol`: continuous dotted scenario keys mapped to `[low, high]`."""
    samples: int = Field(16, ge=2, le=100_000)
    """For `lhs` and `sobol`: design points drawn over `ranges` (a power of 2 suits `sobol`)."""

    @model_validator(mode="after")
    def _design_has_ranges(self) -> SweepConfig:
        if self.design == "grid" and self.ranges:
            raise ValueError("ranges are for design lhs or sobol; design grid takes values in grid")
        if self.design != "grid" and not self.ranges:
            raise ValueError(f"design {self.design} needs ranges: dotted keys mapped to [low, high]")
        for key, (low, high) in self.ranges.items():
            if not low < high:
                raise ValueError(f"range of {key!r} must have low < high (got [{low}, {high}])")
            if key in self.grid:
                raise ValueError(f"{key!r} is both a grid axis and a range")
        return self

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
        return grid


# --- adversaries, defences and privacy (docs/adversarial.md, docs/privacy.md) -----------------------


class BotsConfig(Strict):
    """Bot users: fake accounts among the users that consume what they are shown and click ads. They have no welfare (no utility, no purchases, no churn, no income) and are left out of every user-welfare metric."""

    share: Probability = 0.0
    """Share of users (at tick 0 and among arrivals) that are bots; 0 turns bots off."""
    consume_rate: Probability = 1.0
    """Probability that a bot consumes each good it is shown (whatever its value): fake consumptions move popularity, engagement payout and the engagement modifier."""
    click_rate: Probability = 0.5
    """Probability that a bot clicks each ad it is shown of an advertiser it targets (whatever the match)."""
    target: Literal["rivals", "any"] = "rivals"
    """Whose ads a bot clicks: rivals, every advertiser but the bot's sponsor (competitor click fraud: the sponsor drains its rivals' budgets); any, every advertiser's (its sponsor's own included)."""
    fee_per_click: Money = 0
    """What the bot's sponsoring advertiser pays the fraud operator per fake click (the fraudster's revenue, through the ledger; paid while the sponsor can pay)."""


class FarmsConfig(Strict):
    """Engagement farms for hire: creators buy fake consumptions of their goods, which the farm's bot accounts perform in place of their feed."""

    share: Probability = 0.0
    """Share of creators (at tick 0) that hire a farm; 0 turns farms off (farms need bots: `adversaries.bots.share` > 0)."""
    orders: int = Field(5, ge=0, le=1_000_000)
    """Fake consumptions a client orders per tick, spread over its live goods (performed by active bots, as far as their attention lasts)."""
    fee: Money = 10
    """What a client pays the fraud operator per fake consumption delivered (orders shrink to what its wallet covers)."""


class SybilsConfig(Strict):
    """Sybil creators: an owner operating several creator identities that publish near-clones of the same niche and quality; all identities' income counts for the owner."""

    owners: int = Field(0, ge=0, le=1_000_000)
    """Sybil owners among the creators at tick 0; 0 turns sybils off."""
    identities: int = Field(3, ge=2, le=1_000)
    """Identities each owner operates (k); owners × identities may not exceed `population.creators.count`."""
    clone_noise: NonNegativeFloat = 0.02
    """How far each identity's niche scatters around its owner's (0: exact clones; goods keys add `goods.key_noise` on top)."""


class AdversariesConfig(Strict):
    """Adversarial supply and demand, each off by default (clickbait stays under `population.creators`)."""

    bots: BotsConfig = BotsConfig()
    """Bot users and click fraud."""
    farms: FarmsConfig = FarmsConfig()
    """Engagement farms for hire."""
    sybils: SybilsConfig = SybilsConfig()
    """Sybil creators."""


class ClickFilterConfig(Strict):
    """A click-fraud filter: judges every billable ad event (clicks per click, impressions per impression); flagged events are refunded to the advertiser."""

    detection: Probability = 0.9
    """Probability that a bot's billable event is flagged."""
    false_positive: Probability = 0.02
    """Probability that a human's billable event is flagged (refunded although honest)."""
    refunds_from: Literal["platform", "pool"] = "platform"
    """Who bears the refunds: platform, out of its own revenue (the creator pool is computed on gross ad spend); pool, out of the revenue the creator pool is a share of (creators share the cost)."""


class CloneDetectionConfig(Strict):
    """Clone detection: a new good whose key is at least `threshold` cosine-similar to a live good of another creator is flagged as a clone and earns no payout for its lifetime."""

    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.98
    """Cosine similarity at or above which a new good counts as a clone."""


class IdentityGateConfig(Strict):
    """Payout eligibility: creators must have been around `min_tenure` ticks and, if `verified`, pass identity verification (one verified identity per person)."""

    min_tenure: int = Field(0, ge=0)
    """Ticks since joining before a creator may receive payouts (0: none)."""
    verified: bool = True
    """Require a verified identity: a sybil owner verifies one identity, its others earn no payout."""
    failure_rate: Probability = 0.02
    """Probability that an honest creator fails verification (drawn once per creator): it earns no payout."""


class AuditConfig(Strict):
    """Audits: each tick a share of creators is audited; a creator caught (sybil identity or farm client) pays a fine to the platform. Each audit costs the platform money that leaves the economy."""

    rate: Probability = 0.05
    """Probability that a creator is audited on a tick."""
    detection: Probability = 0.8
    """Probability that an audit of a fraudulent creator catches it."""
    false_positive: Probability = 0.01
    """Probability that an audit of an honest creator wrongly finds fraud."""
    fine: Money = 2_000
    """Fine of a creator found at fault (at most what it holds), paid to the platform."""
    cost: Money = 20
    """What one audit costs the platform (paid while it can pay; leaves the economy)."""


class DefencesConfig(Strict):
    """Platform defences, each a market rule with a cost and an error rate (see docs/adversarial.md and `simulator/rules/defences.py`); a section that is null (the default) is off, and the sections compose."""

    click_filter: ClickFilterConfig | None = None
    """The click-fraud filter, e.g. `{detection: 0.9, false_positive: 0.02}`."""
    clone_detection: CloneDetectionConfig | None = None
    """Clone detection on key similarity, e.g. `{threshold: 0.98}`."""
    identity_gate: IdentityGateConfig | None = None
    """Minimum tenure / verified identity for payout, e.g. `{min_tenure: 5, verified: true}`."""
    audits: AuditConfig | None = None
    """Audits with fines, e.g. `{rate: 0.05, fine: 2000}`."""


PRIVACY_MECHANISMS = ("none", "randomized_response", "laplace", "gaussian")


class PrivacyConfig(Strict):
    """Differential privacy of what the platform learns from (the `learned` rule's logs, the popularity counts, the engagement counters); see docs/privacy.md for the guarantee of each mechanism."""

    @field_validator("epsilon", mode="before")
    @classmethod
    def _infinity_by_name(cls, value: Any) -> Any:
        """`inf` (a string, as JSON and --set write it) is ε = ∞."""
        return float("inf") if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf", "infinity") else value

    @field_serializer("epsilon", when_used="json")
    def _infinity_as_text(self, value: float) -> float | str:
        return "inf" if value == float("inf") else value

    mechanism: Literal[PRIVACY_MECHANISMS] = "none"  # type: ignore[valid-type]
    """none; randomized_response: each logged consumption outcome is reported truthfully with probability e^ε/(1+e^ε) and flipped otherwise (local, ε-DP per logged interaction); laplace / gaussian: noise of scale 1/ε (Laplace) or √(2 ln(1.25/δ))/ε (Gaussian) on each good's consumption count of the tick before the platform records it (central, (ε[, δ])-DP per interaction)."""
    epsilon: float = Field(float("inf"), gt=0.0, allow_inf_nan=True)
    """ε of the mechanism, > 0; `inf` (the default) is no noise at all: the run equals the non-private one byte for byte."""
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.0001
    """δ of the `gaussian` mechanism (the default 0.0001 is written without an exponent because YAML 1.1 reads `1e-06` as a string; write `1.0e-6`)."""


class Scenario(Strict):
    """A fully resolved scenario: what `simulator.run` needs, with every default filled in."""

    name: str = Field("scenario", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Name of the scenario; names run directories, so letters, digits, `_`, `.` and `-` only."""
    seed: int = Field(0, ge=0, le=2**63 - 1)
    """Seed of the run's random generator: the same seed gives the same bytes."""
    ticks: int = Field(100, ge=1, le=1_000_000)
    """Ticks to run."""
    embedding_dim: int = Field(16, ge=1, le=1024)
    """Dimension d of interest, niche, key and targeting vectors."""
    topics: TopicsConfig = TopicsConfig()
    """The topic structure."""
    population: PopulationConfig = PopulationConfig()
    """The populations."""
    allocation: AllocationConfig = AllocationConfig()
    """The allocation stage."""
    circulation: CirculationConfig = CirculationConfig()
    """The circulation stage."""
    metrics: MetricsConfig = MetricsConfig()
    """The metrics collector."""
    sweep: SweepConfig | None = None
    """Optional sweep grid and replications."""
    adversaries: AdversariesConfig = AdversariesConfig()
    """Bots, engagement farms and sybil creators (off by default)."""
    defences: DefencesConfig = DefencesConfig()
    """The platform's defences against them (off by default)."""
    privacy: PrivacyConfig = PrivacyConfig()
    """Differential privacy of the platform's learning inputs (off by default)."""

    @field_validator("topics")
    @classmethod
    def _geometry_fits_the_dimension(cls, topics: TopicsConfig, info: ValidationInfo) -> TopicsConfig:
        dim = info.data.get("embedding_dim")
        room = {"orthogonal": dim, "simplex": dim + 1} if dim is not None else {}
        if topics.geometry in room and topics.clusters > room[topics.geometry]:
            raise PydanticCustomError(
                "geometry_exceeds_dimension",
                "{clusters} {geometry} topic centres need embedding_dim ≥ {needed} (it is {dim}); lower topics.clusters or raise embedding_dim",
                {"clusters": topics.clusters, "geometry": topics.geometry, "dim": dim,
                 "needed": topics.clusters - (topics.geometry == "simplex"), "subkey": "geometry"},
            )
        return topics

    @field_validator("population")
    @classmethod
    def _niches_use_the_creator_weights(cls, population: PopulationConfig, info: ValidationInfo) -> PopulationConfig:
        topics = info.data.get("topics")
        if topics is not None and topics.creator_weights is not None and population.creators.niches == "random":
            raise PydanticCustomError(
                "random_niches_with_weights",
                "random niches belong to no topic cluster, so topics.creator_weights would be ignored; use niches: clustered or drop the weights",
                {"subkey": "creators.niches"},
            )
        return population

    @field_validator("adversaries")
    @classmethod
    def _sybils_fit_the_creators(cls, adversaries: AdversariesConfig, info: ValidationInfo) -> AdversariesConfig:
        population = info.data.get("population")
        sybils = adversaries.sybils
        if population is not None and sybils.owners * sybils.identities > population.creators.count:
            raise PydanticCustomError(
                "sybils_exceed_creators",
                "{owners} sybil owners × {identities} identities = {needed} creators, more than the {count} of population.creators.count",
                {"owners": sybils.owners, "identities": sybils.identities, "needed": sybils.owners * sybils.identities,
                 "count": population.creators.count, "subkey": "sybils.owners"},
            )
        return adversaries

    @model_validator(mode="after")
    def _money_fits_int64(self) -> Scenario:
        """The run's worst-case money must fit the ledger's int64 balances, checked before it runs.

        The total is every wallet at the start plus every injection over the run: users (at tick 0
        and the expected arrivals) × (initial_wallet + income_per_tick × ticks), creators (count ×
        (1 + entry.rate × ticks): entrants bring capital) × initial_wallet, advertisers ×
        total_budget, and the platform's wallet. Everything else moves money between wallets, so
        no balance or sum of balances exceeds it. One tick's ad value (every user clicking every
        ad slot at the largest click value) is bounded the same way. The creator fund
        (`circulation.exposure_pay`) injects at most its budget, or every exposure paid at both rates. Both must stay below 2^62.
        """
        pop, ticks = self.population, self.ticks
        users = pop.users.count + pop.users.arrivals_per_tick * ticks
        creators = pop.creators.count * (1.0 + pop.creators.entry.rate * ticks)
        terms = {
            "population.users.income_per_tick": users * pop.users.income_per_tick * ticks,
            "population.users.initial_wallet": users * pop.users.initial_wallet,
            "population.creators.initial_wallet": creators * pop.creators.initial_wallet,
            "population.advertisers.total_budget": pop.advertisers.count * pop.advertisers.total_budget,
            "circulation.platform_initial_wallet": self.circulation.platform_initial_wallet,
        }
        fund_key = "budget_per_tick" if self.circulation.exposure_pay.budget_per_tick is not None else "per_exposure"
        terms[f"circulation.exposure_pay.{fund_key}"] = self._exposure_fund_over_the_run(users)
        total = sum(terms.values())
        largest_click = pop.advertisers.value_per_click.median * math.exp(MONEY_SIGMAS * pop.advertisers.value_per_click.sigma)
        ad_value = users * self.allocation.ad_slots * largest_click
        if total > MONEY_TOTAL_LIMIT:
            key = max(terms, key=lambda name: terms[name])
            raise PydanticCustomError(
                "money_overflow",
                "the run's money could reach {total} minor units (users × (initial_wallet + income_per_tick × ticks) + creators × initial_wallet + advertisers × total_budget + the platform's wallet + the creator fund), "
                "more than the ledger's int64 balances hold with headroom (2^62 = {limit}); lower this key, the populations or ticks",
                {"total": f"{total:.3g}", "limit": f"{MONEY_TOTAL_LIMIT:.3g}", "subkey": key},
            )
        if ad_value > MONEY_TOTAL_LIMIT:
            raise PydanticCustomError(
                "money_overflow",
                "one tick's ad value could reach {total} minor units (users × ad_slots × median × exp(8 × sigma) of value_per_click), more than 2^62 = {limit}; lower the click value or the populations",
                {"total": f"{ad_value:.3g}", "limit": f"{MONEY_TOTAL_LIMIT:.3g}", "subkey": "population.advertisers.value_per_click.median"},
            )
        return self

    def _exposure_fund_over_the_run(self, users: float) -> float:
        """Most the creator fund (`circulation.exposure_pay`) injects over the run: its budget per
        tick when capped, else every user's whole budget paid at both rates each tick."""
        pay, ticks = self.circulation.exposure_pay, self.ticks
        if pay.budget_per_tick is not None:
            return pay.budget_per_tick * ticks
        return users * self.population.users.budget_max * (pay.per_exposure + pay.per_engagement) * ticks

    @field_validator("allocation")
    @classmethod
    def _allocation_rule_serves_the_population(cls, allocation: AllocationConfig, info: ValidationInfo) -> AllocationConfig:
        """A rule may refuse populations it cannot serve (`AllocationRule.population_problem`)."""
        population = info.data.get("population")
        if population is None:
            return allocation
        rule = registry("allocation").resolve(allocation.rule)
        problem = rule.population_problem(rule.Params.model_validate(allocation.params), population)
        if problem is not None:
            raise PydanticCustomError("rule_cannot_serve_population", "{message}", {"message": problem[1], "subkey": problem[0]})
        return allocation



@dataclass(frozen=True)
class ScenarioIssue:
    """One problem with a scenario, located in the file (or the --set option) it came from."""

    source: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {_key_text(self.key)}: {self.message}"


def _key_text(key: str) -> str:
    """A key as an error line shows it: as written, or (holding blanks or control characters, or
    longer than 200 characters) quoted and cut, so the line still reads FILE:LINE:COL: key: message."""
    if key and len(key) <= 200 and key.isprintable() and not any(char.isspace() for char in key):
        return key
    text = repr(key)
    text = text if len(text) <= 80 else f"{text[:77]}..."
    return "".join(f"\\x{ord(char):02x}" if char.isspace() else char for char in text)


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
        """The position of `key`, or of its nearest written ancestor, or of the one override
        written below it (`--set creators.count=5` is where the unknown `creators` came from)."""
        parts = key.split(".") if key else []
        if key and key not in self.positions and self.written_below(key) is not None:
            parts = []  # a section built by overrides (`--set price.sigma=4`): point at the override, not the file's ancestor
        while parts:
            found = self.positions.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        below = self.written_below(key)
        return self.positions[below] if below is not None else self.default

    def written_below(self, key: str) -> str | None:
        """The full dotted key of the first override written under `key` (None if there is none)."""
        if not key:
            return None
        for written, (source, _line, _column) in self.positions.items():
            if written.startswith(key + ".") and (source == "--set" or source.startswith("overrides[")):
                return written
        return None


MAX_YAML_DEPTH = 32  # a scenario nests a handful of levels; the YAML parser recurses per level


class ScenarioLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e308` and `2.5e-3` as floats as YAML 1.2 does (YAML 1.1, which
    PyYAML follows, wants a dot and a signed exponent, so it read them as strings)."""


ScenarioLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?([0-9][0-9_]*)?\.?[0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def _check_depth(text: str, source: str) -> None:
    """Refuse YAML nested deeper than MAX_YAML_DEPTH before the (recursive) parser sees it.

    Uses the scanner's token stream, which is not recursive; a scanning error is left for the
    parser to report with its own message."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=ScenarioLoader):
            if isinstance(token, (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    mark = token.start_mark
                    raise ScenarioError(
                        [ScenarioIssue(source, mark.line + 1, mark.column + 1, "<yaml>", f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep; a scenario is a few levels of keys")]
                    )
            elif isinstance(token, (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)):
                depth -= 1
    except yaml.YAMLError:
        return


def _compose_with_positions(text: str, source: str) -> _Located:
    """Parse YAML safely, keeping the line and column of each mapping key."""
    positions: dict[str, Position] = {}
    _check_depth(text, source)
    try:
        node = yaml.compose(text, Loader=ScenarioLoader)
    except RecursionError:
        raise ScenarioError([ScenarioIssue(source, 1, 1, "<yaml>", "the YAML is nested too deeply; a scenario is a few levels of keys")]) from None
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

    issues: list[ScenarioIssue] = []
    seen: set[int] = set()
    aliased: list[bool] = []

    def walk(current: yaml.Node, prefix: str, where: Position) -> None:
        if id(current) in seen:  # an alias: the same node again (its marks are the anchor's)
            if not aliased:  # one line, at the key that uses it: a "billion laughs" file has thousands
                aliased.append(True)
                issues.append(ScenarioIssue(*where, prefix or "<root>", "YAML anchors and aliases are not allowed in scenarios"))
            return
        seen.add(id(current))
        children = current.value if isinstance(current, (yaml.MappingNode, yaml.SequenceNode)) else []
        if isinstance(current, yaml.SequenceNode):
            for child in children:
                walk(child, prefix, where)
            return
        for key_node, value_node in children:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            key_at = (source, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in positions:
                issues.append(ScenarioIssue(*key_at, key, f"duplicate key (first written at line {positions[key][1]})"))
                continue
            positions[key] = key_at
            walk(value_node, key, key_at)

    walk(node, "", (source, node.start_mark.line + 1, node.start_mark.column + 1))
    if issues:
        raise ScenarioError(issues)
    try:
        data = ScenarioLoader(text).get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        tag = re.search(r"for the tag '([^']*)'", problem)
        if tag:  # !!python/object/apply:... and friends: the safe loader constructs no objects
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            problem = f"the YAML tag {name} is not allowed; a scenario is plain data (numbers, strings, lists, mappings), and tags that construct objects or run code are refused"
            raise ScenarioError([ScenarioIssue(source, line, col, "<yaml>", problem)]) from None
        raise ScenarioError([ScenarioIssue(source, line, col, "<yaml>", f"refused YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ScenarioError([ScenarioIssue(source, 1, 1, "<root>", "a scenario must be a YAML mapping of keys to values")])
    return _Located(data, positions, (source, 1, 1))


def parse_override_value(text: str) -> Any:
    """Parse a --set value as a YAML scalar, so `0.5` is a float and `true` a bool."""
    try:
        value = yaml.load(text, Loader=ScenarioLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError):  # not YAML (or absurdly nested): the text as a string
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key inside nested dicts, creating the sections on the way."""
    parts = key.split(".")
    if not all(parts):
        raise KeyError("an override key is dotted names, like allocation.temperature")
    if len(parts) > 2 and parts[0] == "sweep" and parts[1] in ("grid", "ranges"):
        parts = [*parts[:2], ".".join(parts[2:])]  # a grid axis or range is itself a dotted scenario key
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise KeyError(f"{part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _section_keys(loc: list[str]) -> list[str]:
    """The keys allowed in the section at `loc` (a list of field names from the root)."""
    model: Any = Scenario
    for part in loc:
        info = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if info is None:
            return []
        options = [a for a in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not options:
            return []
        model = options[0]
    return list(model.model_fields)


MAX_ECHO = 80  # characters of a bad value echoed back in an error line


def shown(value: Any) -> str:
    """`repr(value)`, cut to MAX_ECHO characters: an error line never echoes a 900 KB value."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else f"{text[: MAX_ECHO - 3]}... ({len(text):,} characters)"


def did_you_mean(word: str, choices: list[str]) -> str:
    """`; did you mean 'X'?` for the closest of `choices` (difflib), or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _issues_from_validation(exc: ValidationError, located: _Located) -> list[ScenarioIssue]:
    issues = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]] + ([error["ctx"]["subkey"]] if "subkey" in error.get("ctx", {}) else [])
        key = ".".join(loc) or "<root>"
        message = error["msg"]
        source, line, col = located.locate(key)
        if error["type"] == "extra_forbidden":
            hint = did_you_mean(loc[-1], _section_keys(loc[:-1]))
            message = f"unknown key{hint or ' (allowed keys are listed in docs/scenario.md)'}"
            key = located.written_below(key) or key  # the full dotted key as it was typed
        elif error["type"] == "literal_error":
            expected = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
            message = f"unknown name {shown(error.get('input'))}{did_you_mean(str(error.get('input'))[:200], expected)}; {message.lower()}"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif "input" in error and not isinstance(error["input"], dict):
            message = f"{message} (got {shown(error['input'])})"
        below = located.written_below(key) if key not in located.positions else None
        if below is not None and error["type"] != "extra_forbidden":  # `--set allocation.temperature.x=1`
            section = isinstance(error.get("input"), dict) and bool(_section_keys(key.split(".")))
            if not section:  # a section's own check (built by --set) stays at the section's key
                message = f"{message} ({key} is a value, not a section)" if isinstance(error.get("input"), dict) else message
                key = below
        issues.append(ScenarioIssue(source, line, col, key, message))
    return issues


def _validate_sweep(scenario: Scenario, located: _Located) -> list[ScenarioIssue]:
    """Each grid value must make a valid scenario on its own."""
    if scenario.sweep is None:
        return []
    return _grid_issues(scenario.model_dump(exclude={"sweep"}), scenario.sweep.grid, located)


def _grid_issues_of_invalid(located: _Located) -> list[ScenarioIssue]:
    """The grid values' problems of a scenario that failed validation elsewhere (every problem is
    reported at once): checked on the scenario without its sweep block, when that one is valid."""
    sweep = located.data.get("sweep")
    grid = sweep.get("grid") if isinstance(sweep, dict) else None
    if not isinstance(grid, dict):
        return []
    try:
        base = Scenario.model_validate({key: value for key, value in located.data.items() if key != "sweep"})
    except ValidationError:
        return []  # the base's own problems are already reported
    axes = {str(key): values for key, values in grid.items() if isinstance(values, list)}
    return _grid_issues(base.model_dump(exclude={"sweep"}), axes, located)


def _grid_issues(base: dict[str, Any], grid: dict[str, list[Any]], located: _Located) -> list[ScenarioIssue]:
    issues: list[ScenarioIssue] = []
    for key, values in grid.items():
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
    source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None, *, overrides_from: str = "overrides"
) -> Scenario:
    """Read, override and validate a scenario; raise ScenarioError listing every problem.

    `source` is a path to a YAML file or an already-parsed dict. `overrides` maps dotted keys
    (as `attnsim run --set` takes them) to values applied on top before validation; their
    problems are located at `overrides['dotted.key']:1:1`, or with `overrides_from="--set"` at
    `--set:N:1` for the N-th override (the command line's own options).
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
        where = ("--set", index, 1) if overrides_from == "--set" else (f"overrides[{key!r}]", 1, 1)
        try:
            _apply_override(located.data, key, value)
        except KeyError as exc:
            issues.append(ScenarioIssue(*where, key, str(exc.args[0])))
            continue
        located.positions[key] = where
    try:
        scenario = Scenario.model_validate(located.data)
    except ValidationError as exc:
        raise ScenarioError(issues + _issues_from_validation(exc, located) + _grid_issues_of_invalid(located)) from None
    if issues:
        raise ScenarioError(issues)
    issues = _validate_sweep(scenario, located)
    if issues:
        raise ScenarioError(issues)
    return scenario


def with_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """A copy of a validated scenario with dotted-key overrides applied and validated."""
    return load_scenario(scenario.model_dump(), overrides)



def schema_reference() -> str:
    """docs/scenario.md: every key with its type, default and meaning, from the schema itself."""
    lines = [
        "# Scenario reference",
        "",
        "Generated from `simulator/scenario/schema.py` by `python -m simulator.scenario.schema > docs/scenario.md`;",
        "a test fails when this page and the schema disagree. Unknown keys are errors.",
        "Money is in integer minor units; attention in integer units (one per exposure).",
        "",
        "Bounds that keep a run's numbers representable, checked at validation (exit 2, located): every float knob",
        "without a narrower range lies within ±1e9 and is finite; every money knob (Money) within 0..1e12, and so is",
        "a MoneyLogNormal's largest likely draw, median × exp(8 × sigma) (sigma at most 4). The run's worst-case money",
        "total, users (at tick 0 plus arrivals_per_tick × ticks) × (initial_wallet + income_per_tick × ticks) +",
        "creators (count × (1 + entry.rate × ticks), entrants bring capital) × initial_wallet + advertisers ×",
        "total_budget + platform_initial_wallet, must stay below 2^62 (half of int64: the ledger's sums of totals cannot",
        "overflow), and so must one tick's ad value (users × ad_slots × the largest click value); the error points at",
        "the largest term's key.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            annotation = info.annotation
            options = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
            nested = options[0] if isinstance(options[0], type) and issubclass(options[0], BaseModel) else None
            if nested is not None and not issubclass(nested, LogNormal):
                kind = "section" if len(options) == len(getattr(annotation, "__args__", (annotation,))) else "optional section"
                lines.append(f"| `{key}` | {kind} | | {info.description or ''} |")
                walk(nested, f"{key}.")
                continue
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump()
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            if "Literal" in str(annotation):
                type_name = " \\| ".join(f"`{value}`" for value in annotation.__args__)
            lines.append(f"| `{key}` | {type_name} | `{default!r}` | {info.description or ''} |")

    walk(Scenario, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_reference(), end="")
