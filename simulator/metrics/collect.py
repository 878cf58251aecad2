"""Per-tick outcome metrics, computed vectorized from the tick's stage outputs.

The columns are the contract of `metrics.parquet` (see docs/metrics.md); every value is a plain
Python float or int so frames and JSON are exact and byte-stable.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.market.adversaries import is_sybil
from simulator.market.outcomes import Allocation, Arrivals, Consumption, Settlement
from simulator.market.state import MarketState


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, → 1 = one takes all); 0 if all zero."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    n = len(values)
    total = values.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * (ranks * values).sum()) / (n * total) - (n + 1.0) / n)


def hhi(values: np.ndarray) -> float:
    """Herfindahl–Hirschman index of shares (1/n for equal shares, 1 for a monopoly); 0 if all zero."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    if total <= 0:
        return 0.0
    shares = values / total
    return float((shares**2).sum())


def top_share(values: np.ndarray, fraction: float) -> float:
    """Share of the total held by the top `fraction` of entries (at least one entry)."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    if total <= 0 or len(values) == 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(values)))
    return float(np.partition(values, len(values) - k)[len(values) - k :].sum() / total)


def diversity(topics: np.ndarray) -> float:
    """1 − mean pairwise cosine similarity of unit vectors, in O(n·d) via |Σv|²."""
    n = len(topics)
    if n < 2:
        return 0.0
    total = topics.astype(np.float64).sum(axis=0)
    self_similarity = float((topics.astype(np.float64) ** 2).sum())
    mean_cos = (float(total @ total) - self_similarity) / (n * (n - 1))
    return 1.0 - mean_cos


def homogenization(state: MarketState) -> float:
    """Mean Jaccard similarity of the consumed sets (within the window, if any) over the sampled
    pairs of users alive this tick."""
    sample = state.homogenization
    if len(sample.pairs) == 0:
        return 0.0
    total = 0.0
    for a, b in sample.pairs.tolist():
        first, second = sample.consumed[a].keys(), sample.consumed[b].keys()
        common = len(first & second)
        union = len(first) + len(second) - common
        total += common / union if union else 0.0
    return total / len(sample.pairs)


def niche_coverage(state: MarketState) -> float:
    """Mean over the homogenization sample's users of the best cosine between the user's interest
    and an active creator's niche (the sample bounds the cost: ≤ 2 × pairs users × creators)."""
    users = np.unique(state.homogenization.pairs)
    creators = state.creators
    niches = creators.topic[: state.creators_born][creators.alive[: state.creators_born]]
    if len(users) == 0 or len(niches) == 0:
        return math.nan
    return float((state.users.interest[users] @ niches.T).max(axis=1).astype(np.float64).mean())


