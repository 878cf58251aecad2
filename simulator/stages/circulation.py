"""Stage 4, value circulation: money moves through the ledger, creators settle, exit and enter.

Order of postings in a tick: user income in; purchases (user → creator, less the platform's
take); ad payments (advertiser → platform, per click, never beyond the advertiser's budget for
the tick); the clickbait penalty is re-judged from the goods' lifetime counters; the creator
payout pool (a share of the platform's revenue this tick, capped at what the platform holds,
split by the payout rule); attention rewards (platform → users, per unit of attention spent,
pro rata to what the platform still holds); pay per exposure and engagement (injected from a
creator fund, `stages/exposure_pay.py`); production costs out. Pool first, then rewards:
creators' share of this tick's revenue is never eaten by the rewards, which are funded from
the platform's initial wallet and retained earnings. Then creators update their smoothed
profit: sustained losses (or, under a viability exit rule, a smoothed share of engagement or exposure below
its threshold) make them leave, and positive mean profit over every creator of the
tick (leavers included) draws entrants.
"""

from __future__ import annotations

import numpy as np

from simulator.market.ad_settlement import billable_events, cap_charges, click_counts, group_by_advertiser
from simulator.market.ledger import split_exactly
from simulator.market.outcomes import (
    Allocation,
    Arrivals,
    Consumption,
    FraudTick,
    Settlement,
)
from simulator.market.populations import add_creators, meets_quality_bar, retire_goods
from simulator.market.state import MarketState
from simulator.market.streams import EntityDraws
from simulator.rules.defences import (
    filter_clicks,
    flag_clones,
    payable_creators,
    payable_goods,
    run_audits,
)
from simulator.rules.payout import PayoutRule, good_weights
from simulator.scenario.schema import Scenario
from simulator.stages.exposure_pay import pay_for_exposure
from simulator.stages.fraud import FarmWork, pay_click_farm


def circulate(
    state: MarketState,
    arrivals: Arrivals,
    allocation: Allocation,
    consumption: Consumption,
    payout: PayoutRule,
    scenario: Scenario,
    rng: np.random.Generator,
    farms: FarmWork | None = None,
) -> Settlement:
    """`farms` is what engagement farms delivered this tick (its fees are part of creators' costs)."""
    draws = EntityDraws.of(rng)  # ad billing order and entry, keyed (market/streams.py) under the stream's first draw
    ledger = state.ledger
    creators_born = state.creators_born
    goods = state.goods

    alive_users = np.flatnonzero(state.users.alive[: state.users_born] & ~state.users.bot[: state.users_born])
    ledger.inject("user_income", "users", alive_users, scenario.population.users.income_per_tick)

    sales, take = _settle_purchases(state, allocation, consumption, scenario)
    ad_revenue, advertiser_value, ad_free_deliveries, (advertiser, charge, by_bot) = _settle_ads(
        state, arrivals, allocation, consumption, scenario, draws
    )
    click_filter = scenario.defences.click_filter
    refunds = filter_clicks(state, click_filter, advertiser, charge, by_bot, rng)
    pay_click_farm(state, allocation, consumption, scenario)
    pool_revenue = take + ad_revenue - (refunds.total if click_filter is not None and click_filter.refunds_from == "pool" else 0)

    update_clickbait_penalty(state, scenario)
    clones, honest_clones = flag_clones(state, scenario.defences.clone_detection, arrivals.published)
    shown = allocation.exposures[allocation.exposures >= 0]
    exposure = np.bincount(goods.owner[shown], minlength=creators_born).astype(np.float64)
    per_good = good_weights(payout, state, allocation, consumption)
    payable = payable_goods(state, scenario)
    if payable is not None:
        per_good = np.where(payable, per_good, 0.0)
    payouts = _pay_creators(state, payout, per_good, pool_revenue, scenario, payable_creators(state, scenario.defences.identity_gate))
    rewards = _pay_attention_rewards(state, allocation, scenario)
    exposure_paid, exposure_owed, exposure_fill = pay_for_exposure(state, allocation, consumption, scenario)

    costs = np.bincount(goods.owner[arrivals.published], weights=arrivals.publish_costs, minlength=creators_born).astype(np.int64)
    charged = np.flatnonzero(costs)
    ledger.remove("production_costs", "creators", charged, costs[charged])
    audits = run_audits(state, scenario.defences.audits, ledger.balances["creators"][:creators_born], rng)

    income = sales + payouts + exposure_paid
    charges = audits.fines_per_creator(creators_born)
    if farms is not None:
        charges = charges + farms.fees[:creators_born]
    in_tick = state.creators.alive[:creators_born].copy()
    shares = viability_shares(state, allocation, consumption, scenario.population.creators.exit.rule)
    exits = _settle_creators(state, income - costs - charges, scenario, shares)
    entries = _admit_creators(state, (income - costs - charges)[in_tick], scenario, draws)
    # Entrants joined after the money moved: no exposure, no income, not part of this tick.
    return Settlement(
        np.pad(exposure, (0, entries)),
        np.pad(income, (0, entries)),
        np.pad(in_tick, (0, entries)),
        per_good,
        advertiser_value,
        ad_free_deliveries,
        entries,
        exits,
        FraudTick(
            ad_charges_on_bots=int(charge[by_bot].sum()),
            refunds_to_bots=refunds.to_bots,
            refunds_to_humans=refunds.to_humans,
            honest_events_flagged=refunds.honest_flagged,
            farmed_consumptions=farms.delivered if farms is not None else 0,
            clones_flagged=clones,
            honest_clones_flagged=honest_clones,
            audits=audits.audited,
            wrongly_fined=audits.wrongly_fined,
            creator_payouts=np.pad(payouts, (0, entries)),
            creator_charges=np.pad(charges, (0, entries)),
            bot_attention_rewards=int(rewards[consumption.bots].sum()) if consumption.bots is not None else 0,
        ),
        exposure_owed,
        exposure_fill,
    )


