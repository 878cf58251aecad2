"""Stage 4, the creators' side: after money has moved, creators adapt their strategy.

A creator's strategy is its niche (a unit topic vector its goods' keys scatter around) and its
effort (quality, which costs `effort_cost × q²` per good). Each tick every creator tries to
raise its own expected profit under the current rules (`creators.adaptation.rule`):

- `static`: never changes; supply diversity stays where it started.
- `gradient`: the niche takes an evolution-strategies step on the creator's own evidence —
  its live goods are noisy copies of its niche, so the goods that earned more this tick show
  which way to move: toward the earnings-weighted deviation of their keys (projected back to
  unit norm). Effort, whose payoff one tick's goods are far too noisy to show, climbs the
  marginal expected profit of the market model below by `effort_step`.
- `best_response`: evaluates `candidates` sampled moves (plus staying put) with a model of the
  market under the current rules, and takes the best.

The market model (`_AudienceModel`) asks the rules in force, never their names: over a sample of
this tick's active users, a candidate good's exposures are the allocation rule's own model of its
selection (`audience_exposures`: by default its softmax weight, `audience_scores`, against the
rule's scores of this tick's catalogue; the best k for `top_k`; the Shapley mediator's share for
`shapley`); users consume it by their logit choice (under `users.choice: top_n`, scaled by the
share of the goods beating the outside option each user took, `choice.chosen_share`); what it earns per exposure is the payout
rule's own `marginal` (for the user-game rules, the candidate inserted into each sampled user's
game of this tick, with the same rank weights as the real split) times what a unit of payout
weight paid this tick; plus sales and the pay per exposure and engagement (`circulation.exposure_pay`,
at this tick's rates after the budget's cap), minus production cost. What a good "earned" this tick, for the
niche step, is its real payout weight times that rate plus its sales and its pay per exposure.
"""

from __future__ import annotations

import numpy as np

from simulator.market.catalogue import Catalogue
from simulator.market.outcomes import Allocation, Consumption, Settlement
from simulator.market.populations import meets_quality_bar, production_cost, unit_rows
from simulator.market.state import FLOAT, MarketState
from simulator.market.streams import EntityDraws
from simulator.rules import RuleSet
from simulator.rules.payout import Probe, contributions
from simulator.scenario.schema import Scenario
from simulator.stages.choice import chosen_share, expected_beats
from simulator.stages.exposure_pay import effective_rates

AUDIENCE_SAMPLE = 256  # users whose profiles a best-responding creator models the market with


def adapt(
    state: MarketState,
    allocation: Allocation,
    consumption: Consumption,
    settlement: Settlement,
    rules: RuleSet,
    scenario: Scenario,
    rng: np.random.Generator,
) -> None:
    cfg = scenario.population.creators.adaptation
    rows = np.flatnonzero(state.creators.alive[: state.creators_born])
    if cfg.rule == "static" or len(rows) == 0 or len(allocation.users) == 0:
        return
    activity = settlement.good_weights
    total_activity = activity.sum()
    # What one unit of a payout weight paid this tick (the ledger still holds the tick's flows).
    payout_rate = state.ledger.flows.get("creator_payouts", 0) / total_activity if total_activity > 0 else 0.0
    # The audience: the active users with the smallest keyed uniforms, so the same users in every arm that has them active.
    sample = EntityDraws.of(rng).stream("audience").order(allocation.users)[:AUDIENCE_SAMPLE]
    # The sample's contributions only: for every active user they cost more than the whole market model.
    market = _AudienceModel(
        state, rows, allocation.users[sample], contributions(state, allocation, consumption, sample), len(allocation.users),
        payout_rate, rules, scenario,
        effective_rates(scenario.circulation.exposure_pay, settlement.exposure_pay_fill),
        chosen_share(_beats_per_user(state, allocation, consumption, scenario, sample), scenario.population.users.choice),
    )
    if cfg.rule == "gradient":
        earnings = payout_rate * activity + _sales_per_good(state, allocation, consumption, scenario)
        if settlement.exposure_owed is not None:
            earnings = earnings + settlement.exposure_pay_fill * settlement.exposure_owed
        _niche_step(state, earnings, scenario)
        _effort_step(state, rows, market, scenario)
    else:
        _best_response(state, rows, market, scenario, rng)


