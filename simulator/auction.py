"""Ad auctions for a block of users, all resolved at once (no Python loop per user).

Each user has `slots` ad positions; position j multiplies click rates by `position_ctr[j]`
(non-increasing). Bidders are ranked by bid × predicted click rate (the quality score), bids
under the reserve do not take part, and prices are per click, in whole minor units:

- `first_price`: each winner pays its own bid;
- `gsp` (generalised second price): the winner of position j pays the least bid that keeps its
  rank, next score / own predicted click rate;
- `second_price`: the VCG price, the externality a winner imposes on the bidders below it. With
  one slot it is the classic second-price (Vickrey) auction, and truthful bidding is dominant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AuctionOutcome:
    winners: np.ndarray  # (users, slots) advertiser index per position, -1 if unfilled
    price_per_click: np.ndarray  # (users, slots) int64 minor units, 0 where unfilled


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
    users, bidders = predicted_ctr.shape
    winners = np.full((users, slots), -1, dtype=np.int64)
    prices = np.zeros((users, slots), dtype=np.int64)
    if slots == 0 or bidders == 0 or users == 0:
        return AuctionOutcome(winners, prices)

    bids = np.asarray(bids, dtype=np.int64)
    in_auction = (bids > 0) & (bids >= reserve_price)
    rank_score = predicted_ctr.astype(np.float64) * np.where(in_auction, bids, 0)[None, :]
    rank_score[:, ~in_auction] = -np.inf
    rank_score[predicted_ctr <= 0] = -np.inf

    depth = min(slots + 1, bidders)
    if depth < bidders:
        top = np.argpartition(-rank_score, depth - 1, axis=1)[:, :depth]
    else:
        top = np.broadcast_to(np.arange(bidders), (users, bidders))
    top_scores = np.take_along_axis(rank_score, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    ranked = np.take_along_axis(top, order, axis=1)
    ranked_scores = np.take_along_axis(top_scores, order, axis=1)
    if depth < slots + 1:  # pad so every position has a "next" bidder
        pad = slots + 1 - depth
        ranked = np.concatenate([ranked, np.full((users, pad), -1)], axis=1)
        ranked_scores = np.concatenate([ranked_scores, np.full((users, pad), -np.inf)], axis=1)

    filled = np.isfinite(ranked_scores[:, :slots])
    winner = np.where(filled, ranked[:, :slots], -1)
    next_scores = np.where(np.isfinite(ranked_scores[:, 1 : slots + 1]), ranked_scores[:, 1 : slots + 1], 0.0)
    own_ctr = np.take_along_axis(predicted_ctr, np.maximum(winner, 0), axis=1).astype(np.float64)
    own_bid = bids[np.maximum(winner, 0)].astype(np.float64)

    if auction_format == "first_price":
        price = own_bid
    elif auction_format == "gsp":
        price = next_scores / np.where(own_ctr > 0, own_ctr, 1.0)
    elif auction_format == "second_price":
        theta = np.asarray(position_ctr[:slots], dtype=np.float64)
        theta_next = np.append(theta[1:], 0.0)
        # Position j's externality: sum over k >= j of (theta_k - theta_{k+1}) * score_{k+1}.
        externality = np.cumsum(((theta - theta_next) * next_scores)[:, ::-1], axis=1)[:, ::-1]
        price = externality / (theta * np.where(own_ctr > 0, own_ctr, 1.0))
    else:
        raise ValueError(f"unknown auction format {auction_format!r}")

    # Whole minor units; never above the bid, never below the reserve (a degenerate 0/0 from
    # vanishing click rates prices at the bid, the most the winner agreed to pay).
    price = np.where(np.isfinite(price), price, own_bid)
    price = np.ceil(price - 1e-9)
    price = np.clip(price, reserve_price, own_bid).astype(np.int64)
    return AuctionOutcome(winner, np.where(filled, price, 0))
