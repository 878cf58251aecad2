"""Creator payout rules: how the payout pool is divided among creators each tick.

A rule returns a non-negative weight per creator row; the ledger's exact largest-remainder
split (`ledger.split_exactly`) turns weights into whole minor units that sum to the pool. Only
alive creators are paid (circulation masks the rest). Every rule but `equal` is computed per
good first (`good_weights`, one weight per catalogue row, what each good earned its creator)
and summed by owner, so a creator's adaptation can see which of its goods paid. Every rule that pays for what goods did
multiplies each good's contribution by its clickbait penalty (`state.goods.penalty`, 1 for
goods not penalised), so penalised goods earn their creators less.

| rule | a creator's weight this tick |
| --- | --- |
| `exposure` | exposures of its goods |
| `engagement` | consumptions of its goods |
| `quality` | Σ quality of its goods over their consumptions |
| `shapley` | its Shapley value in each user's max-welfare game, summed over users |
| `backward` | its backward rewarding mechanism (BRM) reward per user, summed over users |
| `equal` | 1 for every alive creator |

The user-level games. For user u, creator j's contribution σ_uj is the highest realised value
(`consumption.value`, times the good's penalty) among j's goods u consumed this tick, 0 if none.
Sort u's contributions descending, σ_1 ≥ σ_2 ≥ … ≥ σ_n > 0, σ_{n+1} = 0, and call
δ_k = σ_k − σ_{k+1} the drop below rank k. Both rank-based rules pay the creator at rank l

    reward_l = Σ_{k=l..n} w_k · δ_k

- `shapley`, w_k = 1/k: the Shapley value of the game v(S) = max_{j∈S} σ_uj (a user's welfare
  from a coalition of creators is its best consumed good). In the usual ascending notation,
  φ_(i) = Σ_{k≤i} (σ_(k) − σ_(k−1)) / (n − k + 1): the increment between consecutive values is
  shared equally by every creator at or above it. Shares sum to max_j σ_uj.
- `backward`, w_k = γ^(k−1) with γ = `creator_payout.backward_discount`: the Backward
  Rewarding Mechanism of Yao et al. (NeurIPS 2023, "Rethinking Incentives in Recommender
  Systems: Are Monotone Rewards Always Beneficial?", arXiv:2306.07893), in its linear form
  M_i = Σ_{k=l_i..K} f_k · (σ_k − σ_{k+1}) with constant, non-increasing f_k = γ^(k−1) over all
  K = n ranked creators. A creator's reward depends only on the contributions ranked at or
  below it, and it is the marginal change of the potential Φ_u = Σ_k f_k σ_k (a position-
  discounted user welfare) as the creator raises its own σ: competing for it is a potential
  game whose potential is that welfare. γ = 0 pays only the top creator its margin over the
  runner-up (σ_1 − σ_2, the VCG-like marginal contribution to max welfare); γ = 1 pays every
  creator its own σ.

Both are vectorised over users: each user has at most budget-many consumptions a tick, so the
per-user games are rows of a (users, K) array, processed in blocks of rows.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from simulator.market.outcomes import Allocation, Consumption
from simulator.market.state import MarketState

BLOCK_ELEMENTS = 1 << 22  # users × K entries held at once by the user-game rules
DEFAULT_BACKWARD_DISCOUNT = 0.5


def payout_weights(
    rule: str,
    state: MarketState,
    allocation: Allocation,
    consumption: Consumption,
    *,
    backward_discount: float = DEFAULT_BACKWARD_DISCOUNT,
) -> np.ndarray:
    """Weights per creator row (length `state.creators_born`) under payout `rule`.

    `backward_discount` is γ of the `backward` rule.
    """
    per_good = good_weights(rule, state, allocation, consumption, backward_discount=backward_discount)
    return creator_weights(rule, state, per_good)


def creator_weights(rule: str, state: MarketState, per_good: np.ndarray) -> np.ndarray:
    """Per creator row: the sum of its goods' `good_weights`. `equal` weighs every alive creator
    with at least one good in the catalogue: a creator with nothing on offer is not active."""
    goods = state.goods
    if rule == "equal":
        on_offer = np.bincount(goods.owner[goods.live], minlength=state.creators_born)[: state.creators_born] > 0
        return (state.creators.alive[: state.creators_born] & on_offer).astype(np.float64)
    rows = np.flatnonzero(per_good)
    return np.bincount(goods.owner[rows], weights=per_good[rows], minlength=state.creators_born)[: state.creators_born]


def good_weights(
    rule: str,
    state: MarketState,
    allocation: Allocation,
    consumption: Consumption,
    *,
    backward_discount: float = DEFAULT_BACKWARD_DISCOUNT,
) -> np.ndarray:
    """Per catalogue row: what each good earned its creator under `rule` this tick (a creator's
    payout weight is the sum over its goods). For `shapley` and `backward` a creator's reward
    from a user is credited to the good that made its contribution σ_uj (its best consumed
    good for that user). `equal` pays for nothing a good does: zeros."""
    try:
        weigh = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown payout rule {rule!r}; known: {sorted(RULES)}") from None
    return np.maximum(weigh(state, allocation, consumption, backward_discount), 0.0)


# --- the rules: weight per catalogue row ---------------------------------------------------------


def _per_good(state: MarketState, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.bincount(rows, weights=weights, minlength=state.goods.capacity()).astype(np.float64)


def _exposure(state, allocation, consumption, discount) -> np.ndarray:
    shown = allocation.exposures[allocation.exposures >= 0]
    return _per_good(state, shown, state.goods.penalty[shown].astype(np.float64))


def _engagement(state, allocation, consumption, discount) -> np.ndarray:
    consumed = allocation.exposures[consumption.consumed & (allocation.exposures >= 0)]
    return _per_good(state, consumed, state.goods.penalty[consumed].astype(np.float64))


def _quality(state, allocation, consumption, discount) -> np.ndarray:
    goods = state.goods
    consumed = allocation.exposures[consumption.consumed & (allocation.exposures >= 0)]
    return _per_good(state, consumed, goods.quality[consumed].astype(np.float64) * goods.penalty[consumed])


def _shapley(state, allocation, consumption, discount) -> np.ndarray:
    return user_game_good_rewards(state, allocation, consumption, shapley_rank_weights)


def _backward(state, allocation, consumption, discount) -> np.ndarray:
    return user_game_good_rewards(state, allocation, consumption, backward_rank_weights(discount))


def _equal(state, allocation, consumption, discount) -> np.ndarray:
    return np.zeros(state.goods.capacity())


RULES: dict[str, Callable[..., np.ndarray]] = {
    "exposure": _exposure,
    "engagement": _engagement,
    "quality": _quality,
    "shapley": _shapley,
    "backward": _backward,
    "equal": _equal,
}


# --- the user-level games ----------------------------------------------------------------------


def shapley_rank_weights(ranks: np.ndarray) -> np.ndarray:
    """w_k = 1/k: the drop below rank k is shared by the k creators at or above it."""
    return 1.0 / ranks


def backward_rank_weights(discount: float) -> Callable[[np.ndarray], np.ndarray]:
    """w_k = discount^(k−1): the BRM's non-increasing f_k (0^0 = 1, so discount 0 pays rank 1 only)."""

    def weights(ranks: np.ndarray) -> np.ndarray:
        return np.power(float(discount), ranks - 1.0)

    return weights