def _beats_per_user(
    state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario, sample: np.ndarray | None = None
) -> np.ndarray:
    """Per active user (or only the `sample` of them, indices into the allocation's users): the
    expected number of this tick's shown exposures that beat the outside option (the logit
    probability of each, from its realised value, clickbait and price)."""
    users_cfg = scenario.population.users
    goods = state.goods
    pick = slice(None) if sample is None else sample
    if users_cfg.choice.model == "independent":  # the count only scales choices under a cap
        return np.zeros(len(allocation.users[pick]))
    exposures = allocation.exposures[pick]
    shown = exposures >= 0
    rows = np.maximum(exposures, 0)
    promised = consumption.value[pick] * (1.0 + scenario.population.creators.clickbait_boost * goods.clickbait[rows])
    surplus = promised - goods.price[rows] / max(users_cfg.willingness_to_pay, 1) - users_cfg.outside_option
    return np.where(shown, expected_beats(surplus, users_cfg.choice_noise), 0.0).sum(axis=1)


def _sales_per_good(state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario) -> np.ndarray:
    goods = state.goods
    bought = allocation.exposures[consumption.bought]
    keep = 1.0 - scenario.circulation.platform_take_rate
    return np.bincount(bought, weights=goods.price[bought] * keep, minlength=goods.capacity())


def _niche_step(state: MarketState, earnings: np.ndarray, scenario: Scenario) -> None:
    """Move each niche toward the earnings-weighted deviation of its live goods' keys."""
    cfg = scenario.population.creators.adaptation
    goods, creators = state.goods, state.creators
    live = np.flatnonzero(goods.live)
    owner = goods.owner[live]
    born = state.creators_born
    count = np.bincount(owner, minlength=born).astype(np.float64)
    earned = earnings[live]
    mean_earned = np.bincount(owner, weights=earned, minlength=born) / np.maximum(count, 1)
    advantage = earned - mean_earned[owner]
    spread = np.sqrt(np.bincount(owner, weights=advantage**2, minlength=born) / np.maximum(count, 1))
    weight = advantage / np.maximum(spread[owner], 1e-9)

    deviation = goods.key[live] - creators.topic[owner]
    direction = np.zeros((born, deviation.shape[1]))
    np.add.at(direction, owner, weight[:, None] * deviation)
    direction /= np.maximum(count, 1)[:, None]
    noise = scenario.population.goods.key_noise
    rows = np.flatnonzero((count >= 2) & creators.alive[:born])
    if noise > 0:
        # Deviations are of size ~noise: dividing by it makes learning_rate the angular step.
        creators.topic[rows] = unit_rows(creators.topic[rows] + cfg.learning_rate * direction[rows] / noise)


def _effort_step(state: MarketState, rows: np.ndarray, market: _AudienceModel, scenario: Scenario) -> None:
    """Effort climbs its marginal expected profit (a central difference of the market model):
    the evidence of one tick's goods is far too noisy to show the payoff of quality."""
    cfg = scenario.population.creators.adaptation
    creators = state.creators
    quality = creators.quality[rows].astype(np.float64)
    h = min(cfg.effort_step, 0.01)
    topics = np.repeat(creators.topic[rows][:, None, :], 2, axis=1)
    probes = np.stack([np.clip(quality + h, 0.01, 1.0), np.clip(quality - h, 0.01, 1.0)], axis=1)
    profit = market.expected_profit(topics, probes)
    step = cfg.effort_step * np.sign(profit[:, 0] - profit[:, 1])
    creators.quality[rows] = np.clip(quality + step, 0.01, 1.0)


