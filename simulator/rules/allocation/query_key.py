"""The rules that score with embeddings directly: `attention_softmax`, `top_k`, `random`, `oracle`.

Queries and keys are unit topic directions; QKᵀ/√d is taken at the scale of standard-normal
embeddings (norm √d), which makes it √d·cos(query, key).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from simulator.market.catalogue import Catalogue, gathered_products
from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.base import ALLOCATION_RULES, AllocationRule
from simulator.scenario.schema import Scenario


class AttentionSoftmax(AllocationRule):
    """softmax(QKᵀ/√d / T) over the platform's profiles (queries) and goods' keys."""

    name = "attention_softmax"
    summary = "softmax(QKᵀ/√d/T) over the platform's profiles of users and goods' keys, sampled without replacement"
    candidate_mode = True

    def __init__(self, temperature: float):
        self.temperature = temperature

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> AttentionSoftmax:
        return cls(scenario.allocation.temperature)

    def _queries(self, state: MarketState, users: np.ndarray, dim: int) -> np.ndarray:
        # Scale the block's queries (b × d), not the scores (b × g).
        return state.users.query[users] * FLOAT(np.sqrt(dim) / self.temperature)

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(self._queries(state, users, catalogue.keys.shape[1]), catalogue.keys.T, out=out)

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The same scores for `positions` only: one product for shared positions, a batched one per user."""
        return gathered_products(self._queries(state, users, catalogue.keys.shape[1]), catalogue.keys, positions)

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return self._queries(state, users, keys.shape[1]) @ keys.T.astype(FLOAT)


class TopK(AttentionSoftmax):
    """The best k of the same scores as `attention_softmax`, deterministically."""

    name = "top_k"
    summary = "the deterministic best k of attention_softmax's scores (ties to the lower catalogue position)"
    deterministic = True
    block_bytes_per_element = 6  # the compiled top-k needs only the scores (tests/test_reliability.py measures it)

    def audience_exposures(self, scores: np.ndarray, owners: np.ndarray, budgets: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A new good is shown to a user (once) when it beats the user's k-th best good, k = budget
        (it would come last in catalogue order, so a tie loses)."""
        k = np.maximum(budgets.astype(np.int64), 1)
        goods = scores.shape[1]
        threshold = np.full(len(scores), -np.inf)
        full = k <= goods
        if full.any():
            descending = -np.sort(-scores[full], axis=1)
            threshold[full] = descending[np.arange(int(full.sum())), k[full] - 1]
        return lambda candidates: (candidates > threshold[:, None]).astype(np.float64)


class Uniform(AllocationRule):
    """Every eligible good equally likely."""

    name = "random"
    summary = "every eligible good equally likely"

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> Uniform:
        return cls()

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.zeros((len(users), len(catalogue.rows)), dtype=FLOAT)
        out[...] = 0.0
        return out

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        return np.zeros((len(users), len(keys)), dtype=FLOAT)


class Oracle(AllocationRule):
    """Softmax over users' true expected value of each good: what a perfect recommender knows.

    The score is √d/T · log E[value] / max(sharpness, 1): with E[value] = quality ·
    exp(sharpness·(cos − 1)) this is √d·cos(interest, key)/T plus a quality term, the same
    scale as `attention_softmax` but with the truth in place of the platform's profiles. It is
    computed as that sum, a·cos + b per good (a = scale·sharpness, b = scale·log quality − a):
    one product of the scaled interests with the keys and one add, the cost of
    `attention_softmax`, instead of an exp and a log over the block (which also underflowed to
    −inf for goods far from a user's interest at high sharpness).
    """

    name = "oracle"
    summary = "softmax over users' true expected value of each good (a perfect recommender)"
    candidate_mode = True

    def __init__(self, temperature: float, sharpness: float):
        self.temperature = temperature
        self.sharpness = sharpness

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> Oracle:
        return cls(scenario.allocation.temperature, scenario.population.users.taste_sharpness)

    def _scale(self, dim: int) -> float:
        return float(np.sqrt(dim) / (self.temperature * max(self.sharpness, 1.0)))

    def _interests(self, state: MarketState, users: np.ndarray, dim: int) -> np.ndarray:
        return state.users.interest[users] * FLOAT(self._scale(dim) * self.sharpness)

    def _offsets(self, quality: np.ndarray, dim: int) -> np.ndarray:
        """scale·log quality − scale·sharpness per good; quality 0 gives −inf: worthless goods are never shown."""
        scale = self._scale(dim)
        with np.errstate(divide="ignore"):
            return (scale * np.log(quality.astype(np.float64)) - scale * self.sharpness).astype(FLOAT)

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        scores = np.matmul(self._interests(state, users, dim), catalogue.keys.T, out=out)
        scores += self._offsets(catalogue.quality, dim)[None, :]
        return scores

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        scores = gathered_products(self._interests(state, users, dim), catalogue.keys, positions)
        offsets = self._offsets(catalogue.quality, dim)
        scores += offsets[positions] if positions.ndim == 2 else offsets[positions][None, :]
        return scores

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        dim = keys.shape[1]
        return self._interests(state, users, dim) @ keys.T.astype(FLOAT) + self._offsets(quality, dim)[None, :]

    def routing_vectors(self, state: MarketState, users: np.ndarray) -> np.ndarray:
        return state.users.interest[users]


for _rule in (AttentionSoftmax, TopK, Uniform, Oracle):
    ALLOCATION_RULES.register(_rule)
