"""Stage 4, the creators' side: after money has moved, creators adapt their strategy.

A creator's strategy is its niche (a unit topic vector its goods' keys scatter around) and its
effort (quality, which costs `effort_cost × q²` per good). Each tick every creator tries to
raise its own expected profit under the current rules (`creators.adaptation.rule`):

- `static`: never changes; supply diversity stays where it started.
- `gradient`: an evolution-strategies step on its own evidence. Its live goods are noisy
  copies of its strategy (keys around the niche, qualities around its effort), so the goods
  that earned more this tick show which way to move: the niche steps toward the
  earnings-weighted deviation of its goods' keys (projected back to unit norm), and effort
  moves along the sign of the earnings–quality covariance net of the marginal cost.
- `best_response`: evaluates `candidates` sampled moves (plus staying put) with a model of the
  market under the current rules — the allocator as softmax(QKᵀ/√d/T) over a sample of users'
  profiles against this tick's catalogue, users' logit choice, this tick's payout per unit of
  what the payout rule rewards, and production cost — and takes the best.

What a good "earns" follows the payout rule in force: exposures under `exposure`,
consumptions under `engagement`, quality-weighted consumptions under `quality`, value
delivered under `shapley` and `backward`, nothing under `equal`; plus its sales.
"""

from __future__ import annotations

import numpy as np

from ..populations import production_cost, unit_rows
from ..scenario import Scenario
from ..state import FLOAT, MarketState
from .allocation import Allocation
from .consumption import Consumption

AUDIENCE_SAMPLE = 256  # users whose profiles a best-responding creator models the market with


def rewarded_activity(rule: str, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
    """Per catalogue row: this tick's activity the payout rule pays for."""
    goods = state.goods
    rows = goods.capacity()
    exposures = allocation.exposures
    if rule == "exposure":
        return np.bincount(exposures[exposures >= 0], minlength=rows).astype(np.float64)
    consumed = exposures[consumption.consumed]
    if rule == "engagement":
        return np.bincount(consumed, minlength=rows).astype(np.float64)
    if rule == "quality":
        return np.bincount(consumed, weights=goods.quality[consumed], minlength=rows)
    if rule in ("shapley", "backward"):
        return np.bincount(consumed, weights=consumption.value[consumption.consumed], minlength=rows)
    return np.zeros(rows)  # `equal` pays for nothing a good does


def adapt(
    state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario, rng: np.random.Generator
) -> None:
    cfg = scenario.population.creators.adaptation
    if cfg.rule == "static":
        return
    rule = scenario.circulation.creator_payout.rule
    activity = rewarded_activity(rule, state, allocation, consumption)
    total_activity = activity.sum()
    # What one unit of rewarded activity paid this tick (the ledger still holds the tick's flows).
    payout_rate = state.ledger.flows.get("creator_payouts", 0) / total_activity if total_activity > 0 else 0.0
    if cfg.rule == "gradient":
        earnings = payout_rate * activity + _sales_per_good(state, allocation, consumption, scenario)
        _gradient_step(state, earnings, scenario)
    else:
        _best_response(state, allocation, payout_rate, rule, scenario, rng)


def _sales_per_good(state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario) -> np.ndarray:
    goods = state.goods
    bought = allocation.exposures[consumption.bought]
    keep = 1.0 - scenario.circulation.platform_take_rate
    return np.bincount(bought, weights=goods.price[bought] * keep, minlength=goods.capacity())


def _gradient_step(state: MarketState, earnings: np.ndarray, scenario: Scenario) -> None:
    cfg = scenario.population.creators.adaptation
    goods, creators = state.goods, state.creators
    live = np.flatnonzero(goods.live)
    owner = goods.owner[live]
    born = state.creators_born
    count = np.bincount(owner, minlength=born).astype(np.float64)
    profit = earnings[live] - production_cost(scenario, goods.quality[live])
    mean_profit = np.bincount(owner, weights=profit, minlength=born) / np.maximum(count, 1)
    advantage = profit - mean_profit[owner]
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

    quality_deviation = goods.quality[live] - creators.quality[owner]
    slope = np.bincount(owner, weights=weight * quality_deviation, minlength=born)
    creators.quality[rows] = np.clip(creators.quality[rows] + cfg.effort_step * np.sign(slope[rows]), 0.01, 1.0)


def _best_response(
    state: MarketState, allocation: Allocation, payout_rate: float, rule: str, scenario: Scenario, rng: np.random.Generator
) -> None:
    cfg = scenario.population.creators.adaptation
    creators = state.creators
    rows = np.flatnonzero(creators.alive[: state.creators_born])
    active_users = allocation.users
    if len(rows) == 0 or len(active_users) == 0:
        return
    audience = active_users[rng.choice(len(active_users), size=min(AUDIENCE_SAMPLE, len(active_users)), replace=False)]
    market = _AudienceModel(state, audience, len(active_users), scenario)

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

    profit = market.expected_profit(topics, quality, payout_rate, rule)
    best = profit.argmax(axis=1)
    pick = np.arange(len(rows))
    creators.topic[rows] = topics[pick, best]
    creators.quality[rows] = quality[pick, best].astype(FLOAT)


class _AudienceModel:
    """A creator's model of the market: how a good with a given key and quality would fare."""

    def __init__(self, state: MarketState, audience: np.ndarray, active_users: int, scenario: Scenario):
        self.scenario = scenario
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

    def expected_profit(self, topics: np.ndarray, quality: np.ndarray, payout_rate: float, rule: str) -> np.ndarray:
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
        }.get(rule, np.zeros_like(consume))
        exposure_weight = share * self.budgets[None, None, :] * self.scale
        paid = payout_rate * (per_exposure * exposure_weight).sum(axis=2)
        goods_cfg = self.scenario.population.goods
        keep = 1.0 - self.scenario.circulation.platform_take_rate
        buys = (value * users_cfg.willingness_to_pay > goods_cfg.price.median) * consume
        sales = goods_cfg.product_share * goods_cfg.price.median * keep * (buys * exposure_weight).sum(axis=2)
        return paid + sales - production_cost(self.scenario, quality)
