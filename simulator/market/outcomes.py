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
    `ivf` (candidate sets, see simulator/rules/allocation/candidates.py), and why."""

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
    consumed: np.ndarray  # (users, K) bool: taken (content) or bought (products)
    value: np.ndarray  # (users, K) float32 value of each exposure (held attention × quality × match)
    bought: np.ndarray  # (users, K) bool
    clicked: np.ndarray  # (users, slots) bool
    utility: np.ndarray  # (users,) realised utility this tick
    churned: np.ndarray  # user rows that left this tick
    intrinsic: np.ndarray  # (users, K) float32 value at full attention (quality × taste match): a good's contribution in the user games
    blocked: np.ndarray  # (users, K) bool: products chosen but not bought, the wallet did not cover the price
    bots: np.ndarray | None = None  # (users,) bool: the row is a bot session (`adversaries.bots`); None when there are none


@dataclass(frozen=True)
class FraudTick:
    """What fraud and the defences did this tick (see docs/adversarial.md); money in minor units."""

    ad_charges_on_bots: int = 0  # what advertisers were charged for bots' billable events, before refunds
    refunds_to_bots: int = 0  # refunds of bots' events (fraud the click filter caught)
    refunds_to_humans: int = 0  # refunds of humans' events (the filter's false positives)
    honest_events_flagged: int = 0
    farmed_consumptions: int = 0  # fake consumptions delivered by engagement farms
    clones_flagged: int = 0
    honest_clones_flagged: int = 0  # goods of creators who are not sybils
    audits: int = 0
    wrongly_fined: int = 0
    creator_payouts: np.ndarray | None = None  # per creator row: payout received this tick
    creator_charges: np.ndarray | None = None  # per creator row: farm fees and fines paid this tick
    bot_attention_rewards: int = 0  # attention rewards paid to bots


@dataclass(frozen=True)
class Settlement:
    creator_exposure: np.ndarray  # per creator row: exposures this tick
    creator_income: np.ndarray  # per creator row: sales + payouts (+ pay per exposure) this tick (minor units)
    creators_in_tick: np.ndarray  # per creator row: active during the tick (alive before exits)
    good_weights: np.ndarray  # per catalogue row: what the payout rule credited each good this tick
    advertiser_value: int  # value advertisers gained from clicks this tick
    ad_free_deliveries: int  # billable ad events delivered after the advertiser's budget ran out
    entries: int
    exits: int
    fraud: FraudTick = FraudTick()  # fraud and defences; all zero when both are off
    exposure_owed: np.ndarray | None = None  # per catalogue row: pay per exposure/engagement owed at the full rates (`circulation.exposure_pay`), None when off
    exposure_pay_fill: float = 1.0  # share of what was owed that was paid: below 1 when `budget_per_tick` bound


@dataclass(frozen=True)
class TickOutcome:
    """What each stage of one tick produced, for metrics and panels."""

    arrivals: Arrivals
    allocation: Allocation
    consumption: Consumption
    settlement: Settlement
