"""Pay per exposure and engagement (`circulation.exposure_pay`): a direct income source for creators.

Exposure-game papers pay producers per exposure (or per engagement) of their goods, not from
sales or an ad-funded pool. Here a creator is owed `per_exposure` for each exposure of its goods
this tick and `per_engagement` for each consumption, in whole minor units. The money comes from
outside the economy (a creator fund: injected into the ledger as the `exposure_pay` flow, like
user income), so it never overdraws anyone and conservation holds. When `budget_per_tick` is
smaller than what is owed, the budget is split pro rata to what each creator is owed, exactly
(`split_exactly`). The eligibility is the payout pool's: alive, at the quality bar, admitted by
the defences (clones' goods earn nothing, gated creators nothing).

Circulation pays it; adaptation shows it to creators through `effective_rates`, the money an
exposure (and a consumption) of a new good would bring this tick, the budget's cap included.
"""

from __future__ import annotations

import numpy as np

from simulator.market.ledger import split_exactly
from simulator.market.outcomes import Allocation, Consumption
from simulator.market.populations import meets_quality_bar
from simulator.market.state import MarketState
from simulator.rules.defences import payable_creators, payable_goods
from simulator.scenario.schema import ExposurePayConfig, Scenario


def is_on(cfg: ExposurePayConfig) -> bool:
    return cfg.per_exposure > 0 or cfg.per_engagement > 0


def owed_per_good(state: MarketState, allocation: Allocation, consumption: Consumption, cfg: ExposurePayConfig) -> np.ndarray:
    """(goods capacity,) int64: what each good's exposures and consumptions this tick earn at the full rates."""
    size = state.goods.capacity()
    shown = allocation.exposures[allocation.exposures >= 0]
    consumed = allocation.exposures[consumption.consumed]
    return cfg.per_exposure * np.bincount(shown, minlength=size).astype(np.int64) + cfg.per_engagement * np.bincount(
        consumed, minlength=size
    ).astype(np.int64)


def fill_ratio(cfg: ExposurePayConfig, owed_total: int) -> float:
    """Share of what is owed that is paid: 1 unless the budget binds, then budget / owed."""
    if cfg.budget_per_tick is None or owed_total <= cfg.budget_per_tick:
        return 1.0
    return cfg.budget_per_tick / owed_total


def effective_rates(cfg: ExposurePayConfig, fill: float) -> tuple[float, float]:
    """(per exposure, per consumption): what a new good's exposure and consumption bring at this
    tick's fill ratio (`fill_ratio`), the budget's cap included."""
    return cfg.per_exposure * fill, cfg.per_engagement * fill


def owed_per_creator(state: MarketState, owed_by_good: np.ndarray) -> np.ndarray:
    """(creators_born,) int64: what each creator is owed for its goods (integer sums, no float rounding)."""
    owed = np.zeros(state.creators_born, dtype=np.int64)
    goods = np.flatnonzero(owed_by_good)
    np.add.at(owed, state.goods.owner[goods], owed_by_good[goods])
    return owed


def pay_exposures(state: MarketState, owed: np.ndarray, cfg: ExposurePayConfig) -> tuple[np.ndarray, float]:
    """Inject what each creator row is owed (`owed_per_creator`), or the budget split pro rata to it
    when the budget binds; returns (the pay per creator row, the fill ratio)."""
    fill = fill_ratio(cfg, int(owed.sum()))
    paid = owed if fill == 1.0 else split_exactly(int(cfg.budget_per_tick or 0), owed)
    rows = np.flatnonzero(paid)
    state.ledger.inject("exposure_pay", "creators", rows, paid[rows])
    return paid, fill


def pay_for_exposure(
    state: MarketState, allocation: Allocation, consumption: Consumption, scenario: Scenario
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The tick's pay per exposure and engagement, posted. Returns (the pay per creator row, what
    each catalogue row was owed at the full rates or None when off, the fill ratio)."""
    cfg = scenario.circulation.exposure_pay
    if not is_on(cfg):
        return np.zeros(state.creators_born, dtype=np.int64), None, 1.0
    by_good = owed_per_good(state, allocation, consumption, cfg)
    payable = payable_goods(state, scenario)
    creators = state.creators
    born = state.creators_born
    eligible = creators.alive[:born] & meets_quality_bar(scenario, creators.quality[:born])
    gate = payable_creators(state, scenario.defences.identity_gate)
    if gate is not None:
        eligible &= gate
    if payable is not None:
        by_good = np.where(payable, by_good, 0)
    earning = np.flatnonzero(by_good)  # shown goods: live, with an owner
    by_good[earning[~eligible[state.goods.owner[earning]]]] = 0
    paid, fill = pay_exposures(state, owed_per_creator(state, by_good), cfg)
    return paid, by_good, fill
