"""Stage 3, consumption: users choose among what they were shown, gain utility, buy, click, tire,
drift and churn.

The value of an exposure to a user is quality × taste match × the attention it holds: the k-th
exposure of a tick holds `overload`**k of a fresh one (information overload), scaled down by
fatigue carried over from earlier ticks. A user consumes an exposure when its promised value
plus a logistic taste shock beats the outside option (a logit choice); buys a consumed product if willingness to pay
exceeds the price and the wallet covers it (in feed order); clicks ads by targeting match
and position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..allocation_rules import record_outcomes
from ..kernels import gathered_dots, gathered_sums
from ..populations import unit_rows
from ..scenario import Scenario
from ..state import FLOAT, MarketState
from .allocation import Allocation, match, position_click_factors


@dataclass(frozen=True)
class Consumption:
    users: np.ndarray  # active user rows
    consumed: np.ndarray  # (users, K) bool
    value: np.ndarray  # (users, K) float32 value of each exposure (held attention × quality × match)
    bought: np.ndarray  # (users, K) bool
    clicked: np.ndarray  # (users, slots) bool
    utility: np.ndarray  # (users,) realised utility this tick
    churned: np.ndarray  # user rows that left this tick


def expected_value(interest: np.ndarray, keys: np.ndarray, quality: np.ndarray, sharpness: float) -> np.ndarray:
    """A user's value of a good at full attention: quality × exp(sharpness·(cos − 1)), in [0, 1]."""
    cos = interest @ keys.T
    cos -= 1.0
    cos *= FLOAT(sharpness)
    np.exp(cos, out=cos)
    cos *= quality[None, :]
    return cos


