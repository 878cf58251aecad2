"""`learned`: the platform ranks with user and goods vectors it fits to its own interaction logs.

The platform logs every exposure it made in the last `learned.log_ticks` ticks and whether the
user consumed it. Every `learned.retrain_every` ticks it refits a biased matrix factorisation
by alternating least squares (`learned.iterations` sweeps, warm-started from the last fit):

    minimise  Σ_(u,g shown)  (y − μ − b_u − b_g − x_u·v_g)²
              + λ Σ_u (‖x_u − x⁰_u‖² + b_u²) + λ Σ_g (‖v_g − v⁰_g‖² + b_g²)

over every logged exposure (y = 1 consumed, 0 not; μ = the logs' consumption rate; λ =
`learned.regularization`). The penalty pulls vectors toward priors built from what the
platform knows without logs: x⁰_u = a·E(query_u) from its profile of the user and
v⁰_g = a·E(key_g) from the good's key (0 once the good has left the catalogue), where E maps
d = `embedding_dim` dimensions to r = `learned.rank` (orthonormal rows or columns of a DCT
basis, so x⁰·v⁰ = a²·cos(query, key) when r ≥ d) and a² = 1/2. It never reads users' true
interests, only its logs, profiles and keys, so it learns what it chose to show: the
estimates are confounded by its own past allocation.

Scores: the predicted consumption rate above the mean, x_u·v_g + b_g, times 2√d/T. Users
and goods without logged data use their priors (and b_g = 0), so before the first fit, and
for new users and goods, the rule is exactly `attention_softmax` (√d·cos/T).

Each half-sweep solves every user's (or good's) (r+1)×(r+1) normal equations at once: the
left-hand sides are one sparse product, (exposure counts) × (outer products of the other
side's vectors), and the systems go to one batched `np.linalg.solve`. Cost per sweep is
O(logged pairs × r²) plus O((users + goods) × r³); memory for the logs is bounded by
`log_ticks` ticks of exposures.

Implicit feedback (`learned.feedback: implicit`), the weighted ALS of Hu, Koren & Volinsky
(ICDM 2008): the labels above are constant when every shown good is consumed, so the
explicit fit then learns nothing. The implicit fit instead takes every pair of a logged user
and a live good, preference p = 1 where the user consumed the good in the logs and 0
elsewhere, with confidence c = 1 + α·(consumptions of the pair) (α = `learned.confidence`):

    minimise  Σ_(u logged, g live)  c_ug (p_ug − x_u·v_g)²
              + λ Σ_u ‖x_u − x⁰_u‖² + λ Σ_g ‖v_g − v⁰_g‖²

with the same priors and no biases (b = 0). A user's normal equations are
(VᵀV + Vᵀ(C_u − I)V + λI) x_u = Vᵀ C_u p_u + λ x⁰_u: VᵀV is computed once per half-sweep and
the rest runs over the user's consumed pairs only, so a sweep costs O(consumed pairs × r²)
plus O((users + goods) × r³) and never builds the users × goods matrix. Goods published after
a fit get what the fit gives a good without consumptions, v = λ(XᵀX + λI)⁻¹ v⁰ (X the fitted
users), so they are scored on the fitted goods' scale.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sparse
from pydantic import BaseModel

from simulator.market.catalogue import Catalogue, gathered_products
from simulator.market.state import FLOAT, MarketState
from simulator.rules.allocation.base import ALLOCATION_RULES, AllocationRule, Feedback
from simulator.scenario.schema import LearnedConfig, Scenario

PRIOR_SCALE = float(np.sqrt(0.5))  # a: priors predict a²·cos(query, key) above the mean rate
SOLVE_BLOCK_ELEMENTS = 1 << 22  # largest stack of normal-equation entries solved at once
INIT_NOISE = 0.05  # spread of new goods' starting vectors around their priors (breaks symmetry when r > d)


def prior_basis(dim: int, rank: int) -> np.ndarray:
    """E (dim × rank): orthonormal rows if rank ≥ dim (E·Eᵀ = I), orthonormal columns otherwise."""
    size = max(dim, rank)
    frequency = np.arange(size)[:, None]
    position = np.arange(size)[None, :]
    basis = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * position + 1) * frequency / (2 * size))
    basis[0] /= np.sqrt(2.0)  # the orthonormal DCT-II matrix
    return basis[:dim, :rank] if rank >= dim else basis[:rank, :dim].T


class _Pairs:
    """The logged (user, good) pairs: exposure and consumption counts, as sparse matrices both ways."""

    def __init__(self, user_index: np.ndarray, item_index: np.ndarray, outcome: np.ndarray, users: int, items: int):
        key = user_index * items + item_index
        pair_key, pair_of_entry = np.unique(key, return_inverse=True)  # sorted by user, then good
        self.user = pair_key // items
        self.item = pair_key % items
        self.shown = np.bincount(pair_of_entry).astype(np.float32)
        self.consumed = np.bincount(pair_of_entry, weights=outcome, minlength=len(pair_key)).astype(np.float32)
        self.by_item = np.lexsort((self.user, self.item))  # the same pairs sorted by good, then user
        self.user_major = self._matrix(self.user, self.item, self.shown, users, items)
        self.item_major = self._matrix(self.item[self.by_item], self.user[self.by_item], self.shown[self.by_item], items, users)

    @staticmethod
    def _matrix(rows: np.ndarray, columns: np.ndarray, data: np.ndarray, height: int, width: int) -> sparse.csr_matrix:
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=height))])
        return sparse.csr_matrix((data, columns, indptr), shape=(height, width))


def _solve_side(
    counts: sparse.csr_matrix,
    residual: np.ndarray,
    features: np.ndarray,
    prior: np.ndarray,
    penalty: float,
    shared: np.ndarray | None = None,
) -> np.ndarray:
    """Ridge solutions toward `prior` of every row's normal equations, in one batch.

    Row e solves (G + Σ_j n_ej f_j f_jᵀ + λI) z = Σ_j (c_ej − n_ej·offset_j) f_j + λ·prior_e, with
    n the exposure counts and c the consumption counts of the pair (e, j); `residual` holds
    c − n·offset in the order of `counts`' stored entries. G (`shared`, 0 when None) is shared by
    every row: the implicit fit passes FᵀF with n = α·consumptions and residual = 1 + n."""
    width = features.shape[1]
    upper = np.triu_indices(width)
    features32 = features.astype(np.float32)
    outer = features32[:, upper[0]] * features32[:, upper[1]]
    weighted = sparse.csr_matrix((residual.astype(np.float32), counts.indices, counts.indptr), shape=counts.shape)
    solved = np.empty((counts.shape[0], width))
    step = max(1, SOLVE_BLOCK_ELEMENTS // (width * width))  # rows per batch: bounds the stacked systems' memory
    for start in range(0, counts.shape[0], step):
        rows = slice(start, start + step)
        gram = (counts[rows] @ outer).astype(np.float64)
        lhs = np.empty((gram.shape[0], width * width))
        lhs[:, upper[0] * width + upper[1]] = gram
        lhs[:, upper[1] * width + upper[0]] = gram
        lhs = lhs.reshape(-1, width, width)
        lhs[:, np.arange(width), np.arange(width)] += penalty
        if shared is not None:
            lhs += shared
        rhs = (weighted[rows] @ features32).astype(np.float64) + penalty * prior[rows]
        solved[rows] = np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
    return solved


@dataclass
class LearnedModel:
    """The `learned` rule's memory : the platform's interaction
    logs of the last `allocation.learned.log_ticks` ticks, and the factors fitted to them."""

    log: deque = field(default_factory=deque)  # per tick: (tick, user rows, uids, consumed)
    trained_tick: int = -1  # tick of the last refit, -1 before the first
    mean: float = 0.0  # consumption rate over the logs at the last refit
    user_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted
    user_factor: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))  # [vector, bias] per row of user_rows
    item_uids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted
    item_factor: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))  # [vector, bias] per uid
    unseen_item_map: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # implicit: prior → vector of a good without logs


class Learned(AllocationRule):
    """Scores from a matrix factorisation of the platform's own exposure logs (see the module doc)."""

    name = "learned"
    summary = "a matrix factorisation the platform fits to its own exposure logs (confounded by what it showed)"
    candidate_mode = True

    def __init__(self, temperature: float, config: LearnedConfig):
        self.temperature = temperature
        self.rank = config.rank
        self.regularization = config.regularization
        self.iterations = config.iterations
        self.retrain_every = config.retrain_every
        self.log_ticks = config.log_ticks
        self.feedback = config.feedback
        self.confidence = config.confidence
        self.model = LearnedModel()

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> Learned:
        return cls(scenario.allocation.temperature, scenario.allocation.learned)

    def observe(self, state: MarketState, feedback: Feedback) -> None:
        """Log this tick's exposures and whether each was consumed; forget ticks beyond `log_ticks`."""
        model = self.model
        user_index, column = np.nonzero(feedback.shown)
        model.log.append(
            (
                state.tick,
                feedback.users[user_index].astype(np.int64),
                state.goods.uid[feedback.exposures[user_index, column]],
                feedback.consumed[user_index, column],
            )
        )
        while model.log and model.log[0][0] <= state.tick - self.log_ticks:
            model.log.popleft()

    def state_dict(self) -> dict[str, Any]:
        model = self.model
        return {
            "log": [list(entry) for entry in model.log],
            "trained_tick": model.trained_tick,
            "mean": model.mean,
            "user_rows": model.user_rows,
            "user_factor": model.user_factor,
            "item_uids": model.item_uids,
            "item_factor": model.item_factor,
            "unseen_item_map": model.unseen_item_map,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model = LearnedModel(
            log=deque((int(tick), np.asarray(users), np.asarray(uids), np.asarray(consumed)) for tick, users, uids, consumed in state["log"]),
            trained_tick=int(state["trained_tick"]),
            mean=float(state["mean"]),
            user_rows=np.asarray(state["user_rows"]),
            user_factor=np.asarray(state["user_factor"]),
            item_uids=np.asarray(state["item_uids"]),
            item_factor=np.asarray(state["item_factor"]),
            unseen_item_map=np.asarray(state["unseen_item_map"]),
        )

    @classmethod
    def state_bytes(cls, scenario: Scenario, active_users: int, users: int, goods: int) -> int:
        """The logs (`log_ticks` ticks of exposures, 24 bytes each) and the factors of users and goods
        (the implicit fit keeps no more: its pairs are the consumed ones, its r×r map is negligible)."""
        config = scenario.allocation.learned
        exposures_per_tick = active_users * scenario.population.users.budget.median
        return int(config.log_ticks * exposures_per_tick * 24 + (users + goods) * (config.rank + 1) * 8 * 3)

    def prepare(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        """Refit when the last fit is `retrain_every` ticks old (or there is none) and logs exist."""
        model = self.model
        if not any(len(entry[1]) for entry in model.log):
            return  # nothing logged yet: the priors stand
        if model.trained_tick >= 0 and state.tick - model.trained_tick < self.retrain_every:
            return
        if self.feedback == "implicit":
            self.fit_implicit(state, rng)
        else:
            self.fit(state, rng)
        model.trained_tick = state.tick

    def fit(self, state: MarketState, rng: np.random.Generator) -> None:
        """The explicit fit: consumed or not, on the logged exposures only (see the module doc)."""
        model = self.model
        users = np.concatenate([entry[1] for entry in model.log])
        uids = np.concatenate([entry[2] for entry in model.log])
        outcome = np.concatenate([entry[3] for entry in model.log]).astype(np.float64)
        user_rows, user_index = np.unique(users, return_inverse=True)
        item_uids, item_index = np.unique(uids, return_inverse=True)
        pairs = _Pairs(user_index, item_index, outcome, len(user_rows), len(item_uids))
        mean = float(outcome.mean())

        rank = self.rank
        user_prior, item_prior = self._priors(state, user_rows, item_uids, rank + 1)
        items = self._warm_start(item_uids, item_prior, rng)
        ones_items = np.ones((len(item_uids), 1))
        ones_users = np.ones((len(user_rows), 1))
        for _ in range(self.iterations):
            residual = pairs.consumed - pairs.shown * (mean + items[pairs.item, rank])
            features = np.hstack([items[:, :rank], ones_items])
            people = _solve_side(pairs.user_major, residual, features, user_prior, self.regularization)
            residual = pairs.consumed - pairs.shown * (mean + people[pairs.user, rank])
            features = np.hstack([people[:, :rank], ones_users])
            items = _solve_side(pairs.item_major, residual[pairs.by_item], features, item_prior, self.regularization)
        model.mean = mean
        model.user_rows, model.user_factor = user_rows, people
        model.item_uids, model.item_factor = item_uids, items

    def fit_implicit(self, state: MarketState, rng: np.random.Generator) -> None:
        """The implicit fit: weighted ALS over every logged user × live good (see the module doc)."""
        model = self.model
        users = np.concatenate([entry[1] for entry in model.log])
        uids = np.concatenate([entry[2] for entry in model.log])
        consumed = np.concatenate([entry[3] for entry in model.log]).astype(bool)
        user_rows, user_index = np.unique(users, return_inverse=True)
        item_uids = np.sort(state.goods.uid[state.goods.live])
        # The consumed pairs of live goods: the only entries where confidence or preference differ from (1, 0).
        item_index = np.searchsorted(item_uids, uids)
        in_catalogue = item_index < len(item_uids)
        in_catalogue[in_catalogue] = item_uids[item_index[in_catalogue]] == uids[in_catalogue]
        keep = consumed & in_catalogue
        pairs = _Pairs(user_index[keep], item_index[keep], np.ones(int(keep.sum())), len(user_rows), len(item_uids))
        extra = self.confidence * pairs.shown  # c − 1 = α·consumptions, in user-major order
        by_user = sparse.csr_matrix((extra, pairs.user_major.indices, pairs.user_major.indptr), shape=pairs.user_major.shape)
        by_item = sparse.csr_matrix((extra[pairs.by_item], pairs.item_major.indices, pairs.item_major.indptr), shape=pairs.item_major.shape)

        rank = self.rank
        user_prior, item_prior = self._priors(state, user_rows, item_uids, rank)
        items = self._warm_start(item_uids, item_prior, rng)
        penalty = self.regularization
        for _ in range(self.iterations):
            people = _solve_side(by_user, 1.0 + extra, items, user_prior, penalty, shared=items.T @ items)
            items = _solve_side(by_item, 1.0 + extra[pairs.by_item], people, item_prior, penalty, shared=people.T @ people)
        model.mean = float(consumed.mean()) if len(consumed) else 0.0
        model.user_rows, model.user_factor = user_rows, np.hstack([people, np.zeros((len(user_rows), 1))])
        model.item_uids, model.item_factor = item_uids, np.hstack([items, np.zeros((len(item_uids), 1))])
        model.unseen_item_map = penalty * np.linalg.inv(people.T @ people + penalty * np.eye(rank))

    def _priors(self, state: MarketState, user_rows: np.ndarray, item_uids: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """x⁰ of `user_rows` and v⁰ of `item_uids` (0 for goods no longer live), `width` columns (a bias column stays 0)."""
        rank = self.rank
        basis = prior_basis(state.goods.key.shape[1], rank)
        user_prior = np.zeros((len(user_rows), width))
        user_prior[:, :rank] = PRIOR_SCALE * (state.users.query[user_rows].astype(np.float64) @ basis)
        item_rows = state.uids.rows(item_uids)
        live = item_rows >= 0
        item_prior = np.zeros((len(item_uids), width))
        item_prior[live, :rank] = PRIOR_SCALE * (state.goods.key[item_rows[live]].astype(np.float64) @ basis)
        return user_prior, item_prior

    def _warm_start(self, item_uids: np.ndarray, item_prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Goods' starting vectors: the last fit's, or near their priors for goods it did not have."""
        model, rank = self.model, self.rank
        items = item_prior.copy()
        position = np.searchsorted(model.item_uids, item_uids)
        known = position < len(model.item_uids)
        known[known] = model.item_uids[position[known]] == item_uids[known]
        if len(model.item_factor) and model.item_factor.shape[1] == rank + 1:
            items[known] = model.item_factor[position[known], : items.shape[1]]
        else:
            known[:] = False
        fresh = ~known
        items[fresh, :rank] += INIT_NOISE * PRIOR_SCALE / np.sqrt(rank) * rng.standard_normal((int(fresh.sum()), rank))
        return items

    def _user_vectors(self, state: MarketState, users: np.ndarray) -> np.ndarray:
        basis = prior_basis(state.users.query.shape[1], self.rank)
        vectors = PRIOR_SCALE * (state.users.query[users].astype(np.float64) @ basis)
        model = self.model
        if len(model.user_rows) and model.user_factor.shape[1] == self.rank + 1:
            position = np.minimum(np.searchsorted(model.user_rows, users), len(model.user_rows) - 1)
            fitted = model.user_rows[position] == users
            vectors[fitted] = model.user_factor[position[fitted], : self.rank]
        return vectors

    def _item_vectors(self, state: MarketState, catalogue: Catalogue, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and biases of the catalogue's goods (or of the goods at `positions` only)."""
        basis = prior_basis(catalogue.keys.shape[1], self.rank)
        keys = catalogue.keys if positions is None else catalogue.keys[positions]
        rows = catalogue.rows if positions is None else catalogue.rows[positions]
        vectors = PRIOR_SCALE * (keys.astype(np.float64) @ basis)
        bias = np.zeros(len(rows))
        model = self.model
        if len(model.item_uids) and model.item_factor.shape[1] == self.rank + 1:
            uids = state.goods.uid[rows]
            position = np.minimum(np.searchsorted(model.item_uids, uids), len(model.item_uids) - 1)
            fitted = model.item_uids[position] == uids
            vectors[~fitted] = self._unseen_items(vectors[~fitted])
            vectors[fitted] = model.item_factor[position[fitted], : self.rank]
            bias[fitted] = model.item_factor[position[fitted], self.rank]
        return vectors, bias

    def _unseen_items(self, priors: np.ndarray) -> np.ndarray:
        """Vectors of goods the last fit did not have: their priors, or under implicit feedback
        what that fit gives a good without consumptions."""
        if self.model.unseen_item_map.shape == (self.rank, self.rank):
            return priors @ self.model.unseen_item_map
        return priors

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        dim = catalogue.keys.shape[1]
        items, bias = self._item_vectors(state, catalogue)
        scale = 2.0 * np.sqrt(dim) / self.temperature
        # One product: scale·[x_u, 1] · [v_g, b_g]ᵀ.
        people = np.hstack([self._user_vectors(state, users), np.ones((len(users), 1))]) * scale
        goods = np.hstack([items, bias[:, None]])
        return np.matmul(people.astype(FLOAT), goods.T.astype(FLOAT), out=out)

    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """New goods have no logs: their vectors are those of goods the last fit did not have, their bias 0."""
        scale = 2.0 * np.sqrt(keys.shape[1]) / self.temperature
        goods = self._unseen_items(PRIOR_SCALE * (keys.astype(np.float64) @ prior_basis(keys.shape[1], self.rank)))
        return ((self._user_vectors(state, users) * scale) @ goods.T).astype(FLOAT)

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The same scores for given catalogue positions only (the candidate mode, see simulator/rules/allocation/candidates.py)."""

        dim = catalogue.keys.shape[1]
        scale = 2.0 * np.sqrt(dim) / self.temperature
        people = (np.hstack([self._user_vectors(state, users), np.ones((len(users), 1))]) * scale).astype(FLOAT)
        distinct, inverse = np.unique(positions, return_inverse=True)
        items, bias = self._item_vectors(state, catalogue, distinct)
        goods = np.hstack([items, bias[:, None]]).astype(FLOAT)
        return gathered_products(people, goods, inverse.reshape(positions.shape))


ALLOCATION_RULES.register(Learned)