def collect(
    state: MarketState,
    arrivals: Arrivals,
    allocation: Allocation,
    consumption: Consumption,
    settlement: Settlement,
    flows: dict[str, int],
) -> dict[str, float | int]:
    creators = state.creators
    alive_creators = creators.alive[: state.creators_born]
    # Shares and inequality are over the creators who took part in the tick, leavers included.
    exposure = settlement.creator_exposure[settlement.creators_in_tick]
    income = settlement.creator_income[settlement.creators_in_tick]
    ad_spend = flows.get("ad_spend", 0)
    platform_take = flows.get("platform_take", 0)
    creator_sales = flows.get("creator_sales", 0)
    # Bots have no welfare: user metrics count humans only (`bots` marks bot rows, None when none).
    bots = consumption.bots if consumption.bots is not None else np.zeros(len(consumption.users), dtype=bool)
    utility = consumption.utility[~bots]
    active = len(utility)
    humans_born = state.users_born - int(np.count_nonzero(state.users.bot[: state.users_born]))
    impressions = int(np.count_nonzero(allocation.ads >= 0))
    budgets = int(arrivals.ad_budgets.sum())
    return {
        "tick": state.tick,
        "active_users": active,
        "churned_users": len(consumption.churned),
        "attention_supplied": int(arrivals.budgets.sum()),
        "attention_allocated": allocation.attention_allocated(),
        "consumptions": int(np.count_nonzero(consumption.consumed)),
        "purchases": int(np.count_nonzero(consumption.bought)),
        "ad_clicks": int(np.count_nonzero(consumption.clicked)),
        "user_utility_mean": float(utility.mean()) if active else math.nan,
        "user_welfare": float(utility.sum()) / max(humans_born, 1),
        "exposure_gini_creators": gini(exposure),
        "exposure_hhi_creators": hhi(exposure),
        "top1pct_creator_exposure_share": top_share(exposure, 0.01),
        "creator_income_gini": gini(np.maximum(income, 0)),
        "active_creators": int(np.count_nonzero(alive_creators)),
        "creator_entries": settlement.entries,
        "creator_exits": settlement.exits,
        "supply_diversity": diversity(creators.topic[: state.creators_born][alive_creators]),
        "niche_coverage": niche_coverage(state),
        "homogenization": homogenization(state),
        "user_spend": platform_take + creator_sales,
        "ad_spend": ad_spend,
        "platform_revenue": platform_take + ad_spend,
        "creator_payouts": flows.get("creator_payouts", 0),
        "creator_sales": creator_sales,
        "advertiser_roi": (settlement.advertiser_value - ad_spend) / ad_spend if ad_spend else math.nan,
        "money_conservation_error": state.ledger.conservation_error(),
        "alive_users": int(np.count_nonzero(state.users.alive[: state.users_born] & ~state.users.bot[: state.users_born])),
        "live_goods": int(np.count_nonzero(state.goods.live)),
        "goods_published": len(arrivals.published),
        "user_income": flows.get("user_income", 0),
        "production_costs": flows.get("production_costs", 0),
        "advertiser_value": settlement.advertiser_value,
        "ad_impressions": impressions,
        "ad_fill_rate": impressions / allocation.ad_slots_offered if allocation.ad_slots_offered else 0.0,
        "ad_revenue_per_impression": ad_spend / impressions if impressions else 0.0,
        "advertiser_surplus": settlement.advertiser_value - ad_spend,
        "ad_budget_spent_share": ad_spend / budgets if budgets else 0.0,
        "bid_multiplier_mean": float(state.advertisers.multiplier.mean()) if state.advertisers.capacity() else math.nan,
        "ad_free_deliveries": settlement.ad_free_deliveries,
        "attention_rewards": flows.get("attention_rewards", 0),
        "exposure_pay": flows.get("exposure_pay", 0),
        "penalised_goods": int(np.count_nonzero(state.goods.live & (state.goods.penalty < 1.0))),
        **fraud_metrics(state, consumption, settlement, flows, bots),
    }


def _share(part: float, whole: float) -> float:
    return float(part / whole) if whole > 0 else 0.0


def fraud_metrics(
    state: MarketState, consumption: Consumption, settlement: Settlement, flows: dict[str, int], bots: np.ndarray
) -> dict[str, float | int]:
    """The adversary and defence columns (docs/adversarial.md): who the fraud took from and what defending cost."""
    fraud = settlement.fraud
    clicks = np.count_nonzero(consumption.clicked, axis=1)
    consumed = np.count_nonzero(consumption.consumed, axis=1)
    born = len(settlement.creators_in_tick)
    sybil = np.pad(is_sybil(state), (0, born - state.creators_born))[:born]
    client = state.creators.farm_client[:born]
    payouts = fraud.creator_payouts if fraud.creator_payouts is not None else np.zeros(born, dtype=np.int64)
    charges = fraud.creator_charges if fraud.creator_charges is not None else np.zeros(born, dtype=np.int64)
    honest = settlement.creators_in_tick & ~sybil & ~client
    fines = flows.get("audit_fines", 0)
    return {
        "active_bots": int(np.count_nonzero(bots)),
        "fraud_click_share": _share(clicks[bots].sum(), clicks.sum()),
        "fraud_consumption_share": _share(consumed[bots].sum(), consumed.sum()),
        "farmed_consumptions": fraud.farmed_consumptions,
        "ad_spend_on_fraud": fraud.ad_charges_on_bots,
        "fraud_refunds": fraud.refunds_to_bots,
        "advertiser_fraud_loss": fraud.ad_charges_on_bots - fraud.refunds_to_bots,
        "honest_refunds": fraud.refunds_to_humans,
        "fraudster_revenue": flows.get("farm_fees", 0) + flows.get("click_fraud_fees", 0),
        "sybil_payout_share": _share(payouts[sybil].sum(), payouts.sum()),
        "farm_client_payout_share": _share(payouts[client].sum(), payouts.sum()),
        "bot_reward_share": _share(fraud.bot_attention_rewards, flows.get("attention_rewards", 0)),
        "honest_creator_income": int((settlement.creator_income - charges)[honest].sum()),
        "defence_false_positives": fraud.honest_events_flagged + fraud.honest_clones_flagged + fraud.wrongly_fined,
        "clones_flagged": fraud.clones_flagged,
        "audit_fines": fines,
        "audit_costs": flows.get("audit_costs", 0),
    }