def _settle_purchases(
    state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario
) -> tuple[np.ndarray, int]:
    """Buyers pay the creator the price less the platform's take; returns (sales per creator, take)."""
    goods = state.goods
    user_index, column = np.nonzero(consumption.bought)
    bought_rows = allocation.exposures[user_index, column]
    buyers = allocation.users[user_index]
    price = goods.price[bought_rows]
    take = np.floor(price * scenario.circulation.platform_take_rate + 1e-9).astype(np.int64)
    owners = goods.owner[bought_rows].astype(np.int64)
    state.ledger.transfer("creator_sales", "users", buyers, "creators", owners, price - take)
    state.ledger.transfer("platform_take", "users", buyers, "platform", np.zeros(len(buyers), dtype=np.int64), take)
    sales = np.bincount(owners, weights=price - take, minlength=state.creators_born).astype(np.int64)
    return sales, int(take.sum())


def _pay_creators(
    state: MarketState, rule: PayoutRule, per_good: np.ndarray, revenue: int, scenario: Scenario, payable: np.ndarray | None = None
) -> np.ndarray:
    """The payout pool, floor(pool_share × this tick's revenue) but never more than the platform
    holds, split by the payout rule among alive creators that meet the minimum-quality bar (the
    bar is the creator programme's eligibility: a creator under it is paid nothing from the pool,
    whatever its older goods still on offer earn in sales) and that `payable` (per creator row:
    the defences' verdict, None for all) admits; returns the payout per creator row.
    If no eligible creator has positive weight, the platform keeps the pool."""
    cfg = scenario.circulation.creator_payout
    ledger = state.ledger
    pool = min(int(np.floor(cfg.pool_share * revenue)), int(ledger.balances["platform"][0]))
    creators = state.creators
    eligible = creators.alive[: state.creators_born] & meets_quality_bar(scenario, creators.quality[: state.creators_born])
    if payable is not None:
        eligible = eligible & payable
    weights = rule.creator_weights(state, per_good)
    payouts = split_exactly(pool, np.where(eligible, weights, 0.0))
    paid = np.flatnonzero(payouts)
    ledger.transfer("creator_payouts", "platform", np.zeros(len(paid), dtype=np.int64), "creators", paid, payouts[paid])
    return payouts


def attention_spent(allocation: Allocation) -> np.ndarray:
    """Per active user (as `allocation.users`): content exposures plus ads shown this tick."""
    return np.count_nonzero(allocation.exposures >= 0, axis=1) + np.count_nonzero(allocation.ads >= 0, axis=1)


