"""The live catalogue of a tick, packed for matrix products, and the market statistics rules read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.market.kernels import gathered_dots
from simulator.market.state import FLOAT, MarketState


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


def gathered_products(vectors: np.ndarray, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """vectors[i] · table[positions[i, j]] as a (b, C) float32 matrix; `positions` (C,) shared by
    every row is one matrix product, (b, C) per row a compiled loop over the gathered rows."""
    if positions.ndim == 1:
        return vectors @ table[positions].T
    return gathered_dots(np.ascontiguousarray(vectors, dtype=FLOAT), table, positions)


def window_counts(state: MarketState, window: int) -> np.ndarray:
    """Consumptions of each catalogue row during the last `window` ticks (before this one)."""
    counts = np.zeros(state.goods.capacity(), dtype=np.int64)
    for tick, uids, tick_counts in state.consumption_window.ticks:
        if tick < state.tick - window or tick >= state.tick:
            continue
        rows = state.uids.rows(uids)
        alive = rows >= 0
        np.add.at(counts, rows[alive], tick_counts[alive])
    return counts
