"""Stage 3, consumption: users choose among what they were shown, gain utility, buy, click, tire,
drift and churn.

The value of an exposure to a user is quality × taste match × the attention it holds: the k-th
exposure of a tick holds `overload`**k of a fresh one (information overload), scaled down by
fatigue carried over from earlier ticks. A user takes an exposure when its promised value, less
its price in value units (price / willingness to pay, 0 for free content), plus a logistic taste
shock beats the outside option (a logit choice). A product is had only by buying it: a chosen
product is bought if the wallet still covers its price (in feed order) and otherwise not had at
all, so its value counts once, net of the price, and only when paid for. Ads are clicked by
targeting match and position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.market.bookkeeping import (
    buy_in_feed_order,
    count_engagement,
    remember_consumed,
    scatter,
    settle_choices,
    shown_dots,
    shown_entries,
)
from simulator.market.kernels import drift_toward_consumed
from simulator.market.outcomes import Allocation, Consumption
from simulator.market.populations import refresh_homogenization_pairs
from simulator.market.state import FLOAT, MarketState
from simulator.market.streams import EntityDraws
from simulator.market.values import match, position_click_factors
from simulator.scenario.schema import Scenario
from simulator.stages.choice import choose


def consume(state: MarketState, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> Consumption:
    cfg = scenario.population.users
    users, goods = state.users, state.goods
    rows = allocation.users
    exposures = allocation.exposures
    # Work on the shown exposures only, flat: feeds are padded to the tick's longest budget,
    # several times the typical one. The bookkeeping around the choice is one compiled pass each
    # (simulator/market/bookkeeping.py).
    shown = Shown.of(exposures)
    good = shown.goods
    cos = shown_dots(users.interest, rows, shown.user, goods.key, good)
    held = cfg.overload ** shown.column.astype(FLOAT) * (1.0 - users.fatigue[rows])[shown.user]
    intrinsic = (goods.quality[good] * np.exp(cfg.taste_sharpness * (cos - 1.0))).astype(FLOAT)
    value = (held * intrinsic).astype(FLOAT)
    # Random utility: each exposure gets a logistic taste shock, and the user takes it when the
    # promised value less its price (in value units) plus the shock beats the outside option (a
    # logit choice). Clickbait promises more than it delivers; the user lives with the true value.
    promised = value * (1.0 + scenario.population.creators.clickbait_boost * goods.clickbait[good])
    price = goods.price[good]
    price_in_value = (price / max(cfg.willingness_to_pay, 1)).astype(FLOAT)
    # Keyed by (user, good) (market/streams.py): a user's shock for a good is the same in every arm that shows it.
    taste = EntityDraws.of(rng).stream("taste").logistic(cfg.choice_noise, rows[shown.user], goods.serial[good]).astype(FLOAT)
    chosen = choose(promised - price_in_value + taste, cfg.outside_option, shown.user, shown.column, shown.shape[0], cfg.choice)
    is_product = goods.is_product[good]
    bought = _purchases(state, rows, shown, chosen & is_product, price)
    # A product yields its value only if bought; content is free. A consumption is worth what it
    # beat the outside option by, as experienced and net of the price paid: goods that
    # disappoint (clickbait) can cost utility.
    consumed, blocked, gained_per_user = settle_choices(
        shown.user, len(rows), chosen, is_product, bought, value, price_in_value, taste, cfg.outside_option
    )
    clicked = _ad_clicks(state, rows, allocation, scenario, rng)

    ads_shown = np.count_nonzero(allocation.ads >= 0, axis=1)
    utility = (gained_per_user - cfg.ad_annoyance * ads_shown).astype(FLOAT)

    _count_engagement(state, good, consumed, bought, value)
    consumed_matrix = shown.matrix(consumed)
    _tire(state, rows, shown.counts(), ads_shown, cfg)
    _learn_from_consumption(state, rows, shown, consumed, scenario)
    _remember(state, rows, shown, consumed)
    churned = _churn(state, rows, utility, scenario)
    refresh_homogenization_pairs(state)
    return Consumption(
        rows, consumed_matrix, shown.matrix(value), shown.matrix(bought), clicked, utility, churned, shown.matrix(intrinsic),
        shown.matrix(blocked),
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
        return cls(*shown_entries(exposures), exposures.shape)

    def counts(self) -> np.ndarray:
        """Shown entries per row."""
        return np.bincount(self.user, minlength=self.shape[0])

    def matrix(self, values: np.ndarray) -> np.ndarray:
        """`values` (one per shown entry) back in the (users, K) matrix, 0/False where nothing was shown."""
        return scatter(self.flat, values, self.shape)


def _count_engagement(state: MarketState, good: np.ndarray, consumed: np.ndarray, bought: np.ndarray, value: np.ndarray) -> None:
    """Goods' lifetime counters: exposures, consumptions, purchases and value delivered."""
    goods = state.goods
    count_engagement(good, consumed, bought, value, goods.exposures, goods.consumptions, goods.purchases, goods.value_delivered)


def _purchases(state: MarketState, rows: np.ndarray, shown: Shown, wanted: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Wanted products bought in feed order, each while the wallet still covers its price: one
    the user cannot afford is skipped, and a cheaper one after it can still be bought."""
    if not wanted.any():
        return np.zeros(len(wanted), dtype=bool)
    return buy_in_feed_order(shown.user, wanted, price, state.ledger.balances["users"][rows])


def _ad_clicks(state: MarketState, rows: np.ndarray, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    ads = allocation.ads
    if ads.size == 0:
        return np.zeros(ads.shape, dtype=bool)
    advertisers = state.advertisers
    true_match = np.take_along_axis(
        match(state.users.interest[rows], advertisers.targeting), np.maximum(ads, 0), axis=1
    )
    probability = scenario.population.advertisers.click_rate * true_match * position_click_factors(scenario)[None, : ads.shape[1]]
    return (ads >= 0) & (EntityDraws.of(rng).stream("ad_click").uniform(rows[:, None], np.arange(ads.shape[1])[None, :]) < probability)


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
    remember_consumed(shown.user, rows, shown.goods, consumed, goods.uid, users.history, users.consumed_total)
    _update_homogenization(state, rows, shown, consumed)


def _update_homogenization(state: MarketState, rows: np.ndarray, shown: Shown, consumed: np.ndarray) -> None:
    """Date the sampled users' consumptions this tick, and forget what fell out of the window."""
    sample = state.homogenization
    if not sample.consumed:
        return
    sampled_rows = np.isin(rows, np.fromiter(sample.consumed, dtype=np.int64, count=len(sample.consumed)))
    sampled = np.flatnonzero(consumed & sampled_rows[shown.user])
    user_rows, uids = rows[shown.user[sampled]], state.goods.uid[shown.goods[sampled]]
    for user, uid in zip(user_rows.tolist(), uids.tolist()):
        sample.consumed[user][uid] = state.tick
    if sample.window is not None:
        oldest = state.tick - sample.window + 1
        for user, items in sample.consumed.items():
            if items and min(items.values()) < oldest:
                sample.consumed[user] = {uid: tick for uid, tick in items.items() if tick >= oldest}


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
