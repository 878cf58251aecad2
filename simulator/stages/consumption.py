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

from simulator.market.kernels import drift_toward_consumed, gathered_dots
from simulator.market.outcomes import Allocation, Consumption
from simulator.market.state import FLOAT, MarketState
from simulator.market.values import match, position_click_factors
from simulator.scenario.schema import Scenario


def consume(state: MarketState, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> Consumption:
    cfg = scenario.population.users
    users, goods = state.users, state.goods
    rows = allocation.users
    exposures = allocation.exposures
    # Work on the shown exposures only, flat: feeds are padded to the tick's longest budget,
    # several times the typical one.
    shown = Shown.of(exposures)
    good = shown.goods
    cos = gathered_dots(users.interest[rows], goods.key, exposures).ravel()[shown.flat]
    held = cfg.overload ** shown.column.astype(FLOAT) * (1.0 - users.fatigue[rows])[shown.user]
    intrinsic = (goods.quality[good] * np.exp(cfg.taste_sharpness * (cos - 1.0))).astype(FLOAT)
    value = (held * intrinsic).astype(FLOAT)
    # Random utility: each exposure gets a logistic taste shock, and the user consumes when the
    # promised value plus the shock beats the outside option (a logit choice). Clickbait
    # promises more than it delivers; the user lives with the true value plus the shock.
    promised = value * (1.0 + scenario.population.creators.clickbait_boost * goods.clickbait[good])
    taste = rng.logistic(0.0, cfg.choice_noise, size=len(good)).astype(FLOAT)
    consumed = promised + taste > cfg.outside_option

    price = goods.price[good]
    bought = _purchases(state, rows, shown, consumed, value, price, cfg.willingness_to_pay)
    clicked = _ad_clicks(state, rows, allocation, scenario, rng)

    ads_shown = np.count_nonzero(allocation.ads >= 0, axis=1)
    # A consumption is worth what it beat the outside option by, as experienced: goods that
    # disappoint (clickbait) can cost utility.
    gained = np.where(consumed, value + taste - cfg.outside_option, 0.0)
    surplus = np.where(bought, value - price / max(cfg.willingness_to_pay, 1), 0.0)
    utility = (shown.per_user(gained + surplus) - cfg.ad_annoyance * ads_shown).astype(FLOAT)

    _count_engagement(state, good, consumed, bought, value)
    consumed_matrix = shown.matrix(consumed)
    _tire(state, rows, shown.counts(), ads_shown, cfg)
    _learn_from_consumption(state, rows, shown, consumed, scenario)
    _remember(state, rows, shown, consumed)
    churned = _churn(state, rows, utility, scenario)
    return Consumption(
        rows, consumed_matrix, shown.matrix(value), shown.matrix(bought), clicked, utility, churned, shown.matrix(intrinsic)
    )


@dataclass(frozen=True)
class Shown:
    """The shown entries of a (users, K) exposure matrix, flat, ordered by user then feed position."""

    flat: np.ndarray  # index into the matrix's ravel()
    user: np.ndarray  # its row (index into the tick's active users)
    column: np.ndarray  # its feed position
    goods: np.ndarray  # the catalogue row shown
    shape: tuple[int, int]

    @classmethod
    def of(cls, exposures: np.ndarray) -> Shown:
        flat = np.flatnonzero(exposures.ravel() >= 0)
        user, column = np.divmod(flat, max(exposures.shape[1], 1))
        return cls(flat, user, column, exposures.ravel()[flat], exposures.shape)

    def counts(self) -> np.ndarray:
        """Shown entries per row."""
        return np.bincount(self.user, minlength=self.shape[0])

    def per_user(self, values: np.ndarray) -> np.ndarray:
        """Sum of `values` (one per shown entry) for each row."""
        return np.bincount(self.user, weights=values, minlength=self.shape[0])

    def matrix(self, values: np.ndarray) -> np.ndarray:
        """`values` (one per shown entry) back in the (users, K) matrix, 0/False where nothing was shown."""
        out = np.zeros(self.shape, dtype=values.dtype)
        out.ravel()[self.flat] = values
        return out


def running_sums_by_user(user: np.ndarray, values: np.ndarray, users: int) -> np.ndarray:
    """Cumulative sums of `values` within each user's entries (`user` sorted ascending)."""
    running = np.cumsum(values)
    counts = np.bincount(user, minlength=users)
    first = (np.cumsum(counts) - counts)[user]
    return running - (running[first] - values[first])


def _count_engagement(state: MarketState, good: np.ndarray, consumed: np.ndarray, bought: np.ndarray, value: np.ndarray) -> None:
    """Goods' lifetime counters: exposures, consumptions, purchases and value delivered."""
    goods = state.goods
    size = goods.capacity()
    goods.exposures += np.bincount(good, minlength=size)
    goods.consumptions += np.bincount(good[consumed], minlength=size)
    goods.purchases += np.bincount(good[bought], minlength=size)
    goods.value_delivered += np.bincount(good[consumed], weights=value[consumed], minlength=size)


def _purchases(
    state: MarketState, rows: np.ndarray, shown: Shown, consumed: np.ndarray, value: np.ndarray, price: np.ndarray, wtp_scale: int
) -> np.ndarray:
    """Consumed products bought in feed order while the wallet lasts."""
    want = consumed & state.goods.is_product[shown.goods] & (value * wtp_scale > price)
    if not want.any():
        return want
    spent = running_sums_by_user(shown.user, np.where(want, price, 0), shown.shape[0])
    return want & (spent <= state.ledger.balances["users"][rows[shown.user]])


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


def _learn_from_consumption(state: MarketState, rows: np.ndarray, shown: Shown, consumed: np.ndarray, scenario: Scenario) -> None:
    """Tastes drift toward what users consume; the platform's profile follows its logs."""
    drift = scenario.population.users.drift
    rate = scenario.allocation.profile_learning_rate
    if not consumed.any() or not (drift or rate):
        return
    user = shown.user[consumed]
    counts = np.bincount(user, minlength=shown.shape[0])
    has = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts[has])])
    users = state.users
    drift_toward_consumed(users.interest, users.query, rows[has], starts, shown.goods[consumed], state.goods.key, drift, rate)


def _remember(state: MarketState, rows: np.ndarray, shown: Shown, consumed: np.ndarray) -> None:
    """Consumed goods go into each user's ring of recent consumption and the goods' counters."""
    users, goods = state.users, state.goods
    if not consumed.any():
        return
    user_index = shown.user[consumed]
    uids = goods.uid[shown.goods[consumed]]
    user_rows = rows[user_index]
    # Position of each consumption within its user's tick, to place it in the ring.
    order_in_user = running_sums_by_user(user_index, np.ones(len(user_index), dtype=np.int64), shown.shape[0]) - 1
    memory = users.history.shape[1]
    slot = (users.consumed_total[user_rows] + order_in_user) % memory
    users.history[user_rows, slot] = uids
    users.consumed_total[rows] += np.bincount(user_index, minlength=shown.shape[0])
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
