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

Large catalogues go to the candidate mode (`allocation.candidates`, `resolve_mode`): each user
is scored against a candidate set from `candidates.py` through the rule's `candidate_scores`,
and the same masking and selection run over those columns (`allocate_candidates`).

Queries and keys are unit topic directions; QKᵀ/√d is taken at the scale of standard-normal
embeddings (norm √d), which makes it √d·cos(query, key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from simulator.market.catalogue import Catalogue, gathered_products
from simulator.market.kernels import draw_without_replacement, mask_remembered, top_k_rows
from simulator.market.outcomes import AllocationMode
from simulator.market.state import FLOAT, MarketState
from simulator.market.values import expected_value
from simulator.rules.allocation.candidates import CandidateBlock, index_for
from simulator.rules.allocation.creators import CreatorSegments
from simulator.rules.allocation.learned import LearnedRule
from simulator.rules.allocation.modifiers import (
    CreatorCap,
    fairness_units,
    merge_feed,
    score_adjustment,
)
from simulator.rules.allocation.popularity import PopularityRule
from simulator.rules.allocation.shapley import ShapleyRule
from simulator.scenario.schema import Scenario


class Rule(Protocol):
    """Scores for a block of users over the catalogue; higher means more attention.

    Optional extras, looked up with getattr: `prepare(state, scenario, rng)`, called once per
    tick before any block (stateful rules refit there, e.g. `learned`); `pick(scores, counts,
    segments, rng)`, which replaces the softmax sampling or top-k step (the `shapley` mediator);
    `needs_creators = True` when `pick` needs the catalogue grouped by creator;
    `candidate_scores(state, catalogue, users, positions)`, the scores of given catalogue
    positions only — `positions` is (C,) shared by every user of the block or (b, C) per user
    (every entry a valid position), the result is (b, C) — which lets the rule run in the
    candidate mode (see simulator/candidates.py); `routing_vectors(state, users)`, the vectors
    the candidate mode groups users by (default: the platform's profiles, `query`).
    """

    deterministic: bool

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(len(users), len(catalogue.rows)) float32 scores, written into `out` when given (the
        allocator reuses one block buffer: a fresh 16 MB array per block costs page faults)."""
        ...


@dataclass(frozen=True)
class QueryKeyRule:
    """softmax(QKᵀ/√d / T) over the platform's profiles (queries) and goods' keys."""

    temperature: float
    deterministic: bool = False

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        # Scale the block's queries (b × d), not the scores (b × g).
        queries = state.users.query[users] * FLOAT(np.sqrt(dim) / self.temperature)
        return np.matmul(queries, catalogue.keys.T, out=out)

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The same scores for `positions` only: one product for shared positions, a batched one per user."""
        dim = catalogue.keys.shape[1]
        queries = state.users.query[users] * FLOAT(np.sqrt(dim) / self.temperature)
        return gathered_products(queries, catalogue.keys, positions)


@dataclass(frozen=True)
class UniformRule:
    """Every eligible good equally likely."""

    deterministic: bool = False

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.zeros((len(users), len(catalogue.rows)), dtype=FLOAT)
        out[...] = 0.0
        return out


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

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:

        dim = catalogue.keys.shape[1]
        value = expected_value(state.users.interest[users], catalogue.keys, catalogue.quality, self.sharpness, out=out)
        with np.errstate(divide="ignore"):
            scores = np.log(value, out=value)  # quality 0 gives -inf: worthless goods are never shown
        scores *= FLOAT(np.sqrt(dim) / (self.temperature * max(self.sharpness, 1.0)))
        return scores

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        value = gathered_products(state.users.interest[users], catalogue.keys, positions)
        value -= 1.0
        value *= FLOAT(self.sharpness)
        np.exp(value, out=value)
        value *= catalogue.quality[positions] if positions.ndim == 2 else catalogue.quality[positions][None, :]
        with np.errstate(divide="ignore"):
            scores = np.log(value)
        scores *= FLOAT(np.sqrt(dim) / (self.temperature * max(self.sharpness, 1.0)))
        return scores

    def routing_vectors(self, state: MarketState, users: np.ndarray) -> np.ndarray:
        return state.users.interest[users]


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
    mask_remembered(scores, users, state.users.history, state.uids.row_of, catalogue.position_of_row)


def resolve_mode(scenario: Scenario, rule: Rule, live_goods: int) -> AllocationMode:
    """The mode `allocation.candidates.mode` resolves to for this rule and catalogue size.

    `auto` picks ivf above `auto_above` live goods. The candidate mode needs the rule's
    `candidate_scores` (so `popularity`, `random` and `shapley` run exact) and works without the
    fairness floor and the creator cap, which need every creator's goods in every score row."""
    cfg = scenario.allocation
    mode = cfg.candidates.mode
    if mode == "exact":
        return AllocationMode("exact", "allocation.candidates.mode is exact")
    if mode == "auto" and live_goods <= cfg.candidates.auto_above:
        return AllocationMode("exact", f"{live_goods} live goods, not above allocation.candidates.auto_above ({cfg.candidates.auto_above})")
    if getattr(rule, "candidate_scores", None) is None:
        return AllocationMode("exact", f"the {cfg.rule} rule has no candidate scores; it always runs exact")
    if cfg.fairness_floor > 0 or cfg.creator_cap < 1:
        return AllocationMode("exact", "the fairness floor and the creator cap run exact only")
    if mode == "ivf":
        return AllocationMode("ivf", "allocation.candidates.mode is ivf")
    return AllocationMode("ivf", f"{live_goods} live goods, above allocation.candidates.auto_above ({cfg.candidates.auto_above})")


def allocate_exposures(
    state: MarketState,
    catalogue: Catalogue,
    users: np.ndarray,
    counts: np.ndarray,
    rule: Rule,
    scenario: Scenario,
    rng: np.random.Generator,
    mode: str | None = None,
) -> np.ndarray:
    """Exposures for `users`: a (len(users), max(counts)) matrix of catalogue rows, -1 padded.

    Row i holds up to counts[i] distinct live goods in feed order (the order they were drawn).
    Fewer appear when the user has fewer eligible goods than budget, when the `shapley`
    mediator gives a unit to the outside option, or when the creator cap leaves it unfilled.

    Per block: the rule's scores, plus the score modifiers (clickbait penalty, engagement
    weighting), with consumed goods masked; then the fairness floor's units, the rule's own
    selection for the rest, and the creator cap (see allocation_rules/modifiers.py).

    `mode` is `exact` or `ivf` (the candidate mode, `allocate_candidates`); None resolves
    `allocation.candidates.mode` with `resolve_mode`.
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
    if mode is None:
        mode = resolve_mode(scenario, rule, len(catalogue.rows)).mode
    if mode == "ivf":
        allocate_candidates(state, catalogue, users, counts, rule, scenario, rng, adjustment, exposures)
        return exposures
    needs_creators = getattr(rule, "needs_creators", False) or cfg.fairness_floor > 0 or cfg.creator_cap < 1
    segments = CreatorSegments.of(state, catalogue) if needs_creators else None
    cap = CreatorCap(cfg.creator_cap, segments) if cfg.creator_cap < 1 else None

    def select(scores: np.ndarray, block_counts: np.ndarray) -> np.ndarray:
        return select_positions(rule, scores, block_counts, segments, rng)

    step = block_rows(len(catalogue.rows), cfg.block_elements)
    buffer = np.empty(min(step, len(users)) * len(catalogue.rows), dtype=FLOAT)
    for start in range(0, len(users), step):
        block = users[start : start + step]
        block_counts = counts[start : start + step]
        scores = rule.scores(state, catalogue, block, out=buffer[: len(block) * len(catalogue.rows)].reshape(len(block), -1))
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


def allocate_candidates(
    state: MarketState,
    catalogue: Catalogue,
    users: np.ndarray,
    counts: np.ndarray,
    rule: Rule,
    scenario: Scenario,
    rng: np.random.Generator,
    adjustment: np.ndarray | None,
    exposures: np.ndarray,
) -> None:
    """The candidate mode: fill `exposures` with the rule's selection over each user's candidates."""
    for block, scores in candidate_scores(state, catalogue, users, rule, scenario, rng, adjustment):
        picked = select_positions(rule, scores, counts[block.rows], None, rng)
        positions = block.positions_at(picked)
        exposures[block.rows, : picked.shape[1]] = np.where(positions >= 0, catalogue.rows[np.maximum(positions, 0)], -1)


def candidate_scores(
    state: MarketState,
    catalogue: Catalogue,
    users: np.ndarray,
    rule: Rule,
    scenario: Scenario,
    rng: np.random.Generator,
    adjustment: np.ndarray | None,
) -> Iterator[tuple[CandidateBlock, np.ndarray]]:
    """(block, scores) per block of users of the candidate mode (see simulator/candidates.py).

    A block is one group of the index (or part of one): the rule's `candidate_scores` for the
    group's shared candidates (one product) and for each user's sampled goods (plus the log of
    their strata's sizes, for sampled rules), the score adjustments, and consumed goods masked;
    columns as in `block.matrix()`, -inf for dropped draws."""

    cfg = scenario.allocation
    view = index_for(state, catalogue, scenario, rng).view(state, catalogue, scenario)
    routing = getattr(rule, "routing_vectors", None)
    vectors = routing(state, users) if routing is not None else state.users.query[users]
    for block in view.blocks(vectors, rng, cfg.block_elements):
        members = users[block.rows]
        scores = np.full((len(members), block.width), -np.inf, dtype=FLOAT)
        for low, high, shared in block.runs():
            part = scores[low:high, : len(shared)]
            part[...] = rule.candidate_scores(state, catalogue, members[low:high], shared)
            if adjustment is not None:
                part += adjustment[shared][None, :]
        own = block.own
        if own.shape[1]:
            drawn = own >= 0
            safe = np.where(drawn, own, 0)
            tail = rule.candidate_scores(state, catalogue, members, safe)
            if not rule.deterministic:
                tail += block.own_log_weight
            if adjustment is not None:
                tail += adjustment[safe]
            tail[~drawn] = -np.inf
            scores[:, block.shared_width :] = tail
        if cfg.mask_consumed:
            remembered = state.uids.rows(state.users.history[members])
            positions = np.where(remembered >= 0, catalogue.position_of_row[np.maximum(remembered, 0)], -1)
            columns = view.columns_of(block, positions)
            row, slot = np.nonzero(columns >= 0)
            scores[row, columns[row, slot]] = -np.inf
        yield block, scores


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
    """The counts[i] highest finite scores of each row, best first; ties to the lower index.

    A compiled per-row selection (`top_k_rows` in simulator/market/kernels.py): one pass over the
    row keeping the best so far, instead of a partition of the whole block and a sort."""
    rows, columns = scores.shape
    width = min(int(counts.max(initial=0)), columns)
    picked = np.full((rows, width), -1, dtype=np.int64)
    if width == 0:
        return picked
    top_k_rows(np.ascontiguousarray(scores), counts.astype(np.int64), picked)
    return picked


def sample_positions(scores: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample counts[i] distinct columns per row without replacement, P ∝ softmax(scores).

    A compiled kernel (`simulator/kernels.py`) draws each row's exposures in feed order by
    successive sampling. Each row's random stream comes from its own seed drawn here, so results
    do not depend on how many draws the rows before it took. `scores` is left untouched.
    """
    rows, columns = scores.shape
    width = int(counts.max(initial=0))
    picked = np.full((rows, width), -1, dtype=np.int64)
    if width == 0 or columns == 0:
        return picked
    seeds = rng.integers(0, 2**63, size=rows, dtype=np.int64).astype(np.uint64)
    draw_without_replacement(np.ascontiguousarray(scores, dtype=FLOAT), counts.astype(np.int64), seeds, picked)
    return picked
