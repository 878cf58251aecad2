"""`shapley`: the Shapley-value mediator over creators (Ben-Porat & Tennenholtz, "A Game-Theoretic
Approach to Recommendation Systems with Strategic Content Providers", NeurIPS 2018).

For a user, each creator j with live goods is a player with relevance σ_j ∈ [0, 1]: the
relevance of its best eligible good (not masked, not yet shown) as the platform sees it,

    relevance(u, g) = ((1 + cos(query_u, key_g)) / 2) ** (1/T)

(times the clickbait penalty and the engagement factor of `allocation_modifiers`, capped at 1).
With σ sorted ascending, σ_(1) ≤ … ≤ σ_(n) and σ_(0) = 0, the creator in place i is shown with
probability

    P_(i) = Σ_{k=1..i} (σ_(k) − σ_(k−1)) / (n − k + 1)

and with probability 1 − σ_(n) the user is shown nothing (the outside option): that attention
unit is not allocated, so `attention_allocated` < `attention_supplied`. The mediator is the
Shapley value of the cooperative game "the user is satisfied if one of the shown creators
satisfies it", so a creator's share does not grow by cloning its content and competition
between similar creators is damped.

Several units per user: σ is fixed for the tick; each of the user's content units is an
independent draw from the mediator (a creator or the outside option), and the k-th unit given
to creator j shows j's k-th best eligible good. A unit given to a creator with nothing left
to show is not allocated either. Each row of a block is one compiled pass over its goods (the
creators' best scores) and one over its creators and draws (simulator/market/mediator_kernels.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from simulator.market.catalogue import Catalogue
from simulator.market.mediator_kernels import mediator_draws, relevance_of_cosines, segment_max_rows
from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.base import ALLOCATION_RULES, AllocationRule
from simulator.rules.allocation.creators import CreatorSegments, segment_max
from simulator.rules.allocation.selection import SelectionKeys
from simulator.scenario.schema import Scenario


def mediator_probabilities(relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the Shapley mediator's probability of each player, and of the outside option.

    `relevance` is (rows, players) in [0, 1]; players with relevance 0 get probability 0.
    """
    relevance = np.clip(np.asarray(relevance, dtype=np.float64), 0.0, 1.0)
    rows, players = relevance.shape
    if players == 0:
        return np.zeros((rows, 0)), np.ones(rows)
    order = np.argsort(relevance, axis=1, kind="stable")
    ascending = np.take_along_axis(relevance, order, axis=1)
    steps = np.diff(ascending, axis=1, prepend=0.0)
    share = steps / (players - np.arange(players))[None, :]  # (σ_(k) − σ_(k−1)) / (n − k + 1)
    probability = np.empty_like(ascending)
    np.put_along_axis(probability, order, np.cumsum(share, axis=1), axis=1)
    return probability, 1.0 - ascending[:, -1]


class ShapleyMediator(AllocationRule):
    """The Shapley mediator: scores are log-relevances; `select` draws creators, then their goods."""

    name = "shapley"
    summary = "the Shapley-value mediator over creators (Ben-Porat & Tennenholtz 2018): cloning a niche does not pay"
    needs_creators = True
    block_bytes_per_element = 18  # the creators' reduction and the draws

    def __init__(self, temperature: float):
        self.temperature = temperature

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> ShapleyMediator:
        return cls(scenario.allocation.temperature)

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self._log_relevance(np.matmul(state.users.query[users], catalogue.keys.T, out=out))

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return self._log_relevance(state.users.query[users] @ keys.T.astype(FLOAT))

    def audience_exposures(self, scores: np.ndarray, owners: np.ndarray, budgets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A new good joins each user's game as one more player with relevance x: with the n
        incumbents' σ sorted ascending and m of them below x, its mediator probability is
        Σ_{k≤m} (σ_(k) − σ_(k−1)) / (n + 2 − k) + (x − σ_(m)) / (n + 1 − m), once per unit of budget."""
        segments = CreatorSegments.from_owners(owners)
        ascending = np.sort(np.minimum(np.exp(segment_max(scores, segments)), 1.0), axis=1)
        rows, players = ascending.shape
        steps = np.diff(ascending, axis=1, prepend=0.0)
        prefix = np.concatenate([np.zeros((rows, 1)), np.cumsum(steps / (players + 1 - np.arange(players))[None, :], axis=1)], axis=1)
        below = np.concatenate([np.zeros((rows, 1)), ascending], axis=1)  # σ_(m), σ_(0) = 0
        offsets = 2.0 * np.arange(rows, dtype=np.float64)[:, None]  # relevances lie in [0, 1]: rows never mix

        def exposures(candidates: np.ndarray) -> np.ndarray:
            x = np.minimum(np.exp(candidates), 1.0)
            m = np.searchsorted((ascending + offsets).ravel(), (x + offsets).ravel(), side="left").reshape(x.shape)
            m -= np.arange(rows)[:, None] * players
            share = np.take_along_axis(prefix, m, axis=1) + (x - np.take_along_axis(below, m, axis=1)) / (players + 1 - m)
            return share * budgets[:, None]

        return exposures

    def _log_relevance(self, relevance: np.ndarray) -> np.ndarray:
        """log(((1 + cos) / 2)^(1/T)), in place over the cosines (float32)."""
        relevance_of_cosines(relevance)
        with np.errstate(divide="ignore"):
            scores = np.log(relevance, out=relevance)
        if self.temperature != 1.0:  # × 1.0 leaves every float32 as it is: a pass saved
            scores *= FLOAT(1.0 / self.temperature)
        return scores

    def select(
        self,
        scores: np.ndarray,
        counts: np.ndarray,
        segments: CreatorSegments | None,
        rng: np.random.Generator,
        keys: SelectionKeys | None = None,
    ) -> np.ndarray:
        """(rows, max(counts)) catalogue positions in feed order, -1 padded; units lost to the
        outside option are simply missing, so a row may hold fewer than counts[i] goods. The
        mediator's lottery is over creators, drawn in order from `rng` (`keys` is not used)."""
        rows = scores.shape[0]
        width = int(counts.max(initial=0))
        if width == 0 or len(segments) == 0:
            return np.full((rows, width), -1, dtype=np.int64)
        relevance = np.minimum(np.exp(segment_max_rows(scores, segments.padded).astype(np.float64)), 1.0)
        targets = rng.random(int(counts.sum()))
        # One compiled pass per row (simulator/market/mediator_kernels.py): the mediator's
        # probabilities (`mediator_probabilities`), each unit's creator or the outside option,
        # and that creator's best good left.
        return mediator_draws(scores, relevance, counts.astype(np.int64), targets, segments.padded, width)


ALLOCATION_RULES.register(ShapleyMediator)