def consume(state: MarketState, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> Consumption:
    cfg = scenario.population.users
    cfg_creators = scenario.population.creators
    users, goods = state.users, state.goods
    rows = allocation.users
    exposures = allocation.exposures
    shown = exposures >= 0

    interest = users.interest[rows]
    cos = gathered_dots(interest, goods.key, exposures)
    held = (cfg.overload ** np.arange(exposures.shape[1], dtype=FLOAT))[None, :] * (1.0 - users.fatigue[rows])[:, None]
    safe = np.maximum(exposures, 0)
    value = (held * goods.quality[safe] * np.exp(cfg.taste_sharpness * (cos - 1.0))).astype(FLOAT)
    value[~shown] = 0.0
    # Random utility: each exposure gets a logistic taste shock, and the user consumes when the
    # promised value plus the shock beats the outside option (a logit choice). Clickbait
    # promises more than it delivers; the user lives with the true value plus the shock.
    promised = value * (1.0 + cfg_creators.clickbait_boost * goods.clickbait[safe])
    taste = rng.logistic(0.0, cfg.choice_noise, size=exposures.shape).astype(FLOAT)
    consumed = shown & (promised + taste > cfg.outside_option)

    bought = _purchases(state, rows, exposures, consumed, value, cfg.willingness_to_pay)
    clicked = _ad_clicks(state, rows, allocation, scenario, rng)

    price = goods.price[safe]
    surplus = np.where(bought, value - price / max(cfg.willingness_to_pay, 1), 0.0)
    ads_shown = np.count_nonzero(allocation.ads >= 0, axis=1)
    # A consumption is worth what it beat the outside option by, as experienced: goods that
    # disappoint (clickbait) can cost utility.
    gained = np.where(consumed, value + taste - cfg.outside_option, 0.0).sum(axis=1)
    utility = (gained + surplus.sum(axis=1) - cfg.ad_annoyance * ads_shown).astype(FLOAT)

    _count_engagement(state, exposures, shown, consumed, bought, value)
    record_outcomes(state, rows, exposures, shown, consumed, scenario)
    _tire(state, rows, np.count_nonzero(shown, axis=1), ads_shown, cfg)
    _learn_from_consumption(state, rows, exposures, consumed, scenario)
    _remember(state, rows, exposures, consumed)
    churned = _churn(state, rows, utility, scenario)
    return Consumption(rows, consumed, value, bought, clicked, utility, churned)


def _count_engagement(
    state: MarketState, exposures: np.ndarray, shown: np.ndarray, consumed: np.ndarray, bought: np.ndarray, value: np.ndarray
) -> None:
    """Goods' lifetime counters: exposures, consumptions, purchases and value delivered."""
    goods = state.goods
    np.add.at(goods.exposures, exposures[shown], 1)
    np.add.at(goods.consumptions, exposures[consumed], 1)
    np.add.at(goods.purchases, exposures[bought], 1)
    np.add.at(goods.value_delivered, exposures[consumed], value[consumed].astype(np.float64))


def _purchases(
    state: MarketState, rows: np.ndarray, exposures: np.ndarray, consumed: np.ndarray, value: np.ndarray, wtp_scale: int
) -> np.ndarray:
    """Consumed products bought in feed order while the wallet lasts."""
    goods = state.goods
    safe = np.maximum(exposures, 0)
    price = goods.price[safe]
    want = consumed & goods.is_product[safe] & (value * wtp_scale > price)
    if not want.any():
        return want
    wallet = state.ledger.balances["users"][rows]
    spend = np.cumsum(np.where(want, price, 0), axis=1)
    return want & (spend <= wallet[:, None])


def _ad_clicks(state: MarketState, rows: np.ndarray, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    ads = allocation.ads
    if ads.size == 0:
        return np.zeros(ads.shape, dtype=bool)
    advertisers = state.advertisers
    true_match = np.take_along_axis(
        match(state.users.interest[rows], advertisers.targeting), np.maximum(ads, 0), axis=1
    )
    probability = scenario.population.advertisers.click_rate * true_match * position_click_factors(scenario)[None, : ads.shape[1]]
    return (ads >= 0) & (rng.random(ads.shape) < probability)


def _tire(state: MarketState, rows: np.ndarray, exposures: np.ndarray, ads: np.ndarray, cfg) -> None:
    """Fatigue decays every tick and builds with each exposure, more with each ad."""
    users = state.users
    born = state.users_born
    users.fatigue[:born] *= cfg.fatigue_recovery
    users.fatigue[rows] += cfg.fatigue_per_exposure * exposures + cfg.fatigue_per_ad * ads
    np.clip(users.fatigue[:born], 0.0, 0.95, out=users.fatigue[:born])


def _learn_from_consumption(state: MarketState, rows: np.ndarray, exposures: np.ndarray, consumed: np.ndarray, scenario: Scenario) -> None:
    """Tastes drift toward what users consume; the platform's profile follows its logs."""
    counts = consumed.sum(axis=1)
    has = counts > 0
    if not has.any():
        return
    users = state.users
    chosen_rows = rows[has]
    mean_key = gathered_sums(state.goods.key, np.where(consumed[has], exposures[has], -1))
    mean_key = unit_rows(mean_key)
    drift = scenario.population.users.drift
    if drift:
        users.interest[chosen_rows] = unit_rows((1 - drift) * users.interest[chosen_rows] + drift * mean_key)
    rate = scenario.allocation.profile_learning_rate
    if rate:
        users.query[chosen_rows] = unit_rows((1 - rate) * users.query[chosen_rows] + rate * mean_key)


def _remember(state: MarketState, rows: np.ndarray, exposures: np.ndarray, consumed: np.ndarray) -> None:
    """Consumed goods go into each user's ring of recent consumption and the goods' counters."""
    users, goods = state.users, state.goods
    user_index, column = np.nonzero(consumed)
    if len(user_index) == 0:
        return
    goods_rows = exposures[user_index, column]
    uids = goods.uid[goods_rows]
    user_rows = rows[user_index]
    # Position of each consumption within its user's tick, to place it in the ring.
    order_in_user = np.cumsum(consumed, axis=1)[user_index, column] - 1
    memory = users.history.shape[1]
    slot = (users.consumed_total[user_rows] + order_in_user) % memory
    users.history[user_rows, slot] = uids
    np.add.at(users.consumed_total, user_rows, 1)
    _update_homogenization(state, user_rows, uids)


def _update_homogenization(state: MarketState, user_rows: np.ndarray, uids: np.ndarray) -> None:
    """Keep |A ∩ B| of each sampled pair current as sampled users consume new goods."""
    sample = state.homogenization
    if not sample.consumed:
        return
    sampled = np.isin(user_rows, sample.pairs.ravel())
    if not sampled.any():
        return
    new_items: dict[int, set[int]] = {}
    for user, uid in zip(user_rows[sampled].tolist(), uids[sampled].tolist()):
        if uid not in sample.consumed[user]:
            new_items.setdefault(user, set()).add(uid)
    for index, (a, b) in enumerate(sample.pairs.tolist()):
        gain = 0
        if a in new_items:
            gain += len(new_items[a] & sample.consumed[b])
        if b in new_items:
            gain += len(new_items[b] & sample.consumed[a])
            if a in new_items:
                gain += len(new_items[a] & new_items[b])
        sample.intersections[index] += gain
    for user, items in new_items.items():
        sample.consumed[user] |= items


def _churn(state: MarketState, rows: np.ndarray, utility: np.ndarray, scenario: Scenario) -> np.ndarray:
    """Users whose smoothed utility stays under the threshold for `patience` active ticks leave."""
    churn = scenario.population.users.churn
    users = state.users
    first_visit = users.active_ticks[rows] == 0
    ema = np.where(first_visit, utility, (1 - churn.smoothing) * users.utility_ema[rows] + churn.smoothing * utility)
    users.utility_ema[rows] = ema
    users.active_ticks[rows] += 1
    low = ema < churn.threshold
    users.low_streak[rows] = np.where(low, users.low_streak[rows] + 1, 0)
    leaving = rows[users.low_streak[rows] >= churn.patience]
    users.alive[leaving] = False
    return leaving
