"""The allocator: temperature limits, masks, budgets, exact sampling, top-k order, blocking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import fresh_state, tiny

from simulator.market.catalogue import Catalogue
from simulator.rules.allocation.base import ALLOCATION_RULES
from simulator.rules.allocation.engine import allocate_exposures, make_rule
from simulator.rules.allocation.selection import sample_positions, top_k_positions


def exposures_for(scenario, state, seed=1, users=None, counts=None, rule=None):
    catalogue = Catalogue.of(state)
    if users is None:
        users = np.flatnonzero(state.users.alive)
    if counts is None:
        counts = state.users.budget[users].astype(np.int64)
    rule = make_rule(scenario) if rule is None else rule
    return users, counts, allocate_exposures(state, catalogue, users, counts, rule, scenario, np.random.default_rng(seed))


def assert_distinct_within_budget(exposures, counts):
    for row, count in zip(exposures, counts):
        shown = row[row >= 0]
        assert len(shown) == len(set(shown.tolist())), "a good shown twice to one user"
        assert len(shown) <= count
        # -1 padding only at the end: the feed is a prefix.
        assert (row[: len(shown)] >= 0).all()


# --- temperature limits ----------------------------------------------------------------------


def test_near_zero_temperature_only_ever_shows_the_best_goods_in_order():
    """At T = 1e-6 whatever softmax shows is a prefix of top_k's feed on the same state.

    (At 1e-6 even goods whose cosines differ by ~1e-6 are ordered deterministically; at 1e-4
    near-ties would still be legitimately random.)"""
    soft_scenario = tiny({"allocation.temperature": 1e-6})
    top_scenario = tiny({"allocation.temperature": 1e-6, "allocation.rule": "top_k"})
    state = fresh_state(soft_scenario)
    _, counts, soft = exposures_for(soft_scenario, state)
    _, _, top = exposures_for(top_scenario, state)
    assert (top >= 0).sum() == counts.sum()  # the catalogue (60) covers every budget (<= 32)
    for soft_row, top_row in zip(soft, top):
        shown = soft_row[soft_row >= 0]
        assert len(shown) >= 1
        np.testing.assert_array_equal(shown, top_row[: len(shown)])


def test_zero_temperature_limit_equals_top_k():
    soft_scenario = tiny({"allocation.temperature": 1e-6})
    top_scenario = tiny({"allocation.temperature": 1e-6, "allocation.rule": "top_k"})
    state = fresh_state(soft_scenario)
    _, _, soft = exposures_for(soft_scenario, state)
    _, _, top = exposures_for(top_scenario, state)
    np.testing.assert_array_equal(soft, top)


def exposure_chi_square(temperature: float) -> tuple[float, int]:
    """Chi-square of per-good exposure counts against uniform, over 300 users × 4 draws."""
    scenario = tiny({"allocation.temperature": temperature})
    state = fresh_state(scenario)
    catalogue_size = int(state.goods.live.sum())
    observed = np.zeros(state.goods.capacity())
    total = 0
    for seed in range(4):
        _, counts, exposures = exposures_for(scenario, state, seed=seed)
        shown = exposures[exposures >= 0]
        assert len(shown) == counts.sum()
        observed += np.bincount(shown, minlength=len(observed))
        total += len(shown)
    observed = observed[state.goods.live]
    expected = total / catalogue_size  # no masks yet: every good equally likely per draw
    return float(((observed - expected) ** 2 / expected).sum()), catalogue_size - 1


def test_very_high_temperature_gives_near_uniform_exposure():
    chi2, dof = exposure_chi_square(1e4)
    # Sampling without replacement is under-dispersed vs multinomial, so dof + 5·sqrt(2·dof) is generous.
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2


def test_unit_temperature_is_far_from_uniform():
    """The uniformity check above is not vacuous: at T = 1 (and below) it fails."""
    for temperature in (1.0, 0.3):
        chi2, dof = exposure_chi_square(temperature)
        assert chi2 > 1.5 * (dof + 5 * np.sqrt(2 * dof)), (temperature, chi2)


# --- masks and budgets -----------------------------------------------------------------------


def remember_goods(state, rng, per_user=10):
    """Write `per_user` live goods into every user's consumption history (by uid)."""
    live = np.flatnonzero(state.goods.live)
    remembered = {}
    for user in np.flatnonzero(state.users.alive):
        rows = rng.choice(live, size=per_user, replace=False)
        state.users.history[user, :per_user] = state.goods.uid[rows]
        remembered[int(user)] = set(rows.tolist())
    return remembered


