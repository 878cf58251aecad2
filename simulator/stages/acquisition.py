"""Stage 1, acquisition: who shows up with how much attention, what gets published, what expires.

Reads and updates the market state in place and returns what the later stages of the tick
need; all randomness comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np

from simulator.market.outcomes import Arrivals
from simulator.market.populations import (
    add_users,
    production_cost,
    publish,
    retire_goods,
)
from simulator.market.state import MarketState
from simulator.rules.bidding import BiddingStrategy, set_bids
from simulator.scenario.schema import Scenario


def acquire(state: MarketState, bidding: BiddingStrategy, scenario: Scenario, rng: np.random.Generator) -> Arrivals:
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

    published, costs = _publish_goods(state, scenario, rng)
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


def _publish_goods(state: MarketState, scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each alive creator publishes a Poisson number of goods, as many as its wallet can pay for;
    creators below the minimum-quality bar (`circulation.min_quality`) publish nothing."""
    creators = state.creators
    alive = creators.alive[: state.creators_born]
    rows = np.flatnonzero(alive & (creators.quality[: state.creators_born] >= scenario.circulation.min_quality))
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    unit_cost = production_cost(scenario, creators.quality[rows])
    wanted = rng.poisson(creators.publish_rate[rows])
    affordable = state.ledger.balances["creators"][rows] // np.maximum(unit_cost, 1)
    count = np.minimum(wanted, affordable)
    owners = np.repeat(rows, count)
    lifetimes = np.full(len(owners), scenario.population.goods.lifetime, dtype=np.int32)
    published = publish(state, owners, scenario, rng, lifetimes)
    return published, np.repeat(unit_cost, count)
