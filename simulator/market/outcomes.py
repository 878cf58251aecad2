"""What each stage of a tick produces: the values the stages pass on, and metrics, rules and panels read.

They live below the stages and the rules so that a payout rule can read an `Allocation` and a
`Consumption` without importing the stages that make them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arrivals:
    active: np.ndarray  # user rows active this tick
    budgets: np.ndarray  # attention units each active user brings (int)
    published: np.ndarray  # catalogue rows published this tick
    publish_costs: np.ndarray  # production cost of each published good (minor units)
    ad_budgets: np.ndarray  # per advertiser: the most it may spend this tick
    new_users: np.ndarray  # user rows that joined this tick


@dataclass(frozen=True)
class AllocationMode:
    """How a tick's content was allocated: `exact` (every live good scored for every user) or
    `ivf` (candidate sets, see simulator/candidates.py), and why."""

    mode: str
    reason: str


@dataclass(frozen=True)
class Allocation:
    users: np.ndarray  # active user rows, as in Arrivals
    exposures: np.ndarray  # (users, K) catalogue rows in feed order, -1 padded
    ads: np.ndarray  # (users, slots) advertiser per ad position, -1 if none
    ad_prices: np.ndarray  # (users, slots) price per click, minor units
    ad_click_rates: np.ndarray  # (users, slots) predicted click rate of the ad shown there
    ad_slots_offered: int  # ad positions users had attention for, filled or not
    mode: AllocationMode = AllocationMode("exact", "")  # exact or candidate (ivf) content allocation

    def attention_allocated(self) -> int:
        return int(np.count_nonzero(self.exposures >= 0) + np.count_nonzero(self.ads >= 0))


@dataclass(frozen=True)
class Consumption:
    users: np.ndarray  # active user rows
    consumed: np.ndarray  # (users, K) bool
    value: np.ndarray  # (users, K) float32 value of each exposure (held attention × quality × match)
    bought: np.ndarray  # (users, K) bool
    clicked: np.ndarray  # (users, slots) bool
    utility: np.ndarray  # (users,) realised utility this tick
    churned: np.ndarray  # user rows that left this tick
    intrinsic: np.ndarray  # (users, K) float32 value at full attention (quality × taste match): a good's contribution in the user games


@dataclass(frozen=True)
class Settlement:
    creator_exposure: np.ndarray  # per creator row: exposures this tick
    creator_income: np.ndarray  # per creator row: sales + payouts this tick (minor units)
    creators_in_tick: np.ndarray  # per creator row: active during the tick (alive before exits)
    good_weights: np.ndarray  # per catalogue row: what the payout rule credited each good this tick
    advertiser_value: int  # value advertisers gained from clicks this tick
    ad_free_deliveries: int  # billable ad events delivered after the advertiser's budget ran out
    entries: int
    exits: int


@dataclass(frozen=True)
class TickOutcome:
    """What each stage of one tick produced, for metrics and panels."""

    arrivals: Arrivals
    allocation: Allocation
    consumption: Consumption
    settlement: Settlement
