"""The allocation rule library: popularity, learned, shapley, and the modifiers that compose with any rule."""

from __future__ import annotations

import copy

import numba
import numpy as np
import pandas as pd
import pytest
from conftest import fresh_state, tiny

import simulator
from simulator.market.catalogue import Catalogue, window_counts
from simulator.market.mediator_kernels import relevance_of_cosines
from simulator.model import advance
from simulator.rules import RuleSet
from simulator.rules.allocation.base import ALLOCATION_RULES
from simulator.rules.allocation.creators import CreatorSegments, compact_rows, pick_in_segments, segment_max
from simulator.rules.allocation.engine import allocate_exposures, make_rule
from simulator.rules.allocation.learned import prior_basis
from simulator.rules.allocation.popularity import record_consumptions
from simulator.rules.allocation.shapley import ShapleyMediator, mediator_probabilities
from simulator.stages.acquisition import acquire
from simulator.stages.allocation import allocate
from simulator.stages.consumption import consume


def allocate_for(scenario, state, seed=1, users=None, rule=None):
    catalogue = Catalogue.of(state)
    if users is None:
        users = np.flatnonzero(state.users.alive)
    counts = state.users.budget[users].astype(np.int64)
    rule = make_rule(scenario) if rule is None else rule
    exposures = allocate_exposures(state, catalogue, users, counts, rule, scenario, np.random.default_rng(seed))
    return users, counts, exposures


def assert_feed_is_valid(exposures, counts, state):
    for row, count in zip(exposures, counts):
        shown = row[row >= 0]
        assert len(shown) == len(set(shown.tolist())), "a good shown twice to one user"
        assert len(shown) <= count
        assert (row[: len(shown)] >= 0).all(), "the feed is not a prefix"
        assert state.goods.live[shown].all()


def creator_shares(exposures, state):
    shown = exposures[exposures >= 0]
    return np.bincount(state.goods.owner[shown], minlength=state.creators_born) / len(shown)


# --- every rule ------------------------------------------------------------------------------


def test_every_rule_of_the_contract_is_implemented():
    for rule in ALLOCATION_RULES.names():
        assert make_rule(tiny({"allocation.rule": rule})) is not None


@pytest.mark.parametrize("rule", ALLOCATION_RULES.names())
def test_every_rule_runs_with_money_conserved(rule):
    model = simulator.AttentionMarket(
        tiny({"allocation.rule": rule, "ticks": 6, "population.users.arrivals_per_tick": 3.0, "population.goods.lifetime": 4})
    )
    while model.running:
        model.step()
    frame = model.metrics
    assert (frame["money_conservation_error"] == 0).all()
    assert (frame["attention_allocated"] <= frame["attention_supplied"]).all()
    assert (frame["consumptions"] > 0).all()


@pytest.mark.parametrize("rule", ALLOCATION_RULES.names())
def test_every_rule_gives_valid_feeds_under_every_modifier(rule):
    scenario = tiny(
        {
            "allocation.rule": rule,
            "allocation.fairness_floor": 0.02,
            "allocation.creator_cap": 0.15,
            "allocation.engagement_weight": 2.0,
            "allocation.block_elements": 2048,
        }
    )
    state = fresh_state(scenario)
    state.goods.penalty[np.flatnonzero(state.goods.live)[::7]] = 0.5
    users, counts, exposures = allocate_for(scenario, state)
    assert_feed_is_valid(exposures, counts, state)
    assert (exposures >= 0).any()


@pytest.mark.parametrize("rule", ["popularity", "learned", "shapley"])
def test_stateful_rules_are_deterministic_given_the_seed(rule):
    overrides = {"allocation.rule": rule, "ticks": 8, "allocation.fairness_floor": 0.01, "allocation.creator_cap": 0.2}
    first = simulator.run(tiny(overrides)).metrics
    second = simulator.run(tiny(overrides)).metrics
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_oracle_gives_higher_user_utility_than_random():
    def utility(rule):
        return np.mean([simulator.run(tiny({"allocation.rule": rule, "seed": seed})).metrics["user_utility_mean"].mean() for seed in (3, 4)])

    assert utility("oracle") > 1.1 * utility("random")


# --- shapley ---------------------------------------------------------------------------------


