"""The attention-weight allocator: softmax(QKᵀ/√d / temperature) with masks, in bounded blocks.

A rule is one small piece: it turns a block of users and the live catalogue into a score
matrix (log-weights). The allocator does the rest the same way for every rule: masks goods a
user already consumed, then splits each user's content budget into distinct exposures by
sampling without replacement in proportion to softmax weights (or, for deterministic rules,
taking the best k). Users are processed in blocks so no tick ever holds more than
`allocation.block_elements` scores at once, however many users there are.

The rules that keep state across ticks (`popularity`, `learned`) or select differently
(`shapley`, with its outside option) live in `allocation_rules/`, as do the modifiers that
compose with every rule (clickbait penalty, engagement weighting, fairness floor, creator
cap); `allocate_exposures` applies them in one fixed order.

Queries and keys are unit topic directions; QKᵀ/√d is taken at the scale of standard-normal
embeddings (norm √d), which makes it √d·cos(query, key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .allocation_rules.creators import CreatorSegments
from .allocation_rules.learned import LearnedRule
from .allocation_rules.modifiers import CreatorCap, fairness_units, merge_feed, score_adjustment
from .allocation_rules.popularity import PopularityRule
from .allocation_rules.shapley import ShapleyRule
from .scenario import Scenario
from .state import FLOAT, MarketState


@dataclass(frozen=True)
class Catalogue:
    """The live goods a tick allocates over, packed contiguously for the matrix products."""

    rows: np.ndarray  # catalogue rows of live goods
    keys: np.ndarray  # (g, d) float32, C-contiguous
    quality: np.ndarray  # (g,) float32
    position_of_row: np.ndarray  # catalogue row -> position in `rows`, -1 if not live

    @classmethod
    def of(cls, state: MarketState) -> Catalogue:
        rows = np.flatnonzero(state.goods.live)
        position = np.full(state.goods.capacity(), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        return cls(rows, np.ascontiguousarray(state.goods.key[rows]), state.goods.quality[rows], position)


class Rule(Protocol):
    """Scores for a block of users over the catalogue; higher means more attention.

    Optional extras, looked up with getattr: `prepare(state, scenario, rng)`, called once per
    tick before any block (stateful rules refit there, e.g. `learned`); `pick(scores, counts,
    segments, rng)`, which replaces the softmax sampling or top-k step (the `shapley` mediator);
    `needs_creators = True` when `pick` needs the catalogue grouped by creator.
    """

    deterministic: bool

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class QueryKeyRule:
    """softmax(QKᵀ/√d / T) over the platform's profiles (queries) and goods' keys."""

    temperature: float
    deterministic: bool = False

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        scores = state.users.query[users] @ catalogue.keys.T
        scores *= FLOAT(np.sqrt(dim) / self.temperature)
        return scores


@dataclass(frozen=True)
class UniformRule:
    """Every eligible good equally likely."""

    deterministic: bool = False

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), len(catalogue.rows)), dtype=FLOAT)


@dataclass(frozen=True)
class OracleRule:
    """Softmax over users' true expected value of each good: what a perfect recommender knows.

    The score is √d/T · log E[value] / max(sharpness, 1): with E[value] = quality ·
    exp(sharpness·(cos − 1)) this is √d·cos(interest, key)/T plus a quality term, the same
    scale as `attention_softmax` but with the truth in place of the platform's profiles.
    """

    temperature: float
    sharpness: float
    deterministic: bool = False

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> np.ndarray:
        from .stages.consumption import expected_value

        dim = catalogue.keys.shape[1]
        value = expected_value(state.users.interest[users], catalogue.keys, catalogue.quality, self.sharpness)
        with np.errstate(divide="ignore"):
            scores = np.log(value)  # quality 0 gives -inf: worthless goods are never shown
        scores *= FLOAT(np.sqrt(dim) / (self.temperature * max(self.sharpness, 1.0)))
        return scores


RULES: dict[str, Callable[[Scenario], Rule]] = {
    "attention_softmax": lambda s: QueryKeyRule(s.allocation.temperature),
    "top_k": lambda s: QueryKeyRule(s.allocation.temperature, deterministic=True),
    "random": lambda s: UniformRule(),
    "oracle": lambda s: OracleRule(s.allocation.temperature, s.population.users.taste_sharpness),
    "popularity": lambda s: PopularityRule(s.allocation.temperature, s.allocation.popularity_window),
    "learned": lambda s: LearnedRule(
        s.allocation.temperature,
        s.allocation.learned.rank,
        s.allocation.learned.regularization,
        s.allocation.learned.iterations,
        s.allocation.learned.retrain_every,
    ),
    "shapley": lambda s: ShapleyRule(s.allocation.temperature),
}


def make_rule(scenario: Scenario) -> Rule:
    return RULES[scenario.allocation.rule](scenario)


def block_rows(goods: int, block_elements: int) -> int:
    """Users per block so a block's score matrix stays within `block_elements`.

    A block is at least one user: a catalogue larger than `block_elements` gives one-row
    blocks of the whole catalogue (the candidate mode is the answer to such catalogues).
    """
    return max(1, block_elements // max(goods, 1))


def mask_consumed(scores: np.ndarray, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> None:
    """Set scores of goods each user consumed recently to -inf (in place)."""
    remembered = state.uids.rows(state.users.history[users])
    positions = np.where(remembered >= 0, catalogue.position_of_row[np.maximum(remembered, 0)], -1)
    block_row, column = np.nonzero(positions >= 0)
    scores[block_row, positions[block_row, column]] = -np.inf


def allocate_exposures(
    state: MarketState,
    catalogue: Catalogue,
    users: np.ndarray,
    counts: np.ndarray,
    rule: Rule,
    scenario: Scenario,
    rng: np.random.Generator,
) -> np.ndarray:
    """Exposures for `users`: a (len(users), max(counts)) matrix of catalogue rows, -1 padded.

    Row i holds up to counts[i] distinct live goods in feed order (the order they were drawn).
    Fewer appear when the user has fewer eligible goods than budget, when the `shapley`
    mediator gives a unit to the outside option, or when the creator cap leaves it unfilled.

    Per block: the rule's scores, plus the score modifiers (clickbait penalty, engagement
    weighting), with consumed goods masked; then the fairness floor's units, the rule's own
    selection for the rest, and the creator cap (see allocation_rules/modifiers.py).
    """
    width = int(counts.max(initial=0))
    exposures = np.full((len(users), width), -1, dtype=np.int64)
    if width == 0 or len(catalogue.rows) == 0:
        return exposures
    cfg = scenario.allocation
    prepare = getattr(rule, "prepare", None)
    if prepare is not None:
        prepare(state, scenario, rng)
    adjustment = score_adjustment(state, catalogue.rows, scenario)
    needs_creators = getattr(rule, "needs_creators", False) or cfg.fairness_floor > 0 or cfg.creator_cap < 1
    segments = CreatorSegments.of(state, catalogue) if needs_creators else None
    cap = CreatorCap(cfg.creator_cap, segments) if cfg.creator_cap < 1 else None

    def select(scores: np.ndarray, block_counts: np.ndarray) -> np.ndarray:
        return select_positions(rule, scores, block_counts, segments, rng)

    step = block_rows(len(catalogue.rows), cfg.block_elements)
    for start in range(0, len(users), step):
        block = users[start : start + step]
        block_counts = counts[start : start + step]
        scores = rule.scores(state, catalogue, block)
        if adjustment is not None:
            scores += adjustment[None, :]
        if cfg.mask_consumed:
            mask_consumed(scores, state, catalogue, block)
        if cap is not None:
            cap.begin_block(scores, int(block_counts.sum()))
        if cfg.fairness_floor > 0:
            fair = fairness_units(scores, block_counts, cfg.fairness_floor, segments, rule.deterministic, rng)
            picked = merge_feed(fair, select(scores, block_counts - np.count_nonzero(fair >= 0, axis=1)))
        else:
            picked = select(scores, block_counts)
        if cap is not None:
            picked = cap.enforce(picked, scores, select, rng)
        exposures[start : start + len(block), : picked.shape[1]] = np.where(picked >= 0, catalogue.rows[np.maximum(picked, 0)], -1)
    return exposures


def select_positions(
    rule: Rule, scores: np.ndarray, counts: np.ndarray, segments: CreatorSegments | None, rng: np.random.Generator
) -> np.ndarray:
    """The rule's own selection of counts[i] positions per row: its `pick`, top-k or softmax sampling."""
    pick = getattr(rule, "pick", None)
    if pick is not None:
        return pick(scores, counts, segments, rng)
    if rule.deterministic:
        return top_k_positions(scores, counts)
    return sample_positions(scores, counts, rng)


