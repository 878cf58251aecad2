"""`viable_matching`: keep a chosen set of creators viable, each with at least a share ν of exposure.

After Mladenov, Creager, Ben-Porat, Swersky, Zemel & Boutilier, "Optimizing Long-term Social
Welfare in Recommender Systems: A Constrained Matching Approach" (ICML 2020). A creator whose
exposure falls below a threshold leaves; a myopic allocator lets niche creators fall below it,
and their users lose them for good. Every `every` ticks, on a seeded sample of n alive users,
the rule solves the constrained matching

    maximise   Σ_(u,c) k_u v_uc x_uc
    subject to Σ_c x_uc ≤ 1                       (each sampled user's content units)
               0 ≤ x_uc ≤ min(1, g_c / k_u)        (a feed shows a good once)
               ν·K·y_c ≤ Σ_u k_u x_uc ≤ K·y_c      (a kept creator gets at least ν of them; others none)
               y_c ∈ {0, 1}

with scipy.optimize.milp (HiGHS branch and bound): x_uc is the share of user u's k_u content
units (budget less ad slots) planned for creator c, K = Σ_u k_u, g_c the creator's live goods,
y_c whether c is kept viable, and v_uc the platform's estimate of u's
value of c's best live good, quality·exp(sharpness·(cos(query_u, key) − 1)) with its profile
of the user (never the true interest). Exposure planned for a creator that is not kept counts
for nothing, as that creator will leave: so a creator is kept when the users who prefer it
gain more than the exposure moved to it to reach ν costs the others. Each user's columns are
its `creators_per_user` most valuable creators. With `keep: all` every creator with live goods
is kept (no choice to make).

Realisation. The tick's sampler is softmax over √d·cos(query, key)/T (as `attention_softmax`)
plus a per-creator price λ_c ≥ 0 for kept creators: the Lagrange multipliers of the
entropy-regularised matching, whose solution is the allocation closest in KL divergence to
the plain softmax in which every kept creator's expected share is at least ν (the softmax
realises it exactly, with λ_c > 0 only where the constraint binds). A creator newly kept at a
solve starts from the sample's fixed point λ_c ← max(0, λ_c + log(ν / share_c(λ))) (share_c:
creator c's mean softmax probability over the sample, from per-user, per-creator log-sums of
the scores); after every tick's consumption each kept creator's price takes one dual step on
its realised share s_c of the tick's content exposures, λ_c ← clip(λ_c + η·log(ν / s_c), 0, λ_max)
(η = 0.5), which corrects what the sample's first-draw estimate misses (feeds drawn without
replacement, masked goods, which users show up). Creators outside the kept set are neither
boosted nor suppressed; creators who entered since the last solve wait for the next one.

Infeasibility. `keep: all` with ν × population.creators.count > 1 is refused before the run
(`population_problem`). When more creators hold live goods at run time than 1/ν, the rule keeps
the ⌊1/ν⌋ most valuable (by Σ_u v_uc on the sample) and drops the rest; each such fallback is
recorded in the rule's state (`fallbacks`: tick, dropped creator rows, reason), which the run
writes to manifest.json (`allocation_rule_notes`). The matching itself is always feasible
(keeping no one is), and a solve that HiGHS stops without a solution keeps the last plan,
recorded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sparse
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.special import logsumexp

from simulator.market.catalogue import Catalogue
from simulator.market.kernels import mask_remembered
from simulator.market.state import FLOAT, MarketState
from simulator.market.values import expected_value
from simulator.rules.allocation.base import ALLOCATION_RULES, Feedback
from simulator.rules.allocation.creators import CreatorSegments
from simulator.rules.allocation.query_key import AttentionSoftmax
from simulator.scenario.schema import Scenario

SAMPLE_STREAM = 0x5EED_717A  # the user sample's own random stream, apart from the tick's draws
PRICE_ITERATIONS = 300  # fixed-point steps per tick for the prices
PRICE_TOLERANCE = 1e-3  # relative slack on ν at which the prices have converged
MAX_PRICE = 50.0  # a bound on λ (a creator whose goods every sampled user has consumed)
NODE_LIMIT = 2_000  # branch-and-bound nodes per solve: bounds the work and keeps it deterministic (no time limit)
MIP_GAP = 1e-4  # relative optimality gap HiGHS stops at
PRICE_STEP = 1.0  # η of the prices' dual step on realised shares


class ViableMatchingParams(BaseModel):
    """The `viable_matching` rule's knobs (`allocation.params`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    min_exposure_share: float = Field(0.02, ge=0.0, le=1.0)
    """ν: the share of all content exposure each kept creator gets at least, in expectation."""
    keep: Literal["optimal", "all"] = "optimal"
    """optimal: the matching chooses which creators to keep viable; all: every creator with live goods (at most ⌊1/ν⌋, see the fallback)."""
    every: int = Field(5, ge=1)
    """Ticks between solves of the matching (the prices are recalibrated every tick)."""
    sample_users: int = Field(256, ge=1, le=100_000)
    """Alive users sampled for each solve (seeded by the scenario's seed and the tick)."""
    creators_per_user: int = Field(32, ge=1)
    """Columns of the matching per sampled user: its most valuable creators."""


