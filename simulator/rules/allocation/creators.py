"""The catalogue grouped by creator: what the Shapley mediator and the creator modifiers need.

A tick's live goods are columns of the allocator's score matrix. `CreatorSegments` sorts those
columns by owner once per tick, so per-creator reductions over a block of score rows are one
`reduceat`, and "creator c's best eligible good for user u" is an argmax over a short padded row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.market.catalogue import Catalogue
from simulator.market.state import MarketState


@dataclass(frozen=True)
class CreatorSegments:
    """Catalogue positions grouped by owner: one segment per creator with live goods."""

    creator: np.ndarray  # (s,) creator row of each segment
    order: np.ndarray  # (g,) catalogue positions sorted by owner
    starts: np.ndarray  # (s,) where each segment starts in `order`
    padded: np.ndarray  # (s, L) catalogue positions of each segment's goods, -1 padded
    of_position: np.ndarray  # (g,) segment of each catalogue position

    @classmethod
    def of(cls, state: MarketState, catalogue: Catalogue) -> CreatorSegments:
        return cls.from_owners(state.goods.owner[catalogue.rows])

    @classmethod
    def from_owners(cls, owners: np.ndarray) -> CreatorSegments:
        """Segments of catalogue positions 0..g-1 whose owners are `owners`."""
        owners = np.asarray(owners, dtype=np.int64)
        order = np.argsort(owners, kind="stable")
        sorted_owners = owners[order]
        goods = len(order)
        if goods == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, np.zeros((0, 0), dtype=np.int64), empty)
        starts = np.flatnonzero(np.r_[True, sorted_owners[1:] != sorted_owners[:-1]])
        lengths = np.diff(np.r_[starts, goods])
        segment = np.repeat(np.arange(len(starts)), lengths)
        rank = np.arange(goods) - starts[segment]
        padded = np.full((len(starts), int(lengths.max())), -1, dtype=np.int64)
        padded[segment, rank] = order
        of_position = np.empty(goods, dtype=np.int64)
        of_position[order] = segment
        return cls(sorted_owners[starts], order, starts, padded, of_position)

    def __len__(self) -> int:
        return len(self.creator)


def segment_max(scores: np.ndarray, segments: CreatorSegments) -> np.ndarray:
    """(rows, segments): each creator's best score per row (-inf where none is eligible)."""
    if len(segments) == 0:
        return np.full((scores.shape[0], 0), -np.inf, dtype=scores.dtype)
    return np.maximum.reduceat(scores[:, segments.order], segments.starts, axis=1)


def pick_in_segments(
    scores: np.ndarray, rows: np.ndarray, segments_drawn: np.ndarray, segments: CreatorSegments, rng: np.random.Generator | None
) -> np.ndarray:
    """For each draw (score row, creator segment) a distinct good of that creator; -1 if none is left.

    Without `rng` a draw takes the creator's best remaining good by score; with it, a good
    sampled in proportion to exp(score) (Gumbel-max). Draws of the same (row, creator) pair
    take successive goods, in draw order. Picked goods are set to -inf in `scores`, in place,
    so later picks from the same matrix never repeat them.
    """
    picked = np.full(len(rows), -1, dtype=np.int64)
    if len(rows) == 0:
        return picked
    # Occurrence of each draw within its (row, segment) pair, in draw order.
    order = np.lexsort((np.arange(len(rows)), segments_drawn, rows))
    pair_start = np.r_[True, (rows[order][1:] != rows[order][:-1]) | (segments_drawn[order][1:] != segments_drawn[order][:-1])]
    first_of_pair = np.maximum.accumulate(np.where(pair_start, np.arange(len(rows)), 0))
    occurrence = np.empty(len(rows), dtype=np.int64)
    occurrence[order] = np.arange(len(rows)) - first_of_pair
    for round_ in range(int(occurrence.max()) + 1):
        draw = np.flatnonzero(occurrence == round_)
        columns = segments.padded[segments_drawn[draw]]
        candidate = np.where(columns >= 0, scores[rows[draw, None], np.maximum(columns, 0)], -np.inf)
        if rng is not None:
            candidate = candidate + rng.gumbel(size=candidate.shape)
        best = np.argmax(candidate, axis=1)
        found = np.isfinite(candidate[np.arange(len(draw)), best])
        chosen = columns[np.arange(len(draw)), best]
        picked[draw[found]] = chosen[found]
        scores[rows[draw[found]], chosen[found]] = -np.inf
    return picked


def compact_rows(picked: np.ndarray) -> np.ndarray:
    """Each row's entries >= 0 moved to the front, in order; -1 padding at the end."""
    order = np.argsort(picked < 0, axis=1, kind="stable")
    return np.take_along_axis(picked, order, axis=1)