@pytest.mark.parametrize("rule", ["attention_softmax", "top_k", "random", "oracle"])
def test_recently_consumed_goods_are_never_shown(rule):
    scenario = tiny({"allocation.rule": rule})
    state = fresh_state(scenario)
    remembered = remember_goods(state, np.random.default_rng(5))
    users, counts, exposures = exposures_for(scenario, state)
    for user, row in zip(users, exposures):
        assert not (set(row[row >= 0].tolist()) & remembered[int(user)])
    # 60 goods, 10 masked, budgets <= 32: the rest still fills every budget.
    assert (exposures >= 0).sum() == counts.sum()
    assert_distinct_within_budget(exposures, counts)


def test_masking_can_be_switched_off_and_then_best_goods_reappear():
    """Guards the mask test: with mask_consumed off, top_k shows remembered best goods again."""
    scenario = tiny({"allocation.rule": "top_k", "allocation.mask_consumed": False})
    state = fresh_state(scenario)
    users, counts, before = exposures_for(scenario, state)
    state.users.history[users, 0] = state.goods.uid[before[:, 0]]  # each user's top good
    _, _, after = exposures_for(scenario, state)
    np.testing.assert_array_equal(after, before)
    masked = tiny({"allocation.rule": "top_k"})
    _, _, masked_after = exposures_for(masked, state)
    assert not (masked_after == before[:, :1]).any()


def test_goods_that_left_the_catalogue_are_ignored_by_the_mask():
    scenario = tiny({"allocation.rule": "top_k"})
    state = fresh_state(scenario)
    gone = np.flatnonzero(state.goods.live)[:5]
    state.users.history[:, :5] = state.goods.uid[gone]
    state.goods.live[gone] = False
    state.uids.row_of[state.goods.uid[gone]] = -1
    users, counts, exposures = exposures_for(scenario, state)
    assert not np.isin(exposures, gone).any()
    assert (exposures >= 0).sum() == counts.sum()


@pytest.mark.parametrize("rule", ["attention_softmax", "top_k", "random", "oracle"])
def test_exposures_are_distinct_and_fill_the_budget(rule):
    scenario = tiny({"allocation.rule": rule})
    state = fresh_state(scenario)
    users, counts, exposures = exposures_for(scenario, state)
    assert exposures.shape == (len(users), counts.max())
    assert_distinct_within_budget(exposures, counts)
    assert np.array_equal((exposures >= 0).sum(axis=1), counts)
    assert state.goods.live[exposures[exposures >= 0]].all()


def test_small_catalogue_shows_everything_once():
    scenario = tiny({"population.goods.initial": 5, "population.creators.publish_rate": 0.0})
    state = fresh_state(scenario)
    users, counts, exposures = exposures_for(scenario, state)
    assert_distinct_within_budget(exposures, counts)
    assert np.array_equal((exposures >= 0).sum(axis=1), np.minimum(counts, 5))


def test_zero_budgets_get_nothing():
    scenario = tiny()
    state = fresh_state(scenario)
    users = np.flatnonzero(state.users.alive)[:10]
    counts = np.array([0, 3] * 5)
    _, _, exposures = exposures_for(scenario, state, users=users, counts=counts)
    assert (exposures[counts == 0] == -1).all()
    assert ((exposures[counts == 3] >= 0).sum(axis=1) == 3).all()


# --- exact sampling --------------------------------------------------------------------------


def successive_sampling_probabilities(weights, k):
    """P(ordered sequence) for drawing k without replacement, each draw ∝ remaining weight."""
    probabilities = {}
    for sequence in itertools.permutations(range(len(weights)), k):
        p, left = 1.0, float(np.sum(weights))
        for item in sequence:
            p *= weights[item] / left
            left -= weights[item]
        probabilities[sequence] = p
    return probabilities


def sampled_frequencies(weights, k, rows, seed):
    scores = np.tile(np.log(np.asarray(weights, dtype=np.float64)).astype(np.float32), (rows, 1))
    picked = sample_positions(scores, np.full(rows, k), np.random.default_rng(seed))
    assert picked.shape == (rows, k) and (picked >= 0).all()
    sequences, counts = np.unique(picked, axis=0, return_counts=True)
    return {tuple(s.tolist()): c / rows for s, c in zip(sequences, counts)}


def assert_matches_successive_sampling(weights, k, rows=60_000, seed=11):
    exact = successive_sampling_probabilities(np.asarray(weights, dtype=np.float64), k)
    observed = sampled_frequencies(weights, k, rows, seed)
    assert set(observed) <= set(exact), "a sequence with a repeated or impossible good"
    for sequence, p in exact.items():
        tolerance = 5 * np.sqrt(p * (1 - p) / rows) + 1e-4
        assert abs(observed.get(sequence, 0.0) - p) < tolerance, (sequence, observed.get(sequence, 0.0), p)


def test_sampling_matches_successive_sampling_without_replacement():
    assert_matches_successive_sampling([0.4, 0.3, 0.2, 0.1], k=2)