def _best_response(
    state: MarketState, rows: np.ndarray, market: _AudienceModel, scenario: Scenario, rng: np.random.Generator
) -> None:
    cfg = scenario.population.creators.adaptation
    creators = state.creators
    dim = creators.topic.shape[1]
    moves = cfg.candidates
    # Candidate 0 is staying put; the others perturb the niche and nudge effort.
    topics = np.repeat(creators.topic[rows][:, None, :], moves + 1, axis=1)
    noise = rng.standard_normal((len(rows), moves, dim)) / np.sqrt(dim)
    topics[:, 1:] = (topics[:, 1:] + cfg.learning_rate * noise).astype(FLOAT)
    topics = unit_rows(topics.reshape(-1, dim)).reshape(len(rows), moves + 1, dim)
    quality = np.repeat(creators.quality[rows][:, None], moves + 1, axis=1).astype(np.float64)
    quality[:, 1:] += cfg.effort_step * rng.integers(-1, 2, size=(len(rows), moves))
    quality = np.clip(quality, 0.01, 1.0)

    best = market.expected_profit(topics, quality).argmax(axis=1)
    pick = np.arange(len(rows))
    creators.topic[rows] = topics[pick, best]
    creators.quality[rows] = quality[pick, best].astype(FLOAT)


class _AudienceModel:
    """A creator's model of the market: how a good with a given key and quality would fare."""

    def __init__(
        self,
        state: MarketState,
        creators: np.ndarray,
        audience: np.ndarray,
        incumbents: tuple[np.ndarray, np.ndarray],
        active_users: int,
        payout_rate: float,
        rules: RuleSet,
        scenario: Scenario,
        exposure_rates: tuple[float, float] = (0.0, 0.0),
        choice_share: np.ndarray | None = None,
    ):
        self.state = state
        self.choice_share = choice_share  # per audience user: share of the goods beating the outside option it takes (`users.choice`)
        self.exposure_rates = exposure_rates  # pay per exposure and per consumption (`circulation.exposure_pay`), the cap included
        self.creators = creators  # the adapting creators, in the order of expected_profit's rows
        self.incumbents = incumbents  # (owners, contributions) of the audience's games this tick
        self.scenario = scenario
        self.payout_rate = payout_rate
        self.rules = rules
        self.audience = audience
        self.queries = state.users.query[audience]
        self.budgets = state.users.budget[audience].astype(np.float64)
        self.scale = active_users / len(audience)
        catalogue = Catalogue.of(state)
        scores = (
            rules.allocation.scores(state, catalogue, audience).astype(np.float64)
            if len(catalogue.rows)
            else np.zeros((len(audience), 0))
        )
        # The rule's own model of its selection: a new good's expected exposures per sampled user.
        self.exposures = rules.allocation.audience_exposures(scores, state.goods.owner[catalogue.rows], self.budgets)

    def expected_profit(self, topics: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Expected profit per published good for each (creator, candidate) strategy; `topics` is
        (C, M, d), `quality` (C, M), rows in the order of the creators adapting (`self.creators`)."""
        users_cfg = self.scenario.population.users
        count, candidates, dim = topics.shape
        keys = topics.reshape(-1, dim)
        scores = self.rules.allocation.audience_scores(self.state, self.audience, keys, quality.reshape(-1)).astype(np.float64)
        exposures = self.exposures(scores).T.reshape(count, candidates, -1)
        cos = np.einsum("cmd,ud->cmu", topics, self.queries)
        intrinsic = quality[:, :, None] * np.exp(users_cfg.taste_sharpness * (cos - 1.0))
        value = intrinsic * users_cfg.overload
        consume = expected_beats(value - users_cfg.outside_option, users_cfg.choice_noise)
        if self.choice_share is not None:
            consume = consume * self.choice_share[None, None, :]
        probe = Probe(self.creators, consume, intrinsic, quality, *self.incumbents)
        exposure_weight = exposures * self.scale
        paid = self.payout_rate * (self.rules.payout.marginal(probe) * exposure_weight).sum(axis=2)
        goods_cfg = self.scenario.population.goods
        keep = 1.0 - self.scenario.circulation.platform_take_rate
        buys = (value * users_cfg.willingness_to_pay > goods_cfg.price.median) * consume
        sales = goods_cfg.product_share * goods_cfg.price.median * keep * (buys * exposure_weight).sum(axis=2)
        per_exposure, per_engagement = self.exposure_rates
        paid = paid + per_exposure * exposure_weight.sum(axis=2) + per_engagement * (consume * exposure_weight).sum(axis=2)
        # Under the minimum-quality bar a creator may not publish and is paid nothing from the pool.
        return np.where(meets_quality_bar(self.scenario, quality), paid + sales - production_cost(self.scenario, quality), 0.0)
