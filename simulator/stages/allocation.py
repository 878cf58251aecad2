"""Stage 2, allocation: split each active user's attention into content exposures and ad slots.

Ads take attention: each ad slot uses one unit of the user's budget, and the platform always
keeps at least one unit for content; slots no advertiser buys go back to content. Content goes through the allocator (the scenario's rule);
ad slots are sold by auction, user by user, among advertisers with budget left this tick.
"""

from __future__ import annotations

import numpy as np

from simulator.market.catalogue import Catalogue
from simulator.market.kernels import NonFiniteScores
from simulator.market.outcomes import Allocation, Arrivals
from simulator.market.state import MarketState
from simulator.market.streams import EntityDraws
from simulator.market.values import position_click_factors
from simulator.metrics.invariants import InvariantViolation
from simulator.rules.allocation.base import AllocationRule
from simulator.rules.allocation.engine import (
    allocate_exposures,
    block_rows,
    resolve_mode,
)
from simulator.rules.auction import sell_matched
from simulator.rules.formats import AUCTION_FORMATS
from simulator.scenario.schema import Scenario


def allocate(state: MarketState, arrivals: Arrivals, rule: AllocationRule, scenario: Scenario, rng: np.random.Generator) -> Allocation:
    # Keyed by user and good (market/streams.py); the key is the stream's first draw, the same in
    # every arm whoever showed up.
    draws = EntityDraws.of(rng)
    slots = scenario.allocation.ad_slots if state.advertisers.capacity() else 0
    ad_counts = np.minimum(slots, np.maximum(arrivals.budgets - 1, 0))
    ads, prices, click_rates = _sell_ad_slots(state, arrivals, ad_counts, slots, scenario, draws)
    # Attention for slots no advertiser bought goes back to content.
    content_counts = arrivals.budgets - np.count_nonzero(ads >= 0, axis=1)
    catalogue = Catalogue.of(state)
    mode = resolve_mode(scenario, rule, len(catalogue.rows))
    try:
        exposures = allocate_exposures(state, catalogue, arrivals.active, content_counts, rule, scenario, rng, mode=mode.mode, draws=draws)
    except NonFiniteScores as exc:
        raise InvariantViolation(
            state.tick, "finite_floats", f"{exc} (the {scenario.allocation.rule} rule at temperature {scenario.allocation.temperature:g})"
        ) from None
    return Allocation(arrivals.active, exposures, ads, prices, click_rates, int(ad_counts.sum()), mode)


def _sell_ad_slots(
    state: MarketState, arrivals: Arrivals, ad_counts: np.ndarray, slots: int, scenario: Scenario, draws: EntityDraws
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Auction every user's ad positions, users in random order (keyed by user), taking each
    advertiser out of the auctions once its expected spend reaches its budget for the tick."""
    users = arrivals.active
    ads = np.full((len(users), slots), -1, dtype=np.int64)
    prices = np.zeros((len(users), slots), dtype=np.int64)
    click_rates = np.zeros((len(users), slots), dtype=np.float64)
    advertisers = state.advertisers
    if slots == 0 or len(users) == 0:
        return ads, prices, click_rates
    click_rate = scenario.population.advertisers.click_rate
    positions = position_click_factors(scenario)
    auction = scenario.circulation.auction
    remaining = arrivals.ad_budgets.astype(np.float64)
    # Per click, expected spend follows the clicks advertisers actually get (their calibration);
    # per impression, the charge is the predicted click rate's, whatever the clicks.
    per_click = auction.pricing == "per_click"
    calibration = advertisers.click_calibration if per_click else np.ones(advertisers.capacity())
    order = draws.stream("ad_auction_order").order(users)
    step = block_rows(advertisers.capacity(), scenario.allocation.block_elements)
    code = AUCTION_FORMATS.resolve(auction.format).code
    for start in range(0, len(users), step):
        # The product stays in BLAS (its bits are BLAS's); the rest is one compiled pass per block.
        index = order[start : start + step]
        products = np.take(state.users.query, users[index], axis=0) @ advertisers.targeting.T
        sell_matched(
            advertisers.bid, remaining, products, click_rate, index, ad_counts, positions, calibration,
            code, auction.reserve_price, ads, prices, click_rates,
        )  # fmt: skip
    return ads, prices, click_rates