@dataclass
class ViabilityPlan:
    """The last solve: the sample, the kept creators and their prices, and the fallbacks so far."""

    solved_tick: int = -1
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # user rows
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # creator rows, sorted
    planned_share: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the matching's share per kept creator
    price: np.ndarray = field(default_factory=lambda: np.zeros(0))  # λ per kept creator
    fallbacks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CreatorTable:
    """Per sampled user and creator with live goods: the log-sum of its goods' scores and its best value."""

    creators: np.ndarray  # (C,) creator rows, sorted
    log_mass: np.ndarray  # (n, C) log Σ_(g of c) exp(score_ug)
    value: np.ndarray  # (n, C) max over c's goods of the estimated value
    eligible: np.ndarray  # (n, C) the creator's live goods the user may be shown (not masked as consumed)
    units: np.ndarray  # (n,) content units per sampled user


class ViableMatching(AttentionSoftmax):
    """attention_softmax plus per-creator prices that keep a matched set of creators viable (see the module doc)."""

    name = "viable_matching"
    summary = "a constrained matching (Mladenov et al. 2020) keeps chosen creators above a share ν of exposure; softmax with per-creator prices realises it"
    Params = ViableMatchingParams
    candidate_mode = False  # the prices need every creator's goods in every score row

    def __init__(self, temperature: float, sharpness: float, seed: int, ad_slots: int, params: ViableMatchingParams):
        super().__init__(temperature)
        self.sharpness = sharpness
        self.seed = seed
        self.ad_slots = ad_slots
        self.params = params
        self.plan = ViabilityPlan()

    @classmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> ViableMatching:
        assert isinstance(params, ViableMatchingParams)
        return cls(scenario.allocation.temperature, scenario.population.users.taste_sharpness, scenario.seed, scenario.allocation.ad_slots, params)

    @classmethod
    def population_problem(cls, params: BaseModel, population: Any) -> tuple[str, str] | None:
        """`keep: all` cannot give each of the starting creators ν when ν × creators > 1."""
        assert isinstance(params, ViableMatchingParams)
        share, creators = params.min_exposure_share, population.creators.count
        if params.keep == "all" and share * creators > 1.0 + 1e-12:
            return (
                "params.min_exposure_share",
                f"keep: all needs {share} × {creators} creators (population.creators.count) = {share * creators:g} of the exposure, "
                f"more than all of it; lower it to at most {1.0 / creators:.6g} or use keep: optimal",
            )
        return None

    # --- the plan ------------------------------------------------------------------------------

    def prepare(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        """Solve the matching every `every` ticks (newly kept creators get starting prices)."""
        catalogue = Catalogue.of(state)
        plan = self.plan
        if len(catalogue.rows) == 0 or (plan.solved_tick >= 0 and state.tick - plan.solved_tick < self.params.every):
            return
        sample = self._sample(state)
        if len(sample) == 0:
            return
        table = self._table(state, catalogue, sample, scenario.allocation.block_elements, scenario.allocation.mask_consumed)
        before = dict(zip(plan.kept.tolist(), plan.price.tolist()))
        self._solve(state.tick, table)
        plan.sample, plan.solved_tick = sample, state.tick
        plan.price = np.array([before.get(creator, 0.0) for creator in plan.kept.tolist()])
        fresh = np.array([creator not in before for creator in plan.kept.tolist()], dtype=bool)
        if fresh.any():
            plan.price[fresh] = self._prices(table)[fresh]

    def observe(self, state: MarketState, feedback: Feedback) -> None:
        """One dual step per kept creator on its realised share of the tick's content exposures."""
        plan, share = self.plan, self.params.min_exposure_share
        shown = feedback.exposures[feedback.shown]
        if len(plan.kept) == 0 or share <= 0 or len(shown) == 0:
            return
        owners = state.goods.owner[shown]
        position = np.minimum(np.searchsorted(plan.kept, owners), len(plan.kept) - 1)
        hit = plan.kept[position] == owners
        realised = np.bincount(position[hit], minlength=len(plan.kept)) / len(shown)
        step = PRICE_STEP * np.log(share / np.maximum(realised, share / 10))
        plan.price = np.clip(plan.price + step, 0.0, MAX_PRICE)

    def _sample(self, state: MarketState) -> np.ndarray:
        alive = np.flatnonzero(state.users.alive)
        generator = np.random.default_rng([self.seed, state.tick, SAMPLE_STREAM])
        size = min(self.params.sample_users, len(alive))
        return np.sort(generator.choice(alive, size=size, replace=False)).astype(np.int64)

    def _table(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, block_elements: int, mask: bool) -> CreatorTable:
        """Log-sums, values and eligible goods per user and creator over the goods each user may
        be shown (the engine's mask of consumed goods applied), `block_elements` scores at a time."""
        segments = CreatorSegments.of(state, catalogue)
        budgets = state.users.budget[users].astype(np.int64)
        units = np.maximum(budgets - np.minimum(self.ad_slots, np.maximum(budgets - 1, 0)), 1)
        log_mass = np.empty((len(users), len(segments)))
        value = np.empty((len(users), len(segments)))
        eligible = np.empty((len(users), len(segments)))
        lengths = np.diff(np.r_[segments.starts, len(segments.order)])
        step = max(1, block_elements // max(len(catalogue.rows), 1))
        for start in range(0, len(users), step):
            block = users[start : start + step]
            scores = self.scores(state, catalogue, block, boosted=False)
            if mask:
                mask_remembered(scores, block, state.users.history, state.uids.row_of, catalogue.position_of_row)
            scores = scores.astype(np.float64)[:, segments.order]
            shown = np.isfinite(scores)
            peak = np.maximum.reduceat(scores, segments.starts, axis=1)
            peak = np.where(np.isfinite(peak), peak, 0.0)
            spread = np.exp(scores - np.repeat(peak, lengths, axis=1))
            with np.errstate(divide="ignore"):
                log_mass[start : start + len(block)] = peak + np.log(np.add.reduceat(spread, segments.starts, axis=1))
            worth = expected_value(state.users.query[block], catalogue.keys, catalogue.quality, self.sharpness)[:, segments.order]
            value[start : start + len(block)] = np.maximum.reduceat(np.where(shown, worth, 0.0), segments.starts, axis=1)
            eligible[start : start + len(block)] = np.add.reduceat(shown, segments.starts, axis=1)
        return CreatorTable(segments.creator.astype(np.int64), log_mass, value, eligible, units.astype(np.float64))

    def _solve(self, tick: int, table: CreatorTable) -> None:
        """Choose the kept creators and their planned shares (the matching of the module doc)."""
        plan, share = self.plan, self.params.min_exposure_share
        creators = len(table.creators)
        if self.params.keep == "all":
            kept = np.arange(creators)
            room = int(np.floor(1.0 / share + 1e-9)) if share > 0 else creators
            if creators > room:  # infeasible: drop the least valuable creators until ν × kept ≤ 1
                order = np.argsort(-table.value.sum(axis=0), kind="stable")
                kept = np.sort(order[:room])
                dropped = table.creators[np.sort(order[room:])]
                plan.fallbacks.append(
                    {"tick": tick, "reason": f"{creators} creators × {share} > 1: kept the {room} most valuable", "dropped": dropped.tolist()}
                )
            plan.kept, plan.planned_share = table.creators[kept], np.full(len(kept), share)
            return
        solved = self._matching(table, share)
        if solved is None:
            plan.fallbacks.append({"tick": tick, "reason": "the matching found no solution within its node limit: kept the last plan", "dropped": []})
            return
        keep, planned = solved
        plan.kept, plan.planned_share = table.creators[keep], planned[keep]

    def _matching(self, table: CreatorTable, share: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(kept mask, planned share per creator) of the mixed-integer matching, None if HiGHS has no solution."""
        value, units = table.value, table.units
        users, creators = value.shape
        total = float(units.sum())
        width = min(self.params.creators_per_user, creators)
        columns = np.sort(np.argpartition(-value, width - 1, axis=1)[:, :width], axis=1) if width < creators else np.tile(np.arange(creators), (users, 1))
        user = np.repeat(np.arange(users), width)
        creator = columns.ravel()
        pairs = len(user)
        x = np.arange(pairs)
        y = pairs + np.arange(creators)
        rows = np.concatenate([user, users + creator, users + creators + creator, users + np.arange(creators), users + creators + np.arange(creators)])
        cols = np.concatenate([x, x, x, y, y])
        weight = units[user]
        data = np.concatenate([np.ones(pairs), weight, weight, np.full(creators, -total * share), np.full(creators, -total)])
        matrix = sparse.csr_matrix((data, (rows, cols)), shape=(users + 2 * creators, pairs + creators))
        lower = np.concatenate([np.full(users, -np.inf), np.zeros(creators), np.full(creators, -np.inf)])
        upper = np.concatenate([np.ones(users), np.full(creators, np.inf), np.zeros(creators)])
        cost = np.concatenate([-weight * value[user, creator], np.zeros(creators)])
        cap = np.concatenate([np.minimum(1.0, table.eligible[user, creator] / weight), np.ones(creators)])
        result = milp(
            cost,
            constraints=LinearConstraint(matrix, lower, upper),
            integrality=np.concatenate([np.zeros(pairs), np.ones(creators)]),
            bounds=Bounds(0.0, cap),
            options={"node_limit": NODE_LIMIT, "mip_rel_gap": MIP_GAP},
        )
        if result.x is None:
            return None
        keep = result.x[pairs:] > 0.5
        planned = np.bincount(creator, weights=weight * result.x[:pairs], minlength=creators) / total
        return keep, planned

    def _prices(self, table: CreatorTable) -> np.ndarray:
        """λ per kept creator: the fixed point of the module doc, warm-started from the last prices."""
        plan, share = self.plan, self.params.min_exposure_share
        position = np.searchsorted(table.creators, plan.kept)
        present = position < len(table.creators)
        present[present] = table.creators[position[present]] == plan.kept[present]
        price = np.zeros(len(plan.kept))
        if len(plan.price) == len(plan.kept):
            price[:] = plan.price
        if share <= 0 or len(table.log_mass) == 0 or not present.any():
            return np.zeros(len(plan.kept))
        columns = position[present]
        lam = np.zeros(len(table.creators))
        lam[columns] = price[present]
        for _ in range(PRICE_ITERATIONS):
            logits = table.log_mass + lam[None, :]
            first = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
            shares = (self._feed_share(first, table) * table.units[:, None]).sum(axis=0)[columns] / table.units.sum()
            binding = lam[columns] > 0
            short = shares < share * (1 - PRICE_TOLERANCE)
            slack = binding & (shares > share * (1 + PRICE_TOLERANCE))
            if not (short | slack).any():
                break
            lam[columns] = np.clip(lam[columns] + np.log(share / np.maximum(shares, 1e-300)), 0.0, MAX_PRICE)
        price[present] = lam[columns]
        price[~present] = 0.0
        return price

    @staticmethod
    def _feed_share(first: np.ndarray, table: CreatorTable) -> np.ndarray:
        """(n, C) creators' expected shares of each user's k-unit feed drawn without replacement,
        from their first-draw probabilities p: the creator's g eligible goods as g equal goods,
        each in the feed with probability 1 − exp(−k·p/g), so the share tends to p for small p
        and to g/k (every eligible good shown) for large p."""
        goods, units = table.eligible, table.units[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = goods * -np.expm1(-units * first / goods) / units
        return np.where(goods > 0, share, 0.0)

    # --- scores ------------------------------------------------------------------------------

    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None, boosted: bool = True) -> np.ndarray:
        scores = super().scores(state, catalogue, users, out=out)
        if boosted and len(self.plan.kept):
            scores += self.boosts(state.goods.owner[catalogue.rows])[None, :]
        return scores

    def boosts(self, owners: np.ndarray) -> np.ndarray:
        """λ of each good's owner (0 for creators not kept)."""
        plan = self.plan
        position = np.minimum(np.searchsorted(plan.kept, owners), len(plan.kept) - 1)
        return np.where(plan.kept[position] == owners, plan.price[position], 0.0).astype(FLOAT)

    # --- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "solved_tick": plan.solved_tick,
            "sample": plan.sample,
            "kept": plan.kept,
            "planned_share": plan.planned_share,
            "price": plan.price,
            "fallbacks": [dict(entry) for entry in plan.fallbacks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan = ViabilityPlan(
            solved_tick=int(state["solved_tick"]),
            sample=np.asarray(state["sample"], dtype=np.int64),
            kept=np.asarray(state["kept"], dtype=np.int64),
            planned_share=np.asarray(state["planned_share"], dtype=np.float64),
            price=np.asarray(state["price"], dtype=np.float64),
            fallbacks=[dict(entry) for entry in state["fallbacks"]],
        )

    def manifest_notes(self) -> dict[str, Any]:
        """The runtime fallbacks, for manifest.json (empty when there were none)."""
        return {"fallbacks": [dict(entry) for entry in self.plan.fallbacks]} if self.plan.fallbacks else {}

    @classmethod
    def state_bytes(cls, scenario: Scenario, active_users: int, users: int, goods: int) -> int:
        """The plan (sample, kept creators, prices) and each solve's tables: n × creators × 8 bytes,
        four of them (log-sums, values, logits, softmax), with the matching's arrays of n × `creators_per_user` pairs."""
        params = ViableMatchingParams.model_validate(scenario.allocation.params)
        sample = min(params.sample_users, users)
        creators = min(goods, 2 * scenario.population.creators.count)  # creators with live goods, room for entries
        pairs = sample * min(params.creators_per_user, creators)
        return int(sample * 8 + creators * 24 + 4 * sample * creators * 8 + pairs * 8 * 12)


ALLOCATION_RULES.register(ViableMatching)
