"""Stage 1, acquisition: who shows up with how much attention, what gets published, what expires.

Reads and updates the market state in place and returns what the later stages of the tick
need; all randomness comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np

from simulator.market.outcomes import Arrivals
from simulator.market.populations import (
    add_users,
    meets_quality_bar,
    production_cost,
    publish,
    retire_goods,
)
from simulator.market.state import MarketState
from simulator.market.streams import EntityDraws
from simulator.rules.bidding import BiddingStrategy, set_bids
from simulator.scenario.schema import Scenario


def acquire(state: MarketState, bidding: BiddingStrategy, scenario: Scenario, rng: np.random.Generator) -> Arrivals:
    # Publishing is keyed by creator and good (market/streams.py): the key is the stream's first
    # draw, so it is the same in every arm whichever creators are alive.
    draws = EntityDraws.of(rng)
    users_cfg = scenario.population.users
    new_users = np.zeros(0, dtype=np.int64)
    arriving = int(rng.poisson(users_cfg.arrivals_per_tick)) if users_cfg.arrivals_per_tick else 0
    if arriving:
        new_users = add_users(state, arriving, scenario, rng)
        state.ledger.inject("user_arrival_wallets", "users", new_users, users_cfg.initial_wallet)

    expired = np.flatnonzero(state.goods.live & (state.goods.expires <= state.tick))
    retire_goods(state, expired)

    users = state.users
    born = state.users_born
    show_up = users.activity[:born] * (1.0 - users.fatigue[:born])
    active = np.flatnonzero(users.alive[:born] & (rng.random(born) < show_up))

    published, costs = _publish_goods(state, scenario, draws)
    set_bids(state, bidding, scenario, rng)
    ad_budgets = np.minimum(state.advertisers.budget_per_tick, state.ledger.balances["advertisers"][: state.advertisers.capacity()])
    return Arrivals(
        active=active,
        budgets=users.budget[active].astype(np.int64),
        published=published,
        publish_costs=costs,
        ad_budgets=ad_budgets,
        new_users=new_users,
    )


def publishing_response(profit: np.ndarray, rate: np.ndarray, unit_cost: np.ndarray, scenario: Scenario) -> np.ndarray:
    """How much a creator scales its publishing by its expected profit (its smoothed profit per
    tick, relative to what its usual publishing costs per tick): clip(1 + elasticity × profit /
    (rate × unit cost), 0.1, 2). A creator that loses money publishes less (never quite nothing,
    so it keeps testing the market), one that profits publishes more; elasticity 0 gives the
    fixed rate."""
    elasticity = scenario.population.creators.publish_elasticity
    spending = np.maximum(rate.astype(np.float64) * unit_cost, 1.0)
    return np.clip(1.0 + elasticity * profit.astype(np.float64) / spending, 0.1, 2.0)


def _publish_goods(state: MarketState, scenario: Scenario, draws: EntityDraws) -> tuple[np.ndarray, np.ndarray]:
    """Each alive creator publishes a Poisson number of goods, its rate scaled by its expected
    profit (`publishing_response`), as many as its wallet can pay for; creators below the
    minimum-quality bar (`circulation.min_quality`) publish nothing."""
    creators = state.creators
    alive = creators.alive[: state.creators_born]
    rows = np.flatnonzero(alive & meets_quality_bar(scenario, creators.quality[: state.creators_born]))
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    unit_cost = production_cost(scenario, creators.quality[rows])
    rate = creators.publish_rate[rows] * publishing_response(creators.profit_ema[rows], creators.publish_rate[rows], unit_cost, scenario)
    wanted = draws.stream("publish_count").poisson(rate, rows)
    affordable = state.ledger.balances["creators"][rows] // np.maximum(unit_cost, 1)
    count = np.minimum(wanted, affordable)
    owners = np.repeat(rows, count)
    lifetimes = np.full(len(owners), scenario.population.goods.lifetime, dtype=np.int32)
    published = publish(state, owners, scenario, draws, lifetimes)
    return published, np.repeat(unit_cost, count)
