"""Creator payout rules: how the payout pool is divided among creators each tick.

A rule (`PayoutRule`, one class per rule, registered by name) returns a non-negative weight per
creator row; the ledger's exact largest-remainder split (`ledger.split_exactly`) turns weights
into whole minor units that sum to the pool. Only alive creators are paid (circulation masks the
rest). Every rule but `equal` is computed per good first (`good_weights`, one weight per
catalogue row, what each good earned its creator) and summed by owner, so a creator's
adaptation can see which of its goods paid. Every rule that pays for what goods did multiplies
each good's contribution by its clickbait penalty (`state.goods.penalty`, 1 for goods not
penalised), so penalised goods earn their creators less.

Each rule also states the incentive it shows adapting creators, `marginal(probe)`: the payout
weight a creator's new good would add per exposure to each of a sample of users, given this
tick's incumbents. It is the rule's own computation applied to the candidate inserted among the
incumbents (the user-game rules insert the candidate's contribution into each user's ranked
game and take the change in its creator's reward with the same rank weights as the real split);
a property test checks it against the realised payout change when a good is added.

| rule | a creator's weight this tick |
| --- | --- |
| `exposure` | exposures of its goods |
| `engagement` | consumptions of its goods |
| `quality` | Σ quality of its goods over their consumptions |
| `shapley` | its Shapley value in each user's max-welfare game, summed over users |
| `backward` | its backward rewarding mechanism (BRM) reward per user, summed over users |
| `equal` | 1 for every alive creator |

The user-level games. For user u, creator j's contribution σ_uj is the highest value at full
attention (`consumption.intrinsic`: quality × taste match, times the good's penalty) among j's
goods u consumed this tick, 0 if none. Full attention, not the realised value: the realised value
also carries the feed position's overload and the user's fatigue, so the same good would earn
about 3× less at position 7 than at 0 and pay would follow the allocator's random order (and the
backward rule's γ^(k−1) would discount position twice). The coalition value v(S) = max_{j∈S} σ_uj
is then a property of the goods and the user alone.
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

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from simulator.market.outcomes import Allocation, Consumption
from simulator.market.state import MarketState
from simulator.registry import define_kind
from simulator.scenario.schema import Scenario

BLOCK_ELEMENTS = 1 << 22  # users × K entries held at once by the user-game rules


class NoParams(BaseModel):
    """A rule without knobs of its own: `params` must be empty."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class Probe:
    """What an adapting creator's model knows when it asks a rule what a new good would earn.

    For C creators, M candidate strategies each and U sampled users: the probability that the
    user consumes an exposure of the candidate good, the good's value to the user at full
    attention (its contribution σ if consumed), its quality, and each user's incumbent games
    this tick (`owners`, `values`: (U, K) as in `contributions`, the realised consumptions).
    """

    creators: np.ndarray  # (C,) creator rows
    consume: np.ndarray  # (C, M, U) probability of consumption per exposure
    value: np.ndarray  # (C, M, U) value at full attention
    quality: np.ndarray  # (C, M)
    owners: np.ndarray  # (U, K) incumbents' creators, -1 for none
    values: np.ndarray  # (U, K) incumbents' contributions, 0 for none