def top_k_positions(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The counts[i] highest finite scores of each row, best first; ties to the lower index."""
    rows, columns = scores.shape
    width = min(int(counts.max(initial=0)), columns)
    if width == 0:
        return np.full((rows, 0), -1, dtype=np.int64)
    if width < columns:
        # Everything above the width-th score, then the lowest-index columns tied with it.
        kth = -np.partition(-scores, width - 1, axis=1)[:, width - 1 : width]
        above = scores > kth
        tied = scores == kth
        room = width - np.count_nonzero(above, axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
        candidates = np.nonzero(chosen)[1].reshape(rows, width)
    else:
        candidates = np.broadcast_to(np.arange(columns), (rows, columns))
    chosen_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -chosen_scores), axis=1)
    picked = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    picked_scores = np.take_along_axis(chosen_scores, order, axis=1)
    keep = (np.arange(width) < counts[:, None]) & np.isfinite(picked_scores)
    return np.where(keep, picked, -1)


def sample_positions(scores: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample counts[i] distinct columns per row without replacement, P ∝ softmax(scores).

    Draws with replacement from each row's softmax and keeps first occurrences: the sequence of
    first occurrences is exactly successive sampling without replacement. A draw picks a block
    of about √g columns by the blocks' total weight, then a column inside the block, so the
    whole block costs one exp and one blocked sum, never a cumulative sum over every score.
    Rows whose draws repeat too much to fill the budget (very peaked weights) fall back to the
    exact Gumbel-top-k trick. `scores` is shifted in place.
    """
    rows, columns = scores.shape
    top = scores.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    scores -= top  # a shift per row changes neither the softmax nor the Gumbel top-k
    weights = np.exp(scores)  # may underflow to 0 for finite scores far below the row's best
    counts = np.minimum(counts, np.count_nonzero(np.isfinite(scores), axis=1))
    width = int(counts.max(initial=0))
    picked = np.full((rows, width), -1, dtype=np.int64)
    if width == 0:
        return picked

    block = max(8, int(np.sqrt(columns)))
    block_mass = np.add.reduceat(weights, np.arange(0, columns, block), axis=1, dtype=np.float64)
    blocks = block_mass.shape[1]
    block_end = np.cumsum(block_mass, axis=1)
    totals = block_end[:, -1].copy()
    totals[totals == 0] = 1.0

    draws = np.where(counts > 0, 2 * counts + 4, 0)
    row = np.repeat(np.arange(rows), draws)
    target = rng.random(len(row))  # a fraction of the row's total weight
    offsets = np.arange(rows, dtype=np.float64)[:, None]
    chosen_block = np.searchsorted((block_end / totals[:, None] + offsets).ravel(), target + row, side="right")
    chosen_block = np.clip(chosen_block - row * blocks, 0, blocks - 1)
    residual = target * totals[row] - (block_end[row, chosen_block] - block_mass[row, chosen_block])
    inside = chosen_block[:, None] * block + np.arange(block)[None, :]
    in_range = inside < columns
    inside_weights = np.where(in_range, weights[row[:, None], np.minimum(inside, columns - 1)], 0.0)
    offset_in_block = np.count_nonzero(np.cumsum(inside_weights, axis=1, dtype=np.float64) <= residual[:, None], axis=1)
    column = chosen_block * block + np.minimum(offset_in_block, block - 1)
    usable = (column < columns) & (weights[row, np.minimum(column, columns - 1)] > 0)

    # First occurrence of each (row, column), then its rank among the row's first occurrences.
    sequence = np.arange(len(row))
    order = np.lexsort((sequence, column, row))
    first_sorted = np.ones(len(row), dtype=bool)
    first_sorted[1:] = (row[order][1:] != row[order][:-1]) | (column[order][1:] != column[order][:-1])
    first = np.empty(len(row), dtype=bool)
    first[order] = first_sorted
    first &= usable
    seen = np.cumsum(first)
    before_row = np.concatenate([[0], seen])[np.cumsum(draws) - draws]
    rank = seen - 1 - before_row[row]
    take = first & (rank < counts[row])
    picked[row[take], rank[take]] = column[take]

    got = np.bincount(row[take], minlength=rows)
    short = np.flatnonzero(got < counts)
    if len(short):
        # Complete the prefix already drawn: the next distinct goods of successive sampling,
        # given those seen, are a Gumbel-top-k over the goods not yet picked.
        perturbed = scores[short] + rng.gumbel(size=(len(short), columns)).astype(FLOAT)
        prefix = picked[short]
        drawn_row, drawn_slot = np.nonzero(prefix >= 0)
        perturbed[drawn_row, prefix[drawn_row, drawn_slot]] = -np.inf
        rest = top_k_positions(perturbed, counts[short] - got[short])
        slot = got[short][:, None] + np.arange(rest.shape[1])[None, :]
        fill_row, fill_slot = np.nonzero(rest >= 0)
        picked[short[fill_row], slot[fill_row, fill_slot]] = rest[fill_row, fill_slot]
    return picked