def _pay_attention_rewards(state: MarketState, allocation: Allocation, scenario: Scenario) -> np.ndarray:
    """The platform pays each active user `attention_reward` per unit of attention spent this
    tick; if it holds less than it owes, it pays out all it holds, split pro rata (exactly, by
    largest remainders), so it is never overdrawn. Returns the amount paid per active user."""
    reward = scenario.circulation.attention_reward
    if reward == 0 or len(allocation.users) == 0:
        return np.zeros(len(allocation.users), dtype=np.int64)
    owed = attention_spent(allocation).astype(np.int64) * reward
    ledger = state.ledger
    balance = int(ledger.balances["platform"][0])
    paid = owed if int(owed.sum()) <= balance else split_exactly(balance, owed)
    users = np.flatnonzero(paid)
    ledger.transfer("attention_rewards", "platform", np.zeros(len(users), dtype=np.int64), "users", allocation.users[users], paid[users])
    return paid


def clickbait_penalties(
    exposures: np.ndarray,
    consumptions: np.ndarray,
    value_delivered: np.ndarray,
    threshold: float,
    strength: float,
    min_exposures: int,
) -> np.ndarray:
    """Per good: 1 − strength where the consumption rate (consumptions / exposures) exceeds the
    mean realised value per consumption (value_delivered / consumptions) by more than
    `threshold`, judged only once a good has `min_exposures` lifetime exposures; 1 elsewhere.
    A threshold of 0 turns the penalty off (every good 1)."""
    penalty = np.ones(len(exposures), dtype=np.float32)
    if threshold <= 0:
        return penalty
    judged = (exposures >= min_exposures) & (consumptions > 0)
    rate = consumptions / np.maximum(exposures, 1)
    mean_value = value_delivered / np.maximum(consumptions, 1)
    penalty[judged & (rate - mean_value > threshold)] = 1.0 - strength
    return penalty


def update_clickbait_penalty(state: MarketState, scenario: Scenario) -> None:
    """Re-judge every live good from its lifetime counters (this tick's included); the payout
    rules read `goods.penalty` now and the allocator next tick."""
    cfg = scenario.circulation.clickbait_penalty
    goods = state.goods
    penalty = clickbait_penalties(
        goods.exposures, goods.consumptions, goods.value_delivered, cfg.threshold, cfg.strength, cfg.min_exposures
    )
    penalty[~goods.live] = 1.0
    goods.penalty[:] = penalty


