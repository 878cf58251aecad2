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
  market under the current rules — the allocator as softmax(QKᵀ/√d/T) over a sample of users'
  profiles against this tick's catalogue, users' logit choice, this tick's payout per unit of
  what the payout rule rewards, and production cost — and takes the best.

What a good "earns" is its share of the payout pool under the rule in force
(`payouts.good_weights` times what a unit of weight paid this tick) plus its sales; the market
model approximates the user-game rules (`shapley`, `backward`) by the value a good delivers.
"""

from __future__ import annotations

import numpy as np

from simulator.market.outcomes import Allocation, Consumption, Settlement
from simulator.market.populations import production_cost, unit_rows
from simulator.market.state import FLOAT, MarketState
from simulator.scenario.schema import Scenario

AUDIENCE_SAMPLE = 256  # users whose profiles a best-responding creator models the market with


def adapt(
    state: MarketState,
    allocation: Allocation,
    consumption: Consumption,
    settlement: Settlement,
    scenario: Scenario,
    rng: np.random.Generator,
) -> None:
    cfg = scenario.population.creators.adaptation
    rows = np.flatnonzero(state.creators.alive[: state.creators_born])
    if cfg.rule == "static" or len(rows) == 0 or len(allocation.users) == 0:
        return
    rule = scenario.circulation.creator_payout.rule
    activity = settlement.good_weights
    total_activity = activity.sum()
    # What one unit of a payout weight paid this tick (the ledger still holds the tick's flows).
    payout_rate = state.ledger.flows.get("creator_payouts", 0) / total_activity if total_activity > 0 else 0.0
    sample = rng.choice(len(allocation.users), size=min(AUDIENCE_SAMPLE, len(allocation.users)), replace=False)
    market = _AudienceModel(state, allocation.users[sample], len(allocation.users), payout_rate, rule, scenario)
    if cfg.rule == "gradient":
        earnings = payout_rate * activity + _sales_per_good(state, allocation, consumption, scenario)
        _niche_step(state, earnings, scenario)
        _effort_step(state, rows, market, scenario)
    else:
        _best_response(state, rows, market, scenario, rng)


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
        self, state: MarketState, audience: np.ndarray, active_users: int, payout_rate: float, rule: str, scenario: Scenario
    ):
        self.scenario = scenario
        self.payout_rate = payout_rate
        self.rule = rule
        self.queries = state.users.query[audience]
        self.budgets = state.users.budget[audience].astype(np.float64)
        self.scale = active_users / len(audience)
        live = np.flatnonzero(state.goods.live)
        dim = self.queries.shape[1]
        self.factor = np.sqrt(dim) / scenario.allocation.temperature
        scores = (self.queries @ state.goods.key[live].T) * self.factor
        top = scores.max(axis=1, keepdims=True) if len(live) else np.zeros((len(audience), 1))
        self.top = top
        self.partition = np.exp(scores - top).sum(axis=1, keepdims=True) if len(live) else np.zeros_like(top)

    def expected_profit(self, topics: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Expected profit per published good for each (creator, candidate) strategy."""
        users_cfg = self.scenario.population.users
        cos = np.einsum("cmd,ud->cmu", topics, self.queries)
        weight = np.exp(cos * self.factor - self.top[:, 0][None, None, :])
        share = weight / (self.partition[:, 0][None, None, :] + weight)
        value = quality[:, :, None] * np.exp(users_cfg.taste_sharpness * (cos - 1.0)) * users_cfg.overload
        consume = 1.0 / (1.0 + np.exp(-(value - users_cfg.outside_option) / users_cfg.choice_noise))
        per_exposure = {
            "exposure": np.ones_like(consume),
            "engagement": consume,
            "quality": consume * quality[:, :, None],
            "shapley": consume * value,
            "backward": consume * value,
        }.get(self.rule, np.zeros_like(consume))
        exposure_weight = share * self.budgets[None, None, :] * self.scale
        paid = self.payout_rate * (per_exposure * exposure_weight).sum(axis=2)
        goods_cfg = self.scenario.population.goods
        keep = 1.0 - self.scenario.circulation.platform_take_rate
        buys = (value * users_cfg.willingness_to_pay > goods_cfg.price.median) * consume
        sales = goods_cfg.product_share * goods_cfg.price.median * keep * (buys * exposure_weight).sum(axis=2)
        return paid + sales - production_cost(self.scenario, quality)