class PayoutRule(ABC):
    """How the payout pool is divided, and the incentive that shows adapting creators (see the module doc).

    | member | what it declares |
    | --- | --- |
    | `name`, `summary` | registry name and the line `attnsim rules` prints |
    | `Params` | its own knobs, a pydantic model validated from `circulation.creator_payout.params` |
    | `from_scenario(scenario, params)` | build the rule for a run |
    | `good_weights(state, allocation, consumption)` | per catalogue row, what each good earned its creator |
    | `creator_weights(state, per_good)` | per creator row, the weight in the split (default: its goods' sum) |
    | `marginal(probe)` | (C, M, U) the weight a candidate good adds per exposure to each sampled user |
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> PayoutRule:
        return cls()

    @abstractmethod
    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        """(goods capacity,) non-negative: what each good earned its creator this tick."""

    def creator_weights(self, state: MarketState, per_good: np.ndarray) -> np.ndarray:
        """(creators_born,): the sum of each creator's goods' weights."""
        rows = np.flatnonzero(per_good)
        return np.bincount(state.goods.owner[rows], weights=per_good[rows], minlength=state.creators_born)[: state.creators_born]

    @abstractmethod
    def marginal(self, probe: Probe) -> np.ndarray:
        """(C, M, U): the expected weight a candidate good adds to its creator per exposure to each user."""


def check_rule(cls: type) -> list[str]:
    """What `cls` lacks to be a payout rule (empty when it is complete)."""
    if not (isinstance(cls, type) and issubclass(cls, PayoutRule)):
        return ["the base class simulator.rules.payout.PayoutRule"]
    missing = [f"`{name}`" for name in ("name", "summary") if not isinstance(getattr(cls, name, None), str)]
    missing += [f"`{name}()`" for name in sorted(cls.__abstractmethods__)]
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        missing.append("`Params` as a pydantic model")
    return missing


PAYOUT_RULES = define_kind("payout", check_rule)


def make_payout_rule(scenario: Scenario) -> PayoutRule:
    """The payout rule of a run: the registered class `circulation.creator_payout.rule` names, with its params."""
    config = scenario.circulation.creator_payout
    cls = PAYOUT_RULES.resolve(config.rule)
    return cls.from_scenario(scenario, cls.Params.model_validate(config.params))


def good_weights(rule: PayoutRule, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
    """`rule.good_weights`, clipped at 0 (the split needs non-negative weights)."""
    return np.maximum(rule.good_weights(state, allocation, consumption), 0.0)


def payout_weights(rule: PayoutRule, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
    """Weights per creator row (length `state.creators_born`) under `rule`."""
    return rule.creator_weights(state, good_weights(rule, state, allocation, consumption))


# --- the rules that pay for events ---------------------------------------------------------------


def _per_good(state: MarketState, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.bincount(rows, weights=weights, minlength=state.goods.capacity()).astype(np.float64)


def _consumed(allocation: Allocation, consumption: Consumption) -> np.ndarray:
    return allocation.exposures[consumption.consumed & (allocation.exposures >= 0)]


class Exposure(PayoutRule):
    name = "exposure"
    summary = "in proportion to exposures of a creator's goods"

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        shown = allocation.exposures[allocation.exposures >= 0]
        return _per_good(state, shown, state.goods.penalty[shown].astype(np.float64))

    def marginal(self, probe: Probe) -> np.ndarray:
        return np.ones_like(probe.consume)


class Engagement(PayoutRule):
    name = "engagement"
    summary = "in proportion to consumptions of a creator's goods"

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        consumed = _consumed(allocation, consumption)
        return _per_good(state, consumed, state.goods.penalty[consumed].astype(np.float64))

    def marginal(self, probe: Probe) -> np.ndarray:
        return probe.consume


class Quality(PayoutRule):
    name = "quality"
    summary = "in proportion to the quality of a creator's goods over their consumptions"

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        goods = state.goods
        consumed = _consumed(allocation, consumption)
        return _per_good(state, consumed, goods.quality[consumed].astype(np.float64) * goods.penalty[consumed])

    def marginal(self, probe: Probe) -> np.ndarray:
        return probe.consume * probe.quality[:, :, None]


class Equal(PayoutRule):
    name = "equal"
    summary = "the same share to every alive creator with a good on offer"

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        return np.zeros(state.goods.capacity())  # pays for nothing a good does

    def creator_weights(self, state: MarketState, per_good: np.ndarray) -> np.ndarray:
        """1 for every alive creator with at least one good in the catalogue: a creator with nothing on offer is not active."""
        goods = state.goods
        on_offer = np.bincount(goods.owner[goods.live], minlength=state.creators_born)[: state.creators_born] > 0
        return (state.creators.alive[: state.creators_born] & on_offer).astype(np.float64)

    def marginal(self, probe: Probe) -> np.ndarray:
        return np.zeros_like(probe.consume)  # what a good does changes nothing


# --- the rules that pay for users' games ---------------------------------------------------------


class UserGameRule(PayoutRule):
    """A rule that pays each creator its reward in every user's ranked game (the module doc)."""

    @abstractmethod
    def rank_weights(self, ranks: np.ndarray) -> np.ndarray:
        """w_k for ranks k = 1, 2, … (as float64)."""

    def good_weights(self, state: MarketState, allocation: Allocation, consumption: Consumption) -> np.ndarray:
        return user_game_good_rewards(state, allocation, consumption, self.rank_weights)

    def marginal(self, probe: Probe) -> np.ndarray:
        """The candidate's creator's reward with the candidate in each user's game minus without it,
        times the chance the candidate is consumed: the same game and rank weights as the split."""
        return probe.consume * inserted_gain(probe.creators, probe.value, probe.owners, probe.values, self.rank_weights)


class Shapley(UserGameRule):
    name = "shapley"
    summary = "each creator's Shapley value in every user's max-welfare game: cloning a niche does not pay"

    def rank_weights(self, ranks: np.ndarray) -> np.ndarray:
        return shapley_rank_weights(ranks)


class Backward(UserGameRule):
    name = "backward"
    summary = "the backward rewarding mechanism (Yao et al. 2023): a reward that is the gain in position-discounted welfare"

    def __init__(self, discount: float):
        self.discount = discount

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> Backward:
        return cls(scenario.circulation.creator_payout.backward_discount)

    def rank_weights(self, ranks: np.ndarray) -> np.ndarray:
        return backward_rank_weights(self.discount)(ranks)


for _rule in (Exposure, Engagement, Quality, Shapley, Backward, Equal):
    PAYOUT_RULES.register(_rule)


# --- the user-level games ----------------------------------------------------------------------


def shapley_rank_weights(ranks: np.ndarray) -> np.ndarray:
    """w_k = 1/k: the drop below rank k is shared by the k creators at or above it."""
    return 1.0 / ranks


