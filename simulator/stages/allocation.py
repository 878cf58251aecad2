"""Stage 2, allocation: split each active user's attention into content exposures and ad slots.

Ads take attention: each ad slot uses one unit of the user's budget, and the platform always
keeps at least one unit for content. Content goes through the allocator (the scenario's rule);
ad slots are sold by auction among advertisers with budget left this tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..allocator import Catalogue, Rule, allocate_exposures, block_rows
from ..auction import run_auctions
from ..scenario import Scenario
from ..state import MarketState
from .acquisition import Arrivals


@dataclass(frozen=True)
class Allocation:
    users: np.ndarray  # active user rows, as in Arrivals
    exposures: np.ndarray  # (users, K) catalogue rows in feed order, -1 padded
    ads: np.ndarray  # (users, slots) advertiser per ad position, -1 if none
    ad_prices: np.ndarray  # (users, slots) price per click, minor units

    def attention_allocated(self) -> int:
        return int(np.count_nonzero(self.exposures >= 0) + np.count_nonzero(self.ads >= 0))


def match(vectors: np.ndarray, targeting: np.ndarray) -> np.ndarray:
    """How well each advertiser's targeting fits each user, in [0, 1]."""
    return ((1.0 + vectors @ targeting.T) / 2.0) ** 2


def position_click_factors(scenario: Scenario) -> np.ndarray:
    return scenario.allocation.ad_position_decay ** np.arange(scenario.allocation.ad_slots, dtype=np.float64)


def allocate(state: MarketState, arrivals: Arrivals, rule: Rule, scenario: Scenario, rng: np.random.Generator) -> Allocation:
    slots = scenario.allocation.ad_slots if state.advertisers.capacity() else 0
    ad_counts = np.minimum(slots, np.maximum(arrivals.budgets - 1, 0))
    content_counts = arrivals.budgets - ad_counts
    catalogue = Catalogue.of(state)
    exposures = allocate_exposures(state, catalogue, arrivals.active, content_counts, rule, scenario, rng)
    ads, prices = _sell_ad_slots(state, arrivals, ad_counts, slots, scenario)
    return Allocation(arrivals.active, exposures, ads, prices)


def _sell_ad_slots(
    state: MarketState, arrivals: Arrivals, ad_counts: np.ndarray, slots: int, scenario: Scenario
) -> tuple[np.ndarray, np.ndarray]:
    users = arrivals.active
    ads = np.full((len(users), slots), -1, dtype=np.int64)
    prices = np.zeros((len(users), slots), dtype=np.int64)
    advertisers = state.advertisers
    if slots == 0 or len(users) == 0:
        return ads, prices
    bids = np.where(arrivals.ad_budgets > 0, advertisers.bid, 0)
    click_rate = scenario.population.advertisers.click_rate
    positions = position_click_factors(scenario)
    step = block_rows(advertisers.capacity(), scenario.allocation.block_elements)
    for start in range(0, len(users), step):
        block = users[start : start + step]
        predicted = click_rate * match(state.users.query[block], advertisers.targeting)
        outcome = run_auctions(bids, predicted, slots, positions, scenario.circulation.auction.format, scenario.circulation.auction.reserve_price)
        shown = np.arange(slots)[None, :] < ad_counts[start : start + step, None]
        ads[start : start + len(block)] = np.where(shown, outcome.winners, -1)
        prices[start : start + len(block)] = np.where(shown, outcome.price_per_click, 0)
    return ads, prices