def test_sampling_full_orderings_match_successive_sampling():
    assert_matches_successive_sampling([3.0, 2.5, 2.0, 1.5, 1.0], k=3)


@pytest.mark.parametrize(("weights", "k"), [([0.9, 0.05, 0.05], 2), ([5.0, 3.0, 1.5, 0.5], 3)])
def test_sampling_with_skewed_weights_matches_successive_sampling(weights, k):
    assert_matches_successive_sampling(weights, k)


def test_sampling_across_several_rounds_of_lanes():
    """70 columns fill the sampler's 32 lanes twice and part of a third round (lanes hold 2–3
    columns each); with masked goods, first and second picks follow their laws."""
    columns = 70
    weights = np.geomspace(1.0, 0.05, columns)
    weights[[3, 11]] = 0.0  # masked goods
    p = weights / weights.sum()
    rows = 40_000
    scores = np.tile(np.log(np.where(weights > 0, weights, 1.0)).astype(np.float32), (rows, 1))
    scores[:, weights == 0] = -np.inf
    picked = sample_positions(scores, np.full(rows, 2), np.random.default_rng(3))
    assert not np.isin(picked, [3, 11]).any()
    assert (picked[:, 0] != picked[:, 1]).all()
    first = np.bincount(picked[:, 0], minlength=columns) / rows
    second_exact = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(columns) if i != j) for j in range(columns)])
    second = np.bincount(picked[:, 1], minlength=columns) / rows
    for observed, exact in ((first, p), (second, second_exact)):
        tolerance = 5 * np.sqrt(exact * (1 - exact) / rows) + 1e-4
        assert (np.abs(observed - exact) < tolerance).all(), np.abs(observed - exact).max()


def test_sampling_never_picks_masked_columns_and_caps_at_eligible_count():
    scores = np.zeros((3, 6), dtype=np.float32)
    scores[0, [1, 4]] = -np.inf
    scores[1, :] = -np.inf
    scores[2, [0, 1, 2, 3]] = -np.inf
    picked = sample_positions(scores, np.array([6, 2, 5]), np.random.default_rng(0))
    assert sorted(picked[0][picked[0] >= 0].tolist()) == [0, 2, 3, 5]
    assert (picked[1] == -1).all()
    assert sorted(picked[2][picked[2] >= 0].tolist()) == [4, 5]


def test_sampling_after_underflow_follows_the_remaining_goods_relative_weights():
    """Goods 200 nats below the best have weight 0 next to it (float32); once the best is shown,
    the sampler rescales to the best remaining, so the next draw is 2:1 between exp(0) and exp(-ln 2)."""
    rows = 30_000
    scores = np.tile(np.array([0.0, -200.0, -200.0 - np.log(2.0), -np.inf], dtype=np.float32), (rows, 1))
    picked = sample_positions(scores, np.full(rows, 3), np.random.default_rng(5))
    assert (picked[:, 0] == 0).all()
    assert sorted(set(picked[:, 1].tolist())) == [1, 2]
    share = np.mean(picked[:, 1] == 1)
    assert abs(share - 2 / 3) < 5 * np.sqrt(2 / 9 / rows)
    assert (np.sort(picked, axis=1) == [0, 1, 2]).all()


def test_sampling_orders_goods_separated_by_huge_gaps_best_first():
    """Scores 1e6 apart: every draw must take the best remaining good, across many lanes."""
    rng = np.random.default_rng(8)
    scores = (rng.permutation(300)[None, :] * 1e6).astype(np.float32).repeat(4, axis=0)
    scores[:, ::7] = -np.inf
    picked = sample_positions(scores, np.array([0, 1, 40, 300]), rng)
    eligible = np.isfinite(scores[0])
    best_first = np.argsort(-np.where(eligible, scores[0], -np.inf), kind="stable")[: eligible.sum()]
    assert (picked[0] == -1).all()
    assert picked[1, 0] == best_first[0]
    np.testing.assert_array_equal(picked[2, :40], best_first[:40])
    np.testing.assert_array_equal(picked[3, : eligible.sum()], best_first)
    assert (picked[3, eligible.sum() :] == -1).all()


def test_sampler_weights_match_exp_to_float32_precision():
    """The kernel's vectorized exp: relative error under 1e-6 against numpy's over its whole range."""
    from simulator.market.kernels import EXP_FLOOR, _relative_weights

    x = np.linspace(float(EXP_FLOOR) + 1e-3, 0.0, 200_001).astype(np.float32)
    scores = np.concatenate([x, [-np.inf, float(EXP_FLOOR) - 1.0]]).astype(np.float32)[None, :]
    weights = np.empty(scores.shape[1], dtype=np.float32)
    bits, lanes = np.empty(scores.shape[1], dtype=np.int32), np.empty(32)
    positive = _relative_weights(scores, 0, np.float32(0.0), weights, bits, lanes)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(weights[: len(x)] - exact) / exact) < 1e-6
    assert positive == len(x) and weights[-2] == 0.0 and weights[-1] == 0.0


