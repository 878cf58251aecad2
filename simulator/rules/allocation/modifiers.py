"""Rule modifiers: they compose with any allocation rule (see docs/rules/allocation_modifiers.md).

- Score adjustments, added to the rule's log-weights before masking: the clickbait penalty,
  `+ log(penalty)` (penalty ∈ [0, 1] set by the circulation stage, 1 = none), and seed 002's
  engagement weighting, `+ α·p/(p + r + c)` from a good's lifetime purchases p, exposures r and
  consumptions c (α = `engagement_weight`; 0/0 counts as 0).
- Fairness floor f: each content unit is, with probability β = min(1, f·N), a fairness unit
  (N = creators with live goods). A fairness unit goes to a creator drawn uniformly among
  those with a good the user may still be shown, and shows one of that creator's goods (the
  best by the rule's score for deterministic rules, else drawn ∝ exp(score)); the other
  units follow the rule. So each creator with live goods gets at least β/N = f of the
  expected exposure (when f·N ≤ 1).
- Creator cap: after a block of users is allocated, no creator may hold more than
  ⌈cap × R⌉ exposures this tick (R = content units users requested so far this tick, this
  block included). Exposures of a creator beyond its limit are withdrawn at random and the
  freed units are allocated again by the rule with the capped creators' goods masked, until
  every creator is within its limit. So a creator's share of the tick's content exposure A
  is at most ⌈cap × R⌉ / A: cap up to rounding when every unit is allocated (A = R); when
  cap × N < 1 not every unit can be placed and the rest stay unallocated.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.creators import (
    CreatorSegments,
    compact_rows,
    pick_in_segments,
    segment_max,
)
from simulator.scenario.schema import Scenario

# (scores, counts, the block rows they are for or None for all) -> positions in feed order
Select = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def score_adjustment(state: MarketState, rows: np.ndarray, scenario: Scenario) -> np.ndarray | None:
    """Per catalogue row in `rows`: what the penalty and engagement weighting add to every score."""
    goods = state.goods
    adjustment = np.zeros(len(rows), dtype=np.float64)
    penalty = goods.penalty[rows]
    changed = False
    if (penalty != 1.0).any():
        with np.errstate(divide="ignore"):
            adjustment += np.log(np.clip(penalty.astype(np.float64), 0.0, None))
        changed = True
    alpha = scenario.allocation.engagement_weight
    if alpha:
        p = goods.purchases[rows].astype(np.float64)
        total = p + goods.exposures[rows] + goods.consumptions[rows]
        adjustment += alpha * np.divide(p, total, out=np.zeros_like(p), where=total > 0)
        changed = True
    return adjustment.astype(FLOAT) if changed else None


def fairness_units(
    scores: np.ndarray,
    counts: np.ndarray,
    share: float,
    segments: CreatorSegments,
    deterministic: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """(rows, max(counts)) positions: the goods of this block's fairness units in their feed
    places, -1 elsewhere. Picked goods are set to -inf in `scores`, in place."""
    rows = scores.shape[0]
    width = int(counts.max(initial=0))
    fair = np.full((rows, width), -1, dtype=np.int64)
    if width == 0 or len(segments) == 0:
        return fair
    beta = min(1.0, share * len(segments))
    reserved = (rng.random((rows, width)) < beta) & (np.arange(width)[None, :] < counts[:, None])
    row, place = np.nonzero(reserved)
    if len(row) == 0:
        return fair
    eligible = np.isfinite(segment_max(scores, segments))
    available = eligible.sum(axis=1)
    has = available[row] > 0
    row, place = row[has], place[has]
    # A uniform draw among each user's eligible creators: the k-th eligible one, k uniform.
    kth = np.minimum((rng.random(len(row)) * available[row]).astype(np.int64), available[row] - 1)
    running = np.cumsum(eligible, axis=1)
    offsets = np.arange(rows, dtype=np.int64)[:, None] * (len(segments) + 1)
    creator = np.searchsorted((running + offsets).ravel(), kth + 1 + offsets[row, 0], side="left") - row * len(segments)
    fair[row, place] = pick_in_segments(scores, row, creator, segments, None if deterministic else rng)
    return fair


def merge_feed(fair: np.ndarray, ruled: np.ndarray) -> np.ndarray:
    """Fairness goods keep their places; the rule's goods fill the other places in order."""
    rows, width = fair.shape
    feed = fair.copy()
    free = feed < 0
    # The j-th free place of a row takes the rule's j-th good.
    rank = np.cumsum(free, axis=1) - 1
    take = free & (rank < ruled.shape[1])
    feed[take] = ruled[np.nonzero(take)[0], rank[take]]
    return compact_rows(feed)


class CreatorCap:
    """Keeps every creator within ⌈cap × content units requested so far this tick⌉, block by block."""

    def __init__(self, cap: float, segments: CreatorSegments):
        self.cap = cap
        self.segments = segments
        self.used = np.zeros(len(segments), dtype=np.int64)
        self.requested = 0

    def begin_block(self, scores: np.ndarray, block_units: int) -> None:
        """Count the block's units into the tick's total and mask creators already at their limit."""
        self.requested += block_units
        self.limit = int(np.ceil(self.cap * self.requested))
        full = self.used >= self.limit
        if full.any():
            scores[:, np.isin(self.segments.of_position, np.flatnonzero(full))] = -np.inf

    def enforce(self, feed: np.ndarray, scores: np.ndarray, select: Select, rng: np.random.Generator) -> np.ndarray:
        """Withdraw exposures beyond the limits and reallocate them, until all creators fit."""
        segments = self.segments
        room = np.maximum(self.limit - self.used, 0)
        while True:
            shown = feed >= 0
            creator = np.where(shown, segments.of_position[np.maximum(feed, 0)], -1)
            block = np.bincount(creator[shown], minlength=len(segments))
            over = block > room
            if not over.any():
                break
            # Keep `room` of each capped creator's exposures, chosen at random; withdraw the rest.
            row, place = np.nonzero(shown & over[np.maximum(creator, 0)])
            owner = creator[row, place]
            order = np.lexsort((rng.random(len(row)), owner))
            row, place, owner = row[order], place[order], owner[order]
            rank = np.arange(len(owner)) - np.searchsorted(owner, owner, side="left")
            withdraw = rank >= room[owner]
            feed[row[withdraw], place[withdraw]] = -1
            scores[:, np.isin(segments.of_position, np.flatnonzero(over))] = -np.inf
            # Reallocate the freed units of the affected users, never repeating what they hold.
            users, freed = np.unique(row[withdraw], return_counts=True)
            sub_scores = scores[users].copy()
            held = feed[users]
            held_row, held_place = np.nonzero(held >= 0)
            sub_scores[held_row, held[held_row, held_place]] = -np.inf
            refill = select(sub_scores, freed, users)
            merged = np.concatenate([compact_rows(held), np.full((len(users), refill.shape[1]), -1, dtype=np.int64)], axis=1)
            kept = (held >= 0).sum(axis=1)
            refill_row, refill_place = np.nonzero(refill >= 0)
            merged[refill_row, kept[refill_row] + refill_place] = refill[refill_row, refill_place]
            feed[users] = merged[:, : feed.shape[1]]
        self.used += block
        return feed