def _settle_ads(
    state: MarketState,
    arrivals: Arrivals,
    allocation: Allocation,
    consumption: Consumption,
    scenario: Scenario,
    draws: EntityDraws,
) -> tuple[int, int, int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Charge billable ad events (clicks, or impressions at their expected click cost) in random
    order (keyed by user and slot) until each advertiser's budget for the tick runs out.

    Events beyond the budget are delivered free: the platform absorbs the overdelivery, so no
    advertiser ever pays a minor unit more than its budget. Returns (revenue, value of clicks
    to advertisers, events delivered free, (advertiser, charge, by a bot) per billable event),
    and records each advertiser's spend and value for its bidding strategy. Bots' clicks are
    billed and counted in the click calibration (advertisers see them) but are worth nothing.
    """
    ads = state.advertisers
    bots = consumption.bots if consumption.bots is not None else np.zeros(len(allocation.users), dtype=bool)
    per_impression = scenario.circulation.auction.pricing == "per_impression"
    user_index, slot, advertiser, price = billable_events(
        allocation.ads, allocation.ad_prices, allocation.ad_click_rates, consumption.clicked, per_impression
    )
    # By advertiser, then the keyed uniform: np.lexsort((uniform, advertiser)) in two cheap passes.
    order = group_by_advertiser(draws.stream("ad_billing_order").order(allocation.users[user_index], slot), advertiser, ads.capacity())
    advertiser, price, by_bot = advertiser[order], price[order], bots[user_index[order]]
    charge, spent, free = cap_charges(advertiser, price, arrivals.ad_budgets, ads.capacity())
    state.ledger.transfer("ad_spend", "advertisers", advertiser, "platform", np.zeros(len(advertiser), dtype=np.int64), charge)

    predicted, realised, realised_by_humans = click_counts(allocation.ads, allocation.ad_click_rates, consumption.clicked, bots, ads.capacity())
    observed = predicted > 0
    ads.click_calibration[observed] = 0.5 * ads.click_calibration[observed] + 0.5 * realised[observed] / predicted[observed]
    ads.spent_last[:] = spent
    ads.value_last[:] = realised_by_humans * ads.value_per_click
    return int(charge.sum()), int(ads.value_last.sum()), free, (advertiser, charge, by_bot)


def viability_shares(state: MarketState, allocation: Allocation, consumption: Consumption, rule: str) -> np.ndarray | None:
    """Per creator row, its share of the tick's consumptions (`engagement_share`) or exposures
    (`exposure_share`) over every creator, 0 for all on a tick without any; None for `profit`."""
    if rule == "profit":
        return None
    counted = allocation.exposures[consumption.consumed] if rule == "engagement_share" else allocation.exposures[allocation.exposures >= 0]
    per_creator = np.bincount(state.goods.owner[counted], minlength=state.creators_born).astype(np.float64)
    total = per_creator.sum()
    return per_creator / total if total > 0 else per_creator


def _settle_creators(state: MarketState, profit: np.ndarray, scenario: Scenario, shares: np.ndarray | None = None) -> int:
    """Smooth profits (and, under a viability rule, `shares`); creators with `patience` ticks in a
    row of failing, losses or a smoothed share below `exit.min_share`, or of nothing on offer
    (they could not afford to publish, or are under the quality bar and their goods expired),
    leave with their goods: a creator that cannot sell anything is out of the market."""
    cfg = scenario.population.creators.exit
    creators = state.creators
    goods = state.goods
    rows = np.flatnonzero(creators.alive[: state.creators_born])
    ema = (1 - cfg.smoothing) * creators.profit_ema[rows] + cfg.smoothing * profit[rows]
    creators.profit_ema[rows] = ema
    on_offer = np.bincount(goods.owner[goods.live], minlength=state.creators_born)[rows] > 0
    if shares is None:
        failing = (ema < 0) | ~on_offer
    else:
        before = creators.share_ema[rows]
        share = np.where(before < 0, shares[rows], (1 - cfg.smoothing) * before + cfg.smoothing * shares[rows])
        creators.share_ema[rows] = share
        failing = (share < cfg.min_share) | ~on_offer
    creators.loss_streak[rows] = np.where(failing, creators.loss_streak[rows] + 1, 0)
    leaving = rows[creators.loss_streak[rows] >= cfg.patience]
    if len(leaving):
        creators.alive[leaving] = False
        orphaned = np.flatnonzero(goods.live & np.isin(goods.owner, leaving))
        retire_goods(state, orphaned)
    return len(leaving)


def _admit_creators(state: MarketState, profits: np.ndarray, scenario: Scenario, draws: EntityDraws) -> int:
    """While creating pays, newcomers arrive; some imitate a profitable niche. Draws are keyed by
    the entrant's row (its count by inversion), so arms with nearby incumbents admit alike.

    The signal is this tick's mean profit over every creator that took part, those leaving now
    included (`profits`): an entrant's expected profit. The mean over survivors alone would be
    biased upward by who already exited."""
    cfg = scenario.population.creators
    creators = state.creators
    rows = np.flatnonzero(creators.alive[: state.creators_born])
    if cfg.entry.rate == 0 or len(rows) == 0 or len(profits) == 0:
        return 0
    if profits.mean() <= 0:
        return 0
    count = int(draws.stream("entry_count").poisson(cfg.entry.rate * len(rows), 0))
    if count == 0:
        return 0
    profit = creators.profit_ema[rows]
    gains = np.maximum(profit, 0.0).astype(np.float64)
    if gains.sum() <= 0:
        gains = np.ones(len(rows))
    entrants = np.arange(state.creators_born, state.creators_born + count)
    cumulative = np.cumsum(gains)
    # A model drawn ∝ gains by inversion of the entrant's own uniform.
    models = rows[np.minimum(np.searchsorted(cumulative, draws.stream("entry_model").uniform(entrants) * cumulative[-1], side="right"), len(rows) - 1)]
    imitate = np.where(draws.stream("entry_imitation").uniform(entrants) < cfg.entry.imitation, models, -1)
    new = add_creators(state, count, scenario, draws.generator("entrant_traits"), imitate=imitate)
    state.ledger.inject("creator_entry_capital", "creators", new, cfg.initial_wallet)
    return count
