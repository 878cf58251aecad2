"""Ad auctions: one per user, compiled (numba), with or without budget throttling.

Each user has `slots` ad positions; position j multiplies click rates by `position_ctr[j]`
(non-increasing). Bidders are ranked by bid × predicted click rate (the quality score; ties go
to the lower index), bids under the reserve and zero bids do not take part, neither do bidders
the user would never click (predicted rate 0), and prices are per click, in whole minor units:

- `first_price`: each winner pays its own bid;
- `gsp` (generalised second price): the winner of position j pays the least bid that keeps its
  rank, next score / own predicted click rate;
- `second_price`: the threshold (VCG) price: Σ over the positions k it holds or beats of
  (θ_k − θ_{k+1}) × max(next score below k, reserve × its own click rate), per click. Without a
  reserve it is the externality a winner imposes on the bidders below; with one it is the least
  bid that would still win each position, so truthful bidding stays dominant (a price of
  max(VCG, reserve) would not be: bidding above value to climb a position could pay). With one
  slot it is the classic second-price (Vickrey) auction with a reserve.

`run_auctions` resolves a block of users against fixed bids. `sell_with_throttling` resolves
users one after another, each over the ad slots that user has, and takes an advertiser out of the auctions as soon as its expected
spend reaches what it has left for the tick: exact throttling, user by user, with no block
granularity. `sell_matched` is the same for users taken in a given order straight from their
dot products with the advertisers' targeting, the predicted click rates computed per user in the
pass (the allocation stage's auctions). All run the same per-user auction, `_resolve`, inlined
with its helpers: a call that passes arrays costs numba a reference count per array, which made
up most of a user's sale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from simulator.market.values import matched_click_rate

FORMATS = {"first_price": 0, "gsp": 1, "second_price": 2}
_FIRST_PRICE, _GSP, _SECOND_PRICE = 0, 1, 2


@dataclass(frozen=True)
class AuctionOutcome:
    winners: np.ndarray  # (users, slots) advertiser index per position, -1 if unfilled
    price_per_click: np.ndarray  # (users, slots) int64 minor units, 0 where unfilled


@njit(cache=True, error_model="numpy", inline="always")
def _resolve(bids, eligible, ctr, position_ctr, auction_format, reserve, ranked, scores, winners, prices):
    """One user's auction over the bidders with eligible[b]; fills winners[:slots] and prices[:slots].

    `ranked`/`scores` are scratch of length slots + 1: the best slots + 1 bidders by score, kept
    sorted by insertion (bidders are few, positions fewer). Division by zero gives inf/nan
    (error_model="numpy"), and a price that is not finite falls back to the bid.
    """
    slots = winners.shape[0]
    depth = slots + 1
    for k in range(depth):
        ranked[k] = -1
        scores[k] = -np.inf
    for bidder in range(bids.shape[0]):
        if not eligible[bidder] or not ctr[bidder] > 0.0:
            continue
        score = ctr[bidder] * bids[bidder]
        if not score > scores[depth - 1]:
            continue  # ties keep the earlier (lower-index) bidder ahead
        k = depth - 1
        while k > 0 and score > scores[k - 1]:
            ranked[k] = ranked[k - 1]
            scores[k] = scores[k - 1]
            k -= 1
        ranked[k] = bidder
        scores[k] = score
    for j in range(slots):
        winner = ranked[j]
        winners[j] = winner
        if winner < 0:
            prices[j] = 0
            continue
        own_bid = float(bids[winner])
        own_ctr = ctr[winner] if ctr[winner] > 0.0 else 1.0
        if auction_format == _FIRST_PRICE:
            price = own_bid
        elif auction_format == _GSP:
            price = _next_score(scores, j) / own_ctr
        else:
            price = _threshold_payment(scores, position_ctr, j, reserve * own_ctr) / (position_ctr[j] * own_ctr)
        if not np.isfinite(price):
            price = own_bid  # a degenerate 0/0 from vanishing click rates: the most it agreed to pay
        price = np.ceil(price - 1e-9)
        prices[j] = np.int64(min(max(price, float(reserve)), own_bid))


@njit(cache=True, inline="always")
def _next_score(scores, j):
    """The score ranked just below position j (0 where nobody is)."""
    return scores[j + 1] if scores[j + 1] > -np.inf else 0.0


@njit(cache=True, inline="always")
def _threshold_payment(scores, position_ctr, j, reserve_score):
    """What the winner of position j pays per impression in the truthful (VCG / Myerson threshold)
    auction with a reserve: Σ_{k≥j} (θ_k − θ_{k+1}) × max(next score below k, reserve × its own
    click rate), the least score that would still hold each position k, times the clicks that
    position adds. Without a reserve it is the VCG externality on the bidders below."""
    slots = position_ctr.shape[0]
    payment = 0.0
    for k in range(j, slots):
        theta_next = position_ctr[k + 1] if k + 1 < slots else 0.0
        payment += (position_ctr[k] - theta_next) * max(_next_score(scores, k), reserve_score)
    return payment


@njit(cache=True, error_model="numpy")
def _run_auctions(bids, ctr, position_ctr, auction_format, reserve, winners, prices):
    eligible = (bids > 0) & (bids >= reserve)
    depth = winners.shape[1] + 1
    ranked = np.empty(depth, dtype=np.int64)
    scores = np.empty(depth, dtype=np.float64)
    for user in range(ctr.shape[0]):
        _resolve(bids, eligible, ctr[user], position_ctr, auction_format, reserve, ranked, scores, winners[user], prices[user])


@njit(cache=True, error_model="numpy", inline="always")
def _sell_to_user(
    bids, eligible, remaining, ctr, offered, position_ctr, calibration, auction_format, reserve, ranked, scores, winners, paid, ads, prices, rates
):
    """One user's auction over its first `offered` slots: fills its rows ads/prices/rates, debits
    each winner's `remaining` by the sale's expected cost and takes it out once that runs out."""
    _resolve(bids, eligible, ctr, position_ctr[:offered], auction_format, reserve, ranked, scores, winners[:offered], paid[:offered])
    for j in range(offered):
        winner = winners[j]
        if winner < 0:
            continue
        ads[j] = winner
        prices[j] = paid[j]
        rates[j] = ctr[winner] * position_ctr[j]
        remaining[winner] -= paid[j] * rates[j] * calibration[winner]
        if not remaining[winner] > 0.0:
            eligible[winner] = False


@njit(cache=True, error_model="numpy")
def _sell_with_throttling(
    bids, remaining, ctr, shown_slots, position_ctr, calibration, auction_format, reserve, ads, prices, rates
):
    eligible = (bids > 0) & (bids >= reserve) & (remaining > 0.0)
    depth = ads.shape[1] + 1
    ranked = np.empty(depth, dtype=np.int64)
    scores = np.empty(depth, dtype=np.float64)
    winners = np.empty(depth - 1, dtype=np.int64)
    paid = np.empty(depth - 1, dtype=np.int64)
    for user in range(ctr.shape[0]):
        # Each user's auction sells the slots that user has, and prices them over those alone.
        offered = min(shown_slots[user], ads.shape[1])
        if offered > 0:
            _sell_to_user(
                bids, eligible, remaining, ctr[user], offered, position_ctr, calibration, auction_format, reserve,
                ranked, scores, winners, paid, ads[user], prices[user], rates[user],
            )  # fmt: skip


@njit(cache=True, error_model="numpy")
def _sell_matched(
    bids, remaining, products, click_rate, rows, shown_slots, position_ctr, calibration, auction_format, reserve, ads, prices, rates
):
    eligible = (bids > 0) & (bids >= reserve) & (remaining > 0.0)
    depth = ads.shape[1] + 1
    ranked = np.empty(depth, dtype=np.int64)
    scores = np.empty(depth, dtype=np.float64)
    winners = np.empty(depth - 1, dtype=np.int64)
    paid = np.empty(depth - 1, dtype=np.int64)
    ctr = np.empty(bids.shape[0], dtype=np.float64)
    for i in range(rows.shape[0]):
        user = rows[i]
        offered = min(shown_slots[user], ads.shape[1])
        if offered <= 0:
            continue
        for bidder in range(ctr.shape[0]):
            ctr[bidder] = matched_click_rate(products[i, bidder], click_rate)
        _sell_to_user(
            bids, eligible, remaining, ctr, offered, position_ctr, calibration, auction_format, reserve,
            ranked, scores, winners, paid, ads[user], prices[user], rates[user],
        )  # fmt: skip


def _format_code(auction_format: str | int) -> int:
    """The pricing branch of a format: its name, or the code a registered format declares."""
    if isinstance(auction_format, int) and auction_format in FORMATS.values():
        return auction_format
    if auction_format not in FORMATS:
        raise ValueError(f"unknown auction format {auction_format!r}")
    return FORMATS[auction_format]


def run_auctions(
    bids: np.ndarray,
    predicted_ctr: np.ndarray,
    slots: int,
    position_ctr: np.ndarray,
    auction_format: str,
    reserve_price: int = 0,
) -> AuctionOutcome:
    """Resolve one auction per row of `predicted_ctr` (users × advertisers).

    `bids` (advertisers,) are per-click bids in minor units; bidders with a bid of 0 (out of
    budget) or under the reserve are out.
    """
    code = _format_code(auction_format)
    users, bidders = predicted_ctr.shape
    winners = np.full((users, slots), -1, dtype=np.int64)
    prices = np.zeros((users, slots), dtype=np.int64)
    if slots == 0 or bidders == 0 or users == 0:
        return AuctionOutcome(winners, prices)
    _run_auctions(
        np.asarray(bids, dtype=np.int64),
        np.ascontiguousarray(predicted_ctr, dtype=np.float64),
        np.asarray(position_ctr[:slots], dtype=np.float64),
        code,
        int(reserve_price),
        winners,
        prices,
    )
    return AuctionOutcome(winners, prices)


def sell_with_throttling(
    bids: np.ndarray,
    remaining: np.ndarray,
    predicted_ctr: np.ndarray,
    shown_slots: np.ndarray,
    position_ctr: np.ndarray,
    calibration: np.ndarray,
    auction_format: str,
    reserve_price: int,
    ads: np.ndarray,
    prices: np.ndarray,
    rates: np.ndarray,
) -> None:
    """Auction row by row; fill ads/prices/rates (users × slots) for each row's first
    shown_slots[i] positions and debit `remaining` (float64, per advertiser, in place) by each
    sale's expected cost: price × predicted click rate at its position × `calibration`.

    An advertiser bids while its remaining budget is positive, so its expected spend overshoots
    by at most one user's ads.
    """
    if ads.shape[1] == 0 or predicted_ctr.shape[1] == 0:
        return
    _sell_with_throttling(
        np.asarray(bids, dtype=np.int64),
        remaining,
        np.ascontiguousarray(predicted_ctr, dtype=np.float64),
        np.asarray(shown_slots, dtype=np.int64),
        np.asarray(position_ctr[: ads.shape[1]], dtype=np.float64),
        np.asarray(calibration, dtype=np.float64),
        _format_code(auction_format),
        int(reserve_price),
        ads,
        prices,
        rates,
    )


def sell_matched(
    bids: np.ndarray,
    remaining: np.ndarray,
    products: np.ndarray,
    click_rate: float,
    rows: np.ndarray,
    shown_slots: np.ndarray,
    position_ctr: np.ndarray,
    calibration: np.ndarray,
    auction_format: str | int,
    reserve_price: int,
    ads: np.ndarray,
    prices: np.ndarray,
    rates: np.ndarray,
) -> None:
    """`sell_with_throttling` for the users `rows` (in that order) straight from the dot products
    of their queries with the advertisers' targeting (`products`, float32, one row per entry of
    `rows`): each user's predicted click rates, `click_rate × match`, are computed in the pass and
    its sales written into row `rows[i]` of ads/prices/rates (users × slots) and of `shown_slots`,
    so no (users, advertisers) rates, gathered rows or scatter back are made. Same bytes as
    `sell_with_throttling(bids, remaining, click_rate * match(...), shown_slots[rows], ...)` on
    the gathered rows (tests/test_ad_kernels.py)."""
    if ads.shape[1] == 0 or products.shape[1] == 0:
        return
    if products.dtype != np.float32:
        raise ValueError(f"products must be float32 (the state's vectors' dtype), not {products.dtype}")
    _sell_matched(
        np.asarray(bids, dtype=np.int64),
        remaining,
        products,
        float(click_rate),
        np.asarray(rows, dtype=np.int64),
        np.asarray(shown_slots, dtype=np.int64),
        np.asarray(position_ctr[: ads.shape[1]], dtype=np.float64),
        np.asarray(calibration, dtype=np.float64),
        _format_code(auction_format),
        int(reserve_price),
        ads,
        prices,
        rates,
    )
