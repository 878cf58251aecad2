"""How a rule turns a block of scores into exposures: softmax sampling without replacement or the best k.

These are the default `select` of every allocation rule (`AllocationRule.select`): sampling for
stochastic rules, top-k for deterministic ones. A rule with its own selection (the Shapley
mediator) overrides `select`.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from simulator.market.kernels import draw_without_replacement, top_k_rows
from simulator.market.state import FLOAT
from simulator.market.streams import EntityDraws


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

    A compiled kernel (`simulator/market/kernels.py`) draws each row's exposures in feed order by
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


@dataclass(frozen=True)
class SelectionKeys:
    """Who a block's rows and columns are, for keyed sampling (`streams.keyed_sample`): the user
    row of each score row and the serial of each column's good, under the tick's key."""

    draws: EntityDraws
    users: np.ndarray  # (rows,) user rows
    goods: np.ndarray  # (columns,) good serials

    def of_rows(self, index: np.ndarray) -> SelectionKeys:
        return SelectionKeys(self.draws, self.users[index], self.goods)