def user_game_good_rewards(
    state: MarketState, allocation: Allocation, consumption: Consumption, rank_weights: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Per catalogue row: the user-game rewards (value × penalty of each consumption), credited
    to the good behind each creator's contribution."""
    goods = state.goods
    exposures = allocation.exposures
    safe = np.maximum(exposures, 0)
    consumed = consumption.consumed & (exposures >= 0)
    owners = np.where(consumed, goods.owner[safe], -1).astype(np.int64)
    values = np.where(consumed, consumption.value.astype(np.float64) * goods.penalty[safe], 0.0)
    return user_game_rewards(owners, values, goods.capacity(), rank_weights, items=np.where(consumed, exposures, -1))


def best_contributions(
    owners: np.ndarray, values: np.ndarray, items: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user row, σ_uj: each creator's best value, in ascending order of σ.

    `owners` and `values` are (users, K): the creator of each consumed good (-1 for none) and
    its value; `items` (same shape, default `owners`) names what to credit, e.g. the good.
    Returns (creators, sigma, credited), all (users, K): each creator appears once per row with
    its highest value and the item that achieved it, rows sorted by sigma ascending; other
    entries are (-1, 0, -1).
    """
    items = owners if items is None else items
    rows, width = owners.shape
    if rows == 0 or width == 0:
        return owners.copy(), np.zeros(owners.shape), items.copy()
    row_index = np.repeat(np.arange(rows), width)
    # Within each row: by creator, then by value, so a creator's best good comes last.
    order = np.lexsort((values.ravel(), owners.ravel(), row_index)).reshape(rows, width)
    sorted_owners = owners.ravel()[order]
    sorted_values = values.ravel()[order]
    sorted_items = items.ravel()[order]
    best = sorted_owners >= 0
    best[:, :-1] &= sorted_owners[:, :-1] != sorted_owners[:, 1:]
    sigma = np.where(best, sorted_values, 0.0)
    creators = np.where(best, sorted_owners, -1)
    credited = np.where(best, sorted_items, -1)
    by_sigma = np.argsort(sigma, axis=1, kind="stable")
    take = partial(np.take_along_axis, indices=by_sigma, axis=1)
    return take(creators), take(sigma), take(credited)


def ranked_rewards(sigma: np.ndarray, rank_weights: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """reward_l = Σ_{k≥l} w_k (σ_k − σ_{k+1}) for each entry of rows of σ sorted ascending.

    Column i of a K-wide row sorted ascending holds rank k = K − i (1 = the largest); zeros
    below the smallest positive entry have zero drops, so they neither earn nor change others.
    """
    width = sigma.shape[1]
    drop = np.diff(sigma, axis=1, prepend=0.0)
    ranks = np.arange(width, 0, -1, dtype=np.float64)
    return np.cumsum(drop * rank_weights(ranks)[None, :], axis=1)


def user_game_rewards(
    owners: np.ndarray,
    values: np.ndarray,
    size: int,
    rank_weights: Callable[[np.ndarray], np.ndarray],
    items: np.ndarray | None = None,
) -> np.ndarray:
    """The sum over users of `ranked_rewards` of each creator's best contribution σ_uj, per
    creator (length `size`), or per credited item if `items` is given."""
    total = np.zeros(size, dtype=np.float64)
    width = max(owners.shape[1], 1)
    step = max(1, BLOCK_ELEMENTS // width)
    for start in range(0, len(owners), step):
        block = slice(start, start + step)
        _, sigma, credited = best_contributions(owners[block], values[block], None if items is None else items[block])
        reward = ranked_rewards(sigma, rank_weights)
        paid = credited >= 0
        total += np.bincount(credited[paid], weights=np.maximum(reward[paid], 0.0), minlength=size)[:size]
    return total
