"""Fraud inside a tick: engagement farms work through bot accounts, bots consume and click.

Bots (`adversaries.bots`) are user rows flagged `bot`. The allocator and the ad auctions treat
them like anyone (the platform cannot tell them apart), so they take real feed slots and real ad
slots. Then, instead of the users' choice model:

- a bot consumes each good it is shown with probability `consume_rate`, whatever its value, and
  every good a farm ordered for it; the platform records these consumptions like any other
  (the goods' engagement counters here, the popularity window and the rule's logs in
  `record_outcomes` after the stage), so fake engagement moves
  `popularity`, the `engagement` payout and the engagement-weighted modifier;
- a bot clicks each ad it is shown of an advertiser it targets with probability `click_rate`
  (rivals of its sponsor, or any); under per-click pricing the advertiser pays for the click;
- a bot gets no value and no utility, buys nothing, never tires or churns: it has no welfare.

Engagement farms (`adversaries.farms`) are hired by client creators: each tick a client orders
`orders` fake consumptions of its live goods, paid `fee` each to the fraud operator (as far as
its wallet covers beyond this tick's production costs), and the farm's bots perform them in
place of entries of their feeds. The sponsor of a clicking bot pays the operator
`fee_per_click` per fake click. Every fee is a ledger transfer to the `fraudsters` account.

Without bots this module changes nothing and draws no random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulator.market.outcomes import Allocation, Arrivals, Consumption
from simulator.market.state import FLOAT, MarketState
from simulator.scenario.schema import Scenario
from simulator.stages.consumption import consume


@dataclass(frozen=True)
class FarmWork:
    """What engagement farms did this tick."""

    allocation: Allocation  # the allocation with the farmed goods in the bots' feeds
    farmed: np.ndarray  # (users, K) bool: feed entries a farm ordered
    fees: np.ndarray  # per creator row: fees paid to the farm (minor units)
    delivered: int  # fake consumptions delivered


def work_farms(state: MarketState, arrivals: Arrivals, allocation: Allocation, scenario: Scenario, rng: np.random.Generator) -> FarmWork | None:
    """Clients' orders, placed into active bots' feed entries at random; None when no farm works."""
    cfg = scenario.adversaries.farms
    creators, goods = state.creators, state.goods
    born = state.creators_born
    if cfg.share == 0 or cfg.orders == 0:
        return None
    bots = np.flatnonzero(state.users.bot[allocation.users])
    live = np.flatnonzero(goods.live)
    live = live[np.argsort(goods.owner[live], kind="stable")]
    owner = goods.owner[live]
    on_offer = np.bincount(owner, minlength=born)[:born]
    clients = np.flatnonzero(creators.farm_client[:born] & creators.alive[:born] & (on_offer > 0))
    if len(bots) == 0 or len(clients) == 0:
        return None
    owed = np.bincount(goods.owner[arrivals.published], weights=arrivals.publish_costs, minlength=born).astype(np.int64)[:born]
    spare = np.maximum(state.ledger.balances["creators"][clients] - owed[clients], 0)
    wanted = np.minimum(cfg.orders, spare // cfg.fee) if cfg.fee else np.full(len(clients), cfg.orders)
    user_index, column = np.nonzero(allocation.exposures[bots] >= 0)
    orders = rng.permutation(np.repeat(clients, wanted))
    delivered = min(len(orders), len(user_index))
    orders = orders[:delivered]
    places = rng.permutation(len(user_index))[:delivered]
    first = np.searchsorted(owner, orders, side="left")
    picked = live[first + np.minimum((rng.random(delivered) * on_offer[orders]).astype(np.int64), on_offer[orders] - 1)]
    exposures = allocation.exposures.copy()
    farmed = np.zeros(exposures.shape, dtype=bool)
    rows, columns = bots[user_index[places]], column[places]
    exposures[rows, columns] = picked
    farmed[rows, columns] = True
    fees = np.bincount(orders, minlength=born).astype(np.int64) * cfg.fee
    payers = np.flatnonzero(fees)
    state.ledger.transfer("farm_fees", "creators", payers, "fraudsters", np.zeros(len(payers), dtype=np.int64), fees[payers])
    return FarmWork(replace(allocation, exposures=exposures), farmed, fees, delivered)


def consume_with_bots(
    state: MarketState, allocation: Allocation, farmed: np.ndarray | None, scenario: Scenario, rng: np.random.Generator
) -> Consumption:
    """Humans choose through the consumption stage, bots act as bots; one Consumption in the
    allocation's row order, with `bots` marking the bot rows."""
    is_bot = state.users.bot[allocation.users]
    if not is_bot.any():
        return consume(state, allocation, scenario, rng)
    humans, bots = np.flatnonzero(~is_bot), np.flatnonzero(is_bot)
    human = consume(state, _rows(allocation, humans), scenario, rng)
    bot = _bots_act(state, _rows(allocation, bots), None if farmed is None else farmed[bots], scenario, rng)
    return _merge(allocation, humans, human, bots, bot, is_bot)


