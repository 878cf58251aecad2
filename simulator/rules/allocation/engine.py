"""The attention-weight allocator: softmax(QKᵀ/√d / temperature) with masks, in bounded blocks.

A rule (`base.AllocationRule`, one class per rule, registered by name) turns a block of users
and the live catalogue into a score matrix (log-weights). The engine does the rest the same way
for every rule: the score modifiers (clickbait penalty, engagement weighting), masks of goods a
user already consumed, the fairness floor's units, the rule's `select` (sampling without
replacement in proportion to softmax weights, or the best k), and the creator cap
(`modifiers.py`), in one fixed order. Users are processed in blocks so no tick ever holds more
than `allocation.block_elements` scores at once, however many users there are.

Large catalogues go to the candidate mode (`allocation.candidates`, `resolve_mode`): each user
is scored against a candidate set from `candidates.py` through the rule's `candidate_scores`,
and the same masking and selection run over those columns (`allocate_candidates`).

Queries and keys are unit topic directions; QKᵀ/√d is taken at the scale of standard-normal
embeddings (norm √d), which makes it √d·cos(query, key).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from simulator.market.catalogue import Catalogue
from simulator.market.kernels import mask_remembered, remembered_positions
from simulator.market.outcomes import AllocationMode
from simulator.market.state import FLOAT, MarketState
from simulator.market.streams import EntityDraws
from simulator.rules.allocation.base import ALLOCATION_RULES, AllocationRule
from simulator.rules.allocation.candidates import CandidateBlock, index_for
from simulator.rules.allocation.creators import CreatorSegments
from simulator.rules.allocation.modifiers import (
    CreatorCap,
    fairness_units,
    merge_feed,
    score_adjustment,
)
from simulator.rules.allocation.selection import SelectionKeys
from simulator.scenario.schema import Scenario


def make_rule(scenario: Scenario) -> AllocationRule:
    """The allocation rule of a run: the registered class `allocation.rule` names, built with its params."""
    cls = ALLOCATION_RULES.resolve(scenario.allocation.rule)
    return cls.from_scenario(scenario, cls.Params.model_validate(scenario.allocation.params))


def block_rows(goods: int, block_elements: int) -> int:
    """Users per block so a block's score matrix stays within `block_elements`.

    A block is at least one user: a catalogue larger than `block_elements` gives one-row
    blocks of the whole catalogue (the candidate mode is the answer to such catalogues).
    """
    return max(1, block_elements // max(goods, 1))


def mask_consumed(scores: np.ndarray, state: MarketState, catalogue: Catalogue, users: np.ndarray) -> None:
    """Set scores of goods each user consumed recently to -inf (in place)."""
    mask_remembered(scores, users, state.users.history, state.uids.row_of, catalogue.position_of_row)


def resolve_mode(scenario: Scenario, rule: AllocationRule, live_goods: int) -> AllocationMode:
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
    if not rule.candidate_mode:
        return AllocationMode("exact", f"the {rule.name} rule has no candidate scores; it always runs exact")
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
    rule: AllocationRule,
    scenario: Scenario,
    rng: np.random.Generator,
    mode: str | None = None,
    draws: EntityDraws | None = None,
) -> np.ndarray:
    """Exposures for `users`: a (len(users), max(counts)) matrix of catalogue rows, -1 padded.

    Row i holds up to counts[i] distinct live goods in feed order (the order they were drawn).
    Fewer appear when the user has fewer eligible goods than budget, when the `shapley`
    mediator gives a unit to the outside option, or when the creator cap leaves it unfilled.

    Per block: the rule's scores, plus the score modifiers (clickbait penalty, engagement
    weighting), with consumed goods masked; then the fairness floor's units, the rule's own
    selection for the rest, and the creator cap (see allocation_rules/modifiers.py).

    `mode` is `exact` or `ivf` (the candidate mode, `allocate_candidates`); None resolves
    `allocation.candidates.mode` with `resolve_mode`. In the exact mode a sampling rule's noise
    is keyed by user and good under `draws` (default: one draw of `rng`), see market/streams.py,
    unless `allocation.sampling` is `successive` (then drawn in order from `rng`);
    the candidate mode draws its candidates, and their noise, in order from `rng`.
    """
    width = int(counts.max(initial=0))
    exposures = np.full((len(users), width), -1, dtype=np.int64)
    if width == 0 or len(catalogue.rows) == 0:
        return exposures
    cfg = scenario.allocation
    draws = EntityDraws.of(rng) if draws is None else draws
    rule.prepare(state, scenario, rng)
    adjustment = score_adjustment(state, catalogue.rows, scenario)
    if mode is None:
        mode = resolve_mode(scenario, rule, len(catalogue.rows)).mode
    if mode == "ivf":
        allocate_candidates(state, catalogue, users, counts, rule, scenario, rng, adjustment, exposures)
        return exposures
    needs_creators = rule.needs_creators or cfg.fairness_floor > 0 or cfg.creator_cap < 1
    segments = CreatorSegments.of(state, catalogue) if needs_creators else None
    cap = CreatorCap(cfg.creator_cap, segments) if cfg.creator_cap < 1 else None

    serials = state.goods.serial[catalogue.rows]
    block_keys = SelectionKeys(draws.stream("allocation"), users[:0], serials)

    keyed = cfg.sampling == "keyed"

    def select(scores: np.ndarray, block_counts: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        if not keyed:
            return rule.select(scores, block_counts, segments, rng)
        return rule.select(scores, block_counts, segments, rng, keys=block_keys if rows is None else block_keys.of_rows(rows))

    step = block_rows(len(catalogue.rows), cfg.block_elements)
    buffer = np.empty(min(step, len(users)) * len(catalogue.rows), dtype=FLOAT)
    for start in range(0, len(users), step):
        block = users[start : start + step]
        block_counts = counts[start : start + step]
        block_keys = SelectionKeys(block_keys.draws, block, serials)
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
    rule: AllocationRule,
    scenario: Scenario,
    rng: np.random.Generator,
    adjustment: np.ndarray | None,
    exposures: np.ndarray,
) -> None:
    """The candidate mode: fill `exposures` with the rule's selection over each user's candidates."""
    for block, scores in candidate_scores(state, catalogue, users, rule, scenario, rng, adjustment):
        picked = rule.select(scores, counts[block.rows], None, rng)
        positions = block.positions_at(picked)
        exposures[block.rows, : picked.shape[1]] = np.where(positions >= 0, catalogue.rows[np.maximum(positions, 0)], -1)


def candidate_scores(
    state: MarketState,
    catalogue: Catalogue,
    users: np.ndarray,
    rule: AllocationRule,
    scenario: Scenario,
    rng: np.random.Generator,
    adjustment: np.ndarray | None,
) -> Iterator[tuple[CandidateBlock, np.ndarray]]:
    """(block, scores) per block of users of the candidate mode (see simulator/rules/allocation/candidates.py).

    A block is one group of the index (or part of one): the rule's `candidate_scores` for the
    group's shared candidates (one product) and for each user's sampled goods (plus the log of
    their strata's sizes, for sampled rules), the score adjustments, and consumed goods masked;
    columns as in `block.matrix()`, -inf for dropped draws."""

    cfg = scenario.allocation
    view = index_for(state, catalogue, scenario, rng).view(state, catalogue, scenario)
    vectors = rule.routing_vectors(state, users)
    consumed = None
    if cfg.mask_consumed:  # remembered goods are not candidates: strata draw among the others
        consumed = remembered_positions(users, state.users.history, state.uids.row_of, catalogue.position_of_row)
    for block in view.blocks(vectors, rng, cfg.block_elements, consumed):
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
        if consumed is not None:
            columns = view.columns_of(block, consumed[block.rows])
            row, slot = np.nonzero(columns >= 0)
            scores[row, columns[row, slot]] = -np.inf
        yield block, scores