def test_shapley_mediator_matches_the_hand_computed_case():
    probability, outside = mediator_probabilities(np.array([[0.2, 0.5, 0.9], [0.9, 0.2, 0.5]]))
    np.testing.assert_allclose(probability[0], [0.2 / 3, 0.2 / 3 + 0.3 / 2, 0.2 / 3 + 0.3 / 2 + 0.4], atol=1e-12)
    np.testing.assert_allclose(probability[0], [0.0667, 0.2167, 0.6167], atol=1e-4)
    np.testing.assert_allclose(probability[1], probability[0][[2, 0, 1]], atol=1e-12)  # order of players is irrelevant
    np.testing.assert_allclose(outside, [0.1, 0.1], atol=1e-12)


def test_shapley_mediator_edge_cases():
    probability, outside = mediator_probabilities(np.array([[0.0, 0.6, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(probability[0], [0.0, 0.6, 0.0])  # zero-relevance players take nothing
    np.testing.assert_allclose(outside, [0.4, 1.0, 0.0])
    np.testing.assert_allclose(probability[2], [1 / 3] * 3)  # equal players split equally
    assert (probability.sum(axis=1) + outside == pytest.approx(1.0))


def test_shapley_pick_draws_creators_by_the_mediator_and_shows_their_best_goods():
    # Creators 0, 1, 2 with relevance 0.2, 0.5, 0.9 (best goods at positions 1, 2, 4).
    owners = np.array([0, 0, 1, 2, 2])
    relevance = np.array([0.1, 0.2, 0.5, 0.3, 0.9])
    rows = 40_000
    scores = np.tile(np.log(relevance).astype(np.float32), (rows, 1))
    picked = ShapleyMediator(1.0).select(scores, np.ones(rows, dtype=np.int64), CreatorSegments.from_owners(owners), np.random.default_rng(0))
    assert picked.shape == (rows, 1)
    frequency = np.bincount(picked[:, 0] + 1, minlength=6) / rows  # index 0: the outside option
    expected = {0: 0.1, 2: 0.2 / 3, 3: 0.2 / 3 + 0.15, 5: 0.2 / 3 + 0.15 + 0.4}
    for index, p in expected.items():
        assert abs(frequency[index] - p) < 5 * np.sqrt(p * (1 - p) / rows), (index, frequency[index], p)
    assert frequency[[1, 4]].sum() == 0  # never a creator's second-best good for a single unit


def test_shapley_leaves_attention_unallocated_and_serves_creators_broadly():
    shapley = simulator.run(tiny({"allocation.rule": "shapley", "allocation.ad_slots": 0})).metrics
    softmax = simulator.run(tiny({"allocation.ad_slots": 0})).metrics
    assert (shapley["attention_allocated"] < shapley["attention_supplied"]).all()
    assert (softmax["attention_allocated"] == softmax["attention_supplied"]).all()
    assert shapley["exposure_gini_creators"].mean() < softmax["exposure_gini_creators"].mean()


def numpy_mediator_select(scores, counts, segments, rng):
    """The mediator's selection as numpy computed it before its compiled passes (issue 19)."""
    rows, width = scores.shape[0], int(counts.max(initial=0))
    relevance = np.minimum(np.exp(segment_max(scores, segments).astype(np.float64)), 1.0)
    probability, _ = mediator_probabilities(relevance)
    cumulative = np.cumsum(probability, axis=1)
    draw_row = np.repeat(np.arange(rows), counts)
    target = rng.random(len(draw_row))
    offsets = np.arange(rows, dtype=np.float64)[:, None] * 2.0
    creator = np.searchsorted((cumulative + offsets).ravel(), target + 2.0 * draw_row, side="right") - draw_row * len(segments)
    inside = (creator < len(segments)) & (target < cumulative[draw_row, -1])
    picked = np.full(len(draw_row), -1, dtype=np.int64)
    picked[inside] = pick_in_segments(scores, draw_row[inside], creator[inside], segments, rng=None)
    feed = np.full((rows, width), -1, dtype=np.int64)
    feed[draw_row, np.arange(len(draw_row)) - np.repeat(np.cumsum(counts) - counts, counts)] = picked
    return compact_rows(feed)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_shapley_selection_gives_the_numpy_mediators_bytes(seed):
    """Same draws, same goods, same feeds: ties among creators and goods, masked goods, creators
    with nothing left, rows with no budget, relevance 1 and 0."""
    rng = np.random.default_rng(seed)
    rows, goods = 300, 120
    owners = rng.integers(0, 25, size=goods)
    scores = np.log(np.clip((1 + rng.uniform(-1, 1, (rows, goods))) / 2, 0, 1)).astype(np.float32)
    scores[:, ::5] = np.round(scores[:, ::5], 1)  # ties
    scores[rng.random(scores.shape) < 0.15] = -np.inf  # remembered goods
    scores[:7] = -np.inf
    scores[7:12, :3] = 0.0  # relevance 1
    counts = rng.integers(0, 9, size=rows)
    segments = CreatorSegments.from_owners(owners)
    theirs = scores.copy()
    expected = numpy_mediator_select(theirs, counts, segments, np.random.default_rng(seed + 100))
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):  # serial and parallel passes alike
            numba.set_num_threads(threads)
            ours = scores.copy()
            picked = ShapleyMediator(1.0).select(ours, counts, segments, np.random.default_rng(seed + 100))
            assert picked.dtype == expected.dtype and picked.tobytes() == expected.tobytes()
            assert ours.tobytes() == theirs.tobytes()  # shown goods are masked in the block alike
    finally:
        numba.set_num_threads(before)


def test_shapley_relevance_pass_gives_numpys_bytes():
    cosines = np.random.default_rng(2).uniform(-1.2, 1.2, (257, 301)).astype(np.float32)
    cosines[0, :4] = [-1.0, 1.0, -np.inf, np.inf]
    expected = np.clip((cosines + 1.0) * np.float32(0.5), 0.0, 1.0)
    relevance_of_cosines(cosines)
    assert cosines.tobytes() == expected.tobytes()


def test_pick_in_segments_takes_successive_best_goods():
    owners = np.array([0, 1, 0, 0, 1])
    scores = np.array([[0.3, 0.9, 0.8, 0.1, 0.2]], dtype=np.float32)
    segments = CreatorSegments.from_owners(owners)
    picked = pick_in_segments(scores, np.zeros(5, dtype=np.int64), np.array([0, 0, 1, 0, 0]), segments, rng=None)
    np.testing.assert_array_equal(picked, [2, 0, 1, 3, -1])  # creator 0 has three goods, the fourth draw finds none


# --- popularity ------------------------------------------------------------------------------


def test_popularity_favours_consumed_goods_and_forgets_after_the_window():
    scenario = tiny({"allocation.rule": "popularity", "allocation.popularity_window": 3, "population.goods.lifetime": 50})
    state = fresh_state(scenario)
    state.goods.expires[state.goods.live] = 100
    live = np.flatnonzero(state.goods.live)
    popular = live[:5]
    state.tick = 1
    record_consumptions(state, np.repeat(popular, 40), window=3)
    state.tick = 2
    counts = window_counts(state, 3)
    assert (counts[popular] == 40).all() and counts.sum() == 200
    _, _, exposures = allocate_for(scenario, state)
    # 5 of 60 goods with weight 41 against 1: a first draw is popular with probability 0.79.
    first = np.isin(exposures[:, 0], popular).mean()
    assert first > 0.7, first
    # Three ticks without consumption later, the window is empty and the rule is uniform again.
    for tick in (2, 3, 4):
        state.tick = tick
        record_consumptions(state, np.zeros(0, dtype=np.int64), window=3)
    state.tick = 5
    assert window_counts(state, 3).sum() == 0
    _, _, exposures = allocate_for(scenario, state)
    assert np.isin(exposures[:, 0], popular).mean() < 0.2


def test_popularity_window_ignores_recycled_rows():
    scenario = tiny({"allocation.rule": "popularity"})
    state = fresh_state(scenario)
    row = np.flatnonzero(state.goods.live)[0]
    state.tick = 1
    record_consumptions(state, np.array([row, row, row]), window=10)
    from simulator.market.populations import publish, retire_goods
    from simulator.market.streams import EntityDraws

    retire_goods(state, np.array([row]))
    new = publish(state, np.array([0]), scenario, EntityDraws(0), np.array([5]))
    assert new[0] == row  # the row was recycled for a new good
    state.tick = 2
    assert window_counts(state, 10)[row] == 0


# --- learned ---------------------------------------------------------------------------------


def trained_learned_market(ticks=8, **overrides):
    """(scenario, state, rule): a market run `ticks` ticks under the learned rule, and that rule (its model)."""
    scenario = tiny({"allocation.rule": "learned", "allocation.learned.retrain_every": 2, "ticks": 40, **overrides})
    state = fresh_state(scenario)
    rng = np.random.default_rng(5)
    rules = RuleSet.of(scenario)
    for _ in range(ticks):
        advance(state, scenario, rules, rng)
    return scenario, state, rules.allocation


def test_learned_never_reads_true_interests():
    scenario, state, trained = trained_learned_market(ticks=5)
    scrambled = copy.deepcopy(state)
    scrambled.users.interest[:] = np.random.default_rng(1).standard_normal(scrambled.users.interest.shape).astype(np.float32)
    rules = (trained, copy.deepcopy(trained))
    users = np.flatnonzero(state.users.alive)
    for market, rule in zip((state, scrambled), rules):
        market.tick += 1
        rule.model.trained_tick = -1  # force a refit now
        rule.prepare(market, scenario, np.random.default_rng(2))
    np.testing.assert_array_equal(rules[0].model.user_factor, rules[1].model.user_factor)
    np.testing.assert_array_equal(rules[0].model.item_factor, rules[1].model.item_factor)
    catalogue, catalogue_scrambled = Catalogue.of(state), Catalogue.of(scrambled)
    np.testing.assert_array_equal(rules[0].scores(state, catalogue, users), rules[1].scores(scrambled, catalogue_scrambled, users))


def test_learned_equals_attention_softmax_before_any_data():
    scenario = tiny({"allocation.rule": "learned"})
    state = fresh_state(scenario)
    catalogue = Catalogue.of(state)
    users = np.flatnonzero(state.users.alive)[:50]
    learned = make_rule(scenario).scores(state, catalogue, users)
    softmax = make_rule(tiny()).scores(state, catalogue, users)
    np.testing.assert_allclose(learned, softmax, atol=1e-4)


@pytest.mark.parametrize(("dim", "rank"), [(8, 16), (16, 16), (16, 4)])
def test_prior_basis_preserves_or_projects_inner_products(dim, rank):
    basis = prior_basis(dim, rank)
    assert basis.shape == (dim, rank)
    if rank >= dim:
        np.testing.assert_allclose(basis @ basis.T, np.eye(dim), atol=1e-12)
    else:
        np.testing.assert_allclose(basis.T @ basis, np.eye(rank), atol=1e-12)


def auc(positive, negative):
    both = np.concatenate([positive, negative])
    ranks = pd.Series(both).rank().to_numpy()[: len(positive)]
    return (ranks.sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))


def test_learned_ranks_consumed_goods_above_the_rest_on_random_exposures():
    """Hold-out check free of the rule's own selection: after training, users see goods at random;
    the learned scores must rank what they then consumed above what they passed over."""
    scenario, state, rule = trained_learned_market(ticks=10)
    rng = np.random.default_rng(9)
    state.tick += 1
    rule.prepare(state, scenario, rng)
    assert rule.model.trained_tick >= state.tick - 1 and len(rule.model.user_rows) > 0
    arrivals = acquire(state, RuleSet.of(scenario).bidding, scenario, rng)
    allocation = allocate(state, arrivals, make_rule(tiny({"allocation.rule": "random"})), scenario, rng)
    consumption = consume(state, allocation, scenario, rng)
    scores = rule.scores(state, Catalogue.of(state), allocation.users)
    position = Catalogue.of(state).position_of_row
    shown = allocation.exposures >= 0
    user_index, column = np.nonzero(shown)
    exposure_scores = scores[user_index, position[allocation.exposures[user_index, column]]]
    consumed = consumption.consumed[user_index, column]
    assert consumed.sum() > 30
    assert auc(exposure_scores[consumed], exposure_scores[~consumed]) > 0.6


def test_learned_logs_stay_within_log_ticks_and_refits_follow_retrain_every():
    _, _, rule = trained_learned_market(ticks=9, **{"allocation.learned.log_ticks": 3, "allocation.learned.retrain_every": 4})
    log_ticks = [entry[0] for entry in rule.model.log]
    assert log_ticks == [7, 8, 9]
    assert rule.model.trained_tick == 6  # first fit at tick 2 (the first tick with logs), then every 4 ticks


# --- modifiers -------------------------------------------------------------------------------


def test_fairness_floor_gives_every_creator_its_share():
    floor = 0.03  # 20 creators: 60% of units are fairness units
    scenario = tiny({"allocation.fairness_floor": floor, "population.users.count": 2000, "allocation.temperature": 0.3})
    state = fresh_state(scenario)
    _, counts, exposures = allocate_for(scenario, state)
    with_goods = np.unique(state.goods.owner[state.goods.live])
    shares = creator_shares(exposures, state)[with_goods]
    assert shares.min() > 0.9 * floor, shares.min()
    _, _, plain = allocate_for(tiny({"population.users.count": 2000, "allocation.temperature": 0.3}), state)
    assert creator_shares(plain, state)[with_goods].min() < floor  # the floor is not vacuous here


@pytest.mark.parametrize("rule", ["attention_softmax", "top_k", "popularity", "shapley"])
def test_fairness_floor_lowers_exposure_concentration(rule):
    def gini(floor):
        overrides = {"allocation.rule": rule, "allocation.fairness_floor": floor, "allocation.temperature": 0.5}
        return simulator.run(tiny(overrides)).metrics["exposure_gini_creators"].mean()

    assert gini(0.03) < gini(0.0) - 0.02


@pytest.mark.parametrize("rule", ["attention_softmax", "top_k", "oracle", "popularity", "shapley"])
def test_creator_cap_holds_every_tick(rule):
    cap = 0.08
    # No exits: the metric's shares are over creators alive at the end of the tick.
    overrides = {
        "allocation.rule": rule,
        "allocation.temperature": 0.2,
        "allocation.block_elements": 4096,
        "population.creators.exit.patience": 1000,
    }
    free = simulator.run(tiny(overrides)).metrics
    capped = simulator.run(tiny({**overrides, "allocation.creator_cap": cap})).metrics
    # 20 creators: the top 1% is the single largest creator.
    assert free["top1pct_creator_exposure_share"].max() > cap  # without the cap someone exceeds it
    # At most ⌈cap × content units requested⌉ per creator, over the content exposures allocated.
    requested = capped["attention_supplied"] - capped["ad_impressions"]
    allocated = capped["attention_allocated"] - capped["ad_impressions"]
    assert (capped["top1pct_creator_exposure_share"] <= np.ceil(cap * requested) / allocated + 1e-12).all()
    if rule != "shapley":  # every unit placed: the share is the cap up to rounding
        assert (allocated == requested).all()
        assert (capped["top1pct_creator_exposure_share"] <= cap + 1.0 / allocated).all()


def test_creator_cap_holds_within_one_allocation_and_keeps_feeds_full():
    cap = 0.07
    scenario = tiny({"allocation.creator_cap": cap, "allocation.temperature": 0.1, "allocation.block_elements": 2048})
    state = fresh_state(scenario)
    _, counts, exposures = allocate_for(scenario, state)
    assert_feed_is_valid(exposures, counts, state)
    per_creator = np.bincount(state.goods.owner[exposures[exposures >= 0]])
    assert per_creator.max() <= np.ceil(cap * counts.sum())
    # 20 creators × 7% > 100%: the cap is feasible, so withdrawn units were placed elsewhere.
    assert (exposures >= 0).sum() >= 0.98 * counts.sum()


def test_an_infeasible_creator_cap_fills_what_it_can():
    cap = 0.02  # 20 creators × 2% = 40% of the units at most
    scenario = tiny({"allocation.creator_cap": cap})
    state = fresh_state(scenario)
    _, counts, exposures = allocate_for(scenario, state)
    assert_feed_is_valid(exposures, counts, state)
    per_creator = np.bincount(state.goods.owner[exposures[exposures >= 0]], minlength=20)
    limit = np.ceil(cap * counts.sum())
    assert per_creator.max() <= limit
    assert per_creator.sum() >= 0.9 * limit * len(np.unique(state.goods.owner[state.goods.live]))


def test_engagement_weighting_moves_exposure_toward_engaging_goods():
    scenario = tiny({"allocation.rule": "random"})
    state = fresh_state(scenario)
    live = np.flatnonzero(state.goods.live)
    engaging = live[:6]
    state.goods.exposures[live] = 10
    state.goods.consumptions[live] = 5
    state.goods.purchases[engaging] = 5  # p / (p + r + c) = 0.25 for these, 0 for the rest

    def share(weight):
        _, _, exposures = allocate_for(tiny({"allocation.rule": "random", "allocation.engagement_weight": weight}), state)
        return np.isin(exposures[exposures >= 0], engaging).mean()

    base, weighted = share(0.0), share(8.0)  # weight e^2 ≈ 7.4 against 1
    assert base < 0.15 and weighted > 2.5 * base, (base, weighted)


@pytest.mark.parametrize("rule", ["attention_softmax", "learned", "shapley"])
def test_clickbait_penalty_lowers_allocation_weight(rule):
    scenario = tiny({"allocation.rule": rule, "population.users.count": 2000})
    state = fresh_state(scenario)
    live = np.flatnonzero(state.goods.live)
    banned, halved = live[:10], live[10:30]
    _, _, before = allocate_for(scenario, state)
    state.goods.penalty[banned] = 0.0
    state.goods.penalty[halved] = 0.5
    _, _, after = allocate_for(scenario, state)
    assert not np.isin(after, banned).any()
    # First feed places, where sampling without replacement has not yet flattened the weights.
    assert np.isin(after[:, 0], halved).sum() < 0.8 * np.isin(before[:, 0], halved).sum()


@pytest.mark.parametrize("block_elements", [1 << 22, 40])
def test_batched_ridge_solve_matches_a_direct_solve_per_row(block_elements, monkeypatch):
    import scipy.sparse as sparse

    from simulator.rules.allocation import learned
    from simulator.rules.allocation.learned import _solve_side

    monkeypatch.setattr(learned, "SOLVE_BLOCK_ELEMENTS", block_elements)  # 40: two rows per batch

    rng = np.random.default_rng(0)
    rows, columns, width, penalty = 7, 9, 4, 2.5
    counts = rng.integers(0, 3, size=(rows, columns)).astype(np.float64)
    counts[0] = 0  # a row without data keeps its prior
    consumed = np.minimum(counts, rng.integers(0, 3, size=(rows, columns)))
    features = rng.standard_normal((columns, width))
    offset = rng.random(columns)
    prior = rng.standard_normal((rows, width))
    matrix = sparse.csr_matrix(counts)
    residual = (consumed - counts * offset[None, :])[counts > 0]  # in the order of the stored entries
    solved = _solve_side(matrix, residual, features, prior, penalty)
    for row in range(rows):
        lhs = features.T @ (counts[row, :, None] * features) + penalty * np.eye(width)
        rhs = features.T @ (consumed[row] - counts[row] * offset) + penalty * prior[row]
        np.testing.assert_allclose(solved[row], np.linalg.solve(lhs, rhs), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(solved[0], prior[0], atol=1e-6)


@pytest.mark.parametrize("rule", ["popularity", "learned"])
def test_rule_state_survives_a_checkpoint(rule, tmp_path):
    """The popularity window and the learned model's logs and factors live in the market state,
    so a run resumed from a checkpoint continues exactly as the uninterrupted one."""
    from simulator.runs.checkpoint import load_checkpoint, save_checkpoint

    scenario = tiny({"allocation.rule": rule, "ticks": 8, "allocation.learned.retrain_every": 3, "allocation.creator_cap": 0.2})
    whole = simulator.AttentionMarket(scenario)
    while whole.running:
        whole.step()
    first = simulator.AttentionMarket(scenario)
    for _ in range(4):
        first.step()
    save_checkpoint(first, tmp_path / "checkpoint.pkl")
    resumed = load_checkpoint(tmp_path / "checkpoint.pkl")
    while resumed.running:
        resumed.step()
    pd.testing.assert_frame_equal(resumed.metrics, whole.metrics, check_exact=True)


def test_learned_waits_for_logged_exposures_before_fitting():
    scenario = tiny({"allocation.rule": "learned", "population.goods.initial": 0, "population.creators.publish_rate": 0.0})
    model = simulator.AttentionMarket(scenario)
    for _ in range(3):
        model.step()  # an empty catalogue: nothing is shown, nothing logged
    assert model.rule.model.trained_tick == -1
    assert (model.metrics["money_conservation_error"] == 0).all()
    # Logs holding only empty ticks do not trigger a fit either.
    state = fresh_state(tiny({"allocation.rule": "learned"}))
    rule = make_rule(tiny({"allocation.rule": "learned"}))
    empty = np.zeros(0, dtype=np.int64)
    rule.model.log.append((0, empty, empty, np.zeros(0, dtype=bool)))
    rule.prepare(state, scenario, np.random.default_rng(0))
    assert rule.model.trained_tick == -1