def _rows(allocation: Allocation, index: np.ndarray) -> Allocation:
    return replace(
        allocation,
        users=allocation.users[index],
        exposures=allocation.exposures[index],
        ads=allocation.ads[index],
        ad_prices=allocation.ad_prices[index],
        ad_click_rates=allocation.ad_click_rates[index],
    )


def _bots_act(state: MarketState, allocation: Allocation, farmed: np.ndarray | None, scenario: Scenario, rng: np.random.Generator) -> Consumption:
    cfg = scenario.adversaries.bots
    goods = state.goods
    exposures = allocation.exposures
    shown = exposures >= 0
    consumed = shown & (rng.random(exposures.shape) < cfg.consume_rate)
    if farmed is not None:
        consumed |= farmed
    ads = allocation.ads
    targeted = ads >= 0
    if cfg.target == "rivals":
        targeted &= ads != state.users.sponsor[allocation.users][:, None]
    clicked = targeted & (rng.random(ads.shape) < cfg.click_rate)
    size = goods.capacity()
    goods.exposures += np.bincount(exposures[shown], minlength=size)
    goods.consumptions += np.bincount(exposures[consumed], minlength=size)
    rows = len(allocation.users)
    return Consumption(
        allocation.users,
        consumed,
        np.zeros(exposures.shape, dtype=FLOAT),
        np.zeros(exposures.shape, dtype=bool),
        clicked,
        np.zeros(rows, dtype=FLOAT),
        np.zeros(0, dtype=np.int64),
        np.zeros(exposures.shape, dtype=FLOAT),
    )


def _merge(allocation: Allocation, humans: np.ndarray, human: Consumption, bots: np.ndarray, bot: Consumption, is_bot: np.ndarray) -> Consumption:
    def both(name: str) -> np.ndarray:
        first, second = getattr(human, name), getattr(bot, name)
        out = np.zeros((len(allocation.users), *first.shape[1:]), dtype=first.dtype)
        out[humans] = first
        out[bots] = second
        return out

    return Consumption(
        allocation.users,
        both("consumed"),
        both("value"),
        both("bought"),
        both("clicked"),
        both("utility"),
        human.churned,
        both("intrinsic"),
        bots=is_bot,
    )


def pay_click_farm(state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario) -> int:
    """Each sponsor pays the fraud operator `fee_per_click` per fake click its bots made, as far
    as its wallet covers; returns the fees paid."""
    fee = scenario.adversaries.bots.fee_per_click
    if fee == 0 or consumption.bots is None:
        return 0
    bot_clicks = np.count_nonzero(consumption.clicked & consumption.bots[:, None], axis=1)
    sponsor = state.users.sponsor[allocation.users]
    paying = (bot_clicks > 0) & (sponsor >= 0)
    owed = np.bincount(sponsor[paying], weights=bot_clicks[paying], minlength=state.advertisers.capacity()).astype(np.int64) * fee
    paid = np.minimum(owed, state.ledger.balances["advertisers"][: len(owed)])
    payers = np.flatnonzero(paid)
    state.ledger.transfer("click_fraud_fees", "advertisers", payers, "fraudsters", np.zeros(len(payers), dtype=np.int64), paid[payers])
    return int(paid.sum())