# --- top_k_positions -------------------------------------------------------------------------


def test_top_k_is_best_first():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 30)).astype(np.float32)
    counts = rng.integers(0, 12, size=50)
    picked = top_k_positions(scores.copy(), counts)
    for row, count, score in zip(picked, counts, scores):
        expected = np.argsort(-score, kind="stable")[:count]
        np.testing.assert_array_equal(row[:count], expected)
        assert (row[count:] == -1).all()


def test_top_k_ties_go_to_the_lower_index():
    scores = np.array([[1.0, 2.0, 2.0, 1.0, 2.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(top_k_positions(scores, np.array([4])), [[1, 2, 4, 0]])
    np.testing.assert_array_equal(top_k_positions(np.zeros((1, 8), dtype=np.float32), np.array([3])), [[0, 1, 2]])


def test_top_k_ties_straddling_the_cut_go_to_the_lower_index():
    scores = np.zeros((1, 1000), dtype=np.float32)
    np.testing.assert_array_equal(top_k_positions(scores, np.array([5])), [[0, 1, 2, 3, 4]])


def test_top_k_skips_masked_scores():
    scores = np.array([[3.0, -np.inf, 1.0, -np.inf], [-np.inf] * 4], dtype=np.float32)
    picked = top_k_positions(scores, np.array([4, 2]))
    np.testing.assert_array_equal(picked, [[0, 2, -1, -1], [-1, -1, -1, -1]])


# --- blocks ----------------------------------------------------------------------------------


class RecordingRule:
    """Wraps a rule and records the shape of every score matrix it builds."""

    def __init__(self, rule):
        self.rule = rule
        self.shapes: list[tuple[int, int]] = []

    def __getattr__(self, name):  # everything but `scores` is the wrapped rule's
        return getattr(self.rule, name)

    def scores(self, state, catalogue, users, out=None):
        scores = self.rule.scores(state, catalogue, users, out=out)
        assert out is None or scores is out, "a rule handed a buffer must fill it"
        self.shapes.append(scores.shape)
        return scores


@pytest.mark.parametrize("rule", ["attention_softmax", "top_k", "random", "oracle"])
def test_scores_are_built_in_blocks_within_block_elements(rule):
    scenario = tiny({"allocation.rule": rule, "allocation.block_elements": 1024})
    state = fresh_state(scenario)
    recording = RecordingRule(make_rule(scenario))
    users, counts, exposures = exposures_for(scenario, state, rule=recording)
    assert len(recording.shapes) > 1
    assert all(rows * columns <= 1024 for rows, columns in recording.shapes), recording.shapes
    assert sum(rows for rows, _ in recording.shapes) == len(users)
    assert_distinct_within_budget(exposures, counts)
    assert np.array_equal((exposures >= 0).sum(axis=1), counts)


def test_blocking_does_not_change_deterministic_results():
    small = tiny({"allocation.rule": "top_k", "allocation.block_elements": 1024})
    large = tiny({"allocation.rule": "top_k"})
    state = fresh_state(small)
    _, _, blocked = exposures_for(small, state)
    _, _, whole = exposures_for(large, state)
    np.testing.assert_array_equal(blocked, whole)


def test_a_catalogue_larger_than_the_block_limit_gets_one_user_blocks():
    scenario = tiny({"population.goods.initial": 1500, "allocation.block_elements": 1024})
    state = fresh_state(scenario)
    recording = RecordingRule(make_rule(scenario))
    users = np.flatnonzero(state.users.alive)[:20]
    exposures_for(scenario, state, users=users, rule=recording)
    # The documented floor: a block is at least one user's whole catalogue row.
    assert all(rows == 1 and columns > 1024 for rows, columns in recording.shapes), recording.shapes


@pytest.mark.parametrize("rule_name", ALLOCATION_RULES.names())
def test_every_rule_fills_a_given_score_buffer_with_its_scores(rule_name):
    """The allocator reuses one buffer per tick: `scores(..., out=buffer)` must equal the fresh scores."""
    scenario = tiny({"allocation.rule": rule_name})
    state = fresh_state(scenario)
    rule = make_rule(scenario)
    rule.prepare(state, scenario, np.random.default_rng(0))
    catalogue = Catalogue.of(state)
    users = np.arange(40)
    fresh = rule.scores(state, catalogue, users)
    buffer = np.full(fresh.shape, np.nan, dtype=np.float32)
    filled = rule.scores(state, catalogue, users, out=buffer)
    assert filled is buffer
    np.testing.assert_array_equal(filled, fresh)