def backward_rank_weights(discount: float) -> Callable[[np.ndarray], np.ndarray]:
    """w_k = discount^(k−1): the BRM's non-increasing f_k (0^0 = 1, so discount 0 pays rank 1 only)."""

    def weights(ranks: np.ndarray) -> np.ndarray:
        return np.power(float(discount), ranks - 1.0)

    return weights


def contributions(
    state: MarketState, allocation: Allocation, consumption: Consumption, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(owners, values), both (users, K): the creator of each consumed good (-1 for none) and its
    contribution, value at full attention × penalty (0 for none); only the allocation's `rows`
    (indices into its users) when given, as a creator's audience sample needs."""
    goods = state.goods
    pick = slice(None) if rows is None else rows
    exposures = allocation.exposures[pick]
    safe = np.maximum(exposures, 0)
    consumed = consumption.consumed[pick] & (exposures >= 0)
    owners = np.where(consumed, goods.owner[safe], -1).astype(np.int64)
    values = np.where(consumed, consumption.intrinsic[pick].astype(np.float64) * goods.penalty[safe], 0.0)
    return owners, values


def user_game_good_rewards(
    state: MarketState, allocation: Allocation, consumption: Consumption, rank_weights: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Per catalogue row: the user-game rewards, credited to the good behind each creator's contribution."""
    owners, values = contributions(state, allocation, consumption)
    items = np.where(owners >= 0, allocation.exposures, -1)
    return user_game_rewards(owners, values, state.goods.capacity(), rank_weights, items=items)


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


def inserted_reward(others: np.ndarray, x: np.ndarray, rank_weights: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The reward of a player of contribution x ≥ 0 joining a game whose other players' contributions
    are `others` (R, K), sorted descending and zero padded; `x` is (R, Q): one reward per entry.

    With the others o_1 ≥ … ≥ o_K, x takes rank l = 1 + #(o > x), and
    reward = w_l (x − o_l) + Σ_{k>l} w_k (s_k − s_{k+1}) over the joint sequence s: the same
    sum `ranked_rewards` takes (ties are harmless: a zero drop earns nothing)."""
    rows, width = others.shape
    ranks = np.arange(1, width + 2, dtype=np.float64)
    weights = rank_weights(ranks)  # w_1 … w_{K+1}
    padded = np.concatenate([others, np.zeros((rows, 1))], axis=1)  # o_1 … o_K, o_{K+1} = 0
    drops = padded[:, :-1] - padded[:, 1:]  # o_j − o_{j+1}, j = 1 … K
    # tail[l−1] = Σ_{j=l..K} w_{j+1} (o_j − o_{j+1}): what the others below rank l add to it.
    tail = np.concatenate([np.cumsum((drops * weights[None, 1:])[:, ::-1], axis=1)[:, ::-1], np.zeros((rows, 1))], axis=1)
    above = (others[:, None, :] > x[:, :, None]).sum(axis=2)  # l − 1
    below = np.take_along_axis(padded, above, axis=1)  # o_l, the largest other not above x
    return weights[above] * (x - below) + np.take_along_axis(tail, above, axis=1)


def inserted_gain(
    creators: np.ndarray,
    value: np.ndarray,
    owners: np.ndarray,
    values: np.ndarray,
    rank_weights: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """(C, M, U): how much creator creators[c]'s reward in user u's game grows when it adds a good
    whose contribution would be value[c, m, u], the incumbents' games being (owners, values) (U, K).

    A creator's contribution is its best good, so its own incumbent σ_uc (0 if none) becomes
    max(σ_uc, value); gain = reward(max(σ_uc, value)) − reward(σ_uc), the other creators fixed."""
    count, candidates, audience = value.shape
    if count == 0 or audience == 0:
        return np.zeros_like(value)
    players, sigma, _ = best_contributions(owners, values)  # ascending, one entry per creator
    others = sigma[:, ::-1]  # (U, K) descending: every incumbent creator
    x = value.transpose(2, 0, 1).reshape(audience, count * candidates)
    gain = inserted_reward(others, x, rank_weights)  # a creator with nothing consumed by the user
    # Creators that already contribute to a user: without their own entry, from σ_uc to max(σ_uc, v).
    user, slot = np.nonzero(np.isin(players, creators) & (players >= 0))
    if len(user):
        order = np.argsort(creators)
        column = order[np.searchsorted(creators[order], players[user, slot])]
        own = sigma[user, slot]
        rest = sigma[user].copy()
        rest[np.arange(len(user)), slot] = 0.0
        rest = -np.sort(-rest, axis=1)
        block = value[column, :, user]  # (P, M)
        with_good = inserted_reward(rest, np.maximum(block, own[:, None]), rank_weights)
        without = inserted_reward(rest, own[:, None], rank_weights)
        gain = gain.reshape(audience, count, candidates)
        gain[user, column] = with_good - without
    return gain.reshape(audience, count, candidates).transpose(1, 2, 0)
