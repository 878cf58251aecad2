"""The candidate mode (`allocation.candidates`): the IVF index, candidate sets, faithfulness to
exact allocation, the automatic choice, money and reproducibility, and the benchmark scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny

from simulator.market.catalogue import Catalogue
from simulator.market.populations import initial_state
from simulator.model import AttentionMarket
from simulator.rules.allocation.candidates import index_for
from simulator.rules.allocation.engine import (
    allocate_exposures,
    candidate_scores,
    make_rule,
    mask_consumed,
    resolve_mode,
)
from simulator.rules.allocation.modifiers import score_adjustment
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.scenario.schema import with_overrides

ROOT = Path(__file__).resolve().parents[1]


def market(users=600, goods=1500, creators=150, dim=8, ticks=3, **overrides):
    """A scenario with a catalogue large enough for the index to matter, and its market after `ticks` ticks."""
    scenario = tiny(
        {
            "population.users.count": users,
            "population.goods.initial": goods,
            "population.creators.count": creators,
            "embedding_dim": dim,
            "allocation.candidates.mode": "ivf",
            "allocation.candidates.per_user": 200,
            **overrides,
        }
    )
    model = AttentionMarket(scenario)
    for _ in range(ticks):
        model.step()
    return scenario, model


def view_of(scenario, state, seed=0):
    catalogue = Catalogue.of(state)
    return catalogue, index_for(state, catalogue, scenario, np.random.default_rng(seed)).view(state, catalogue, scenario)


def test_index_holds_every_live_good_in_exactly_one_list():
    scenario, model = market(ticks=4)  # goods have expired and been published since the first fit
    state = model.market
    catalogue, view = view_of(scenario, state)
    index = state.candidates
    assert model.allocation_mode == "ivf" and index.fitted_tick == 1
    # CSR over catalogue positions: every live good once, lists consistent with list_of_position.
    np.testing.assert_array_equal(np.sort(view.members), np.arange(len(catalogue.rows)))
    owner_list = np.repeat(np.arange(view.lists + 1), view.sizes())
    np.testing.assert_array_equal(view.list_of_position[view.members], owner_list)
    # The persistent index covers the live rows only, with their current uids.
    live = state.goods.live
    assert (index.list_of_row[: len(live)][live] >= 0).all()
    assert (index.list_of_row[: len(live)][~live] == -1).all()
    np.testing.assert_array_equal(index.uid_of_row[catalogue.rows], state.goods.uid[catalogue.rows])
    assert view.sizes()[: view.lists].max() <= scenario.allocation.candidates.per_user // 2 + 50  # large lists are cut


def test_candidate_sets_are_distinct_live_and_include_fresh_goods():
    scenario, model = market(ticks=2)
    state = model.market
    catalogue, view = view_of(scenario, state)
    users = np.flatnonzero(state.users.alive)
    positions, weights = view.candidates(state.users.query[users], np.random.default_rng(3))
    assert positions.shape[0] == len(users) and positions.shape[1] < len(catalogue.rows)
    uids = state.goods.uid[catalogue.rows]
    fresh = set(np.argsort(-uids)[: scenario.allocation.candidates.fresh].tolist())
    sampled = 0
    for row, weight in zip(positions, weights):
        kept = row[row >= 0]
        assert len(kept) == len(set(kept.tolist())), "a candidate listed twice"
        assert fresh <= set(kept.tolist())
        sampled += np.count_nonzero(weight > 0)
        assert (weight[row < 0] == 0).all()
    assert sampled > 0  # the rest of the catalogue is represented
    assert state.goods.live[catalogue.rows[positions[positions >= 0]]].all()


def expected_per_creator(state, scenario, catalogue, users, counts, rule, mode):
    """Σ_users count × softmax probability, per creator (no sampling noise)."""
    adjustment = score_adjustment(state, catalogue.rows, scenario)
    per_position = np.zeros(len(catalogue.rows))

    def add(scores, rows, positions):
        top = scores.max(axis=1, keepdims=True)
        weights = np.exp((scores - np.where(np.isfinite(top), top, 0)).astype(np.float64))
        probability = weights / weights.sum(axis=1, keepdims=True) * counts[rows, None]
        valid = positions >= 0
        per_position[:] += np.bincount(positions[valid], weights=probability[valid], minlength=len(per_position))

    if mode == "exact":
        scores = rule.scores(state, catalogue, users)
        mask_consumed(scores, state, catalogue, users)
        add(scores, np.arange(len(users)), np.broadcast_to(np.arange(len(catalogue.rows)), scores.shape))
    else:
        for block, scores in candidate_scores(state, catalogue, users, rule, scenario, np.random.default_rng(5), adjustment):
            add(scores, block.rows, block.matrix())
    per_creator = np.bincount(state.goods.owner[catalogue.rows], weights=per_position, minlength=state.creators.capacity())
    return per_creator / per_creator.sum()


@pytest.mark.parametrize("rule", ["attention_softmax", "oracle", "learned"])
def test_candidate_mode_matches_exact_per_creator(rule):
    scenario, model = market(users=1500, goods=3000, creators=300, dim=16, ticks=2, **{"allocation.rule": rule})
    state = model.market
    catalogue = Catalogue.of(state)
    users = np.flatnonzero(state.users.alive)
    counts = state.users.budget[users].astype(np.int64)
    rule_ = make_rule(scenario)
    exact = expected_per_creator(state, scenario, catalogue, users, counts, rule_, "exact")
    candidates = expected_per_creator(state, scenario, catalogue, users, counts, rule_, "ivf")
    assert 0.5 * np.abs(exact - candidates).sum() < 0.1
    # Without the weighted sample of the rest, the candidates alone would move far more exposure.
    state.candidates = None
    truncated = with_overrides(scenario, {"allocation.candidates.random": 0})
    without = expected_per_creator(state, truncated, catalogue, users, counts, rule_, "ivf")
    assert 0.5 * np.abs(exact - without).sum() > 0.5 * np.abs(exact - candidates).sum()


def test_sampled_exposures_are_distinct_live_and_within_budget():
    scenario, model = market(ticks=1)
    state = model.market
    catalogue = Catalogue.of(state)
    users = np.flatnonzero(state.users.alive)
    counts = state.users.budget[users].astype(np.int64)
    exposures = allocate_exposures(state, catalogue, users, counts, make_rule(scenario), scenario, np.random.default_rng(1))
    for row, count in zip(exposures, counts):
        shown = row[row >= 0]
        assert len(shown) == len(set(shown.tolist())) and len(shown) <= count
    assert state.goods.live[exposures[exposures >= 0]].all()
    assert (exposures >= 0).sum() == counts.sum()  # the catalogue (1 500) covers every budget


def test_consumed_goods_are_masked_among_the_candidates():
    scenario, model = market(goods=400, creators=40, ticks=4, **{"allocation.candidates.per_user": 60, "allocation.candidates.random": 200})
    state = model.market
    catalogue, view = view_of(scenario, state)
    users = np.flatnonzero(state.users.alive)
    remembered = state.uids.rows(state.users.history[users])
    assert (remembered >= 0).sum() > len(users)  # users remember several consumptions each
    # Every remembered good that is a candidate (shared or drawn) is found and masked.
    adjustment = score_adjustment(state, catalogue.rows, scenario)
    masked = 0
    for block, scores in candidate_scores(state, catalogue, users, make_rule(scenario), scenario, np.random.default_rng(2), adjustment):
        matrix = block.matrix()
        held = remembered[block.rows]
        candidate_rows = np.where(matrix >= 0, catalogue.rows[np.maximum(matrix, 0)], -2)
        is_remembered = (candidate_rows[:, :, None] == held[:, None, :]).any(axis=2)
        assert np.isneginf(scores[is_remembered]).all()
        masked += int(is_remembered.sum())
    assert masked > 0  # some candidates were remembered ones
    exposures = allocate_exposures(state, catalogue, users, state.users.budget[users].astype(np.int64), make_rule(scenario), scenario, np.random.default_rng(1))
    assert not (exposures[:, :, None] == np.where(remembered >= 0, remembered, -2)[:, None, :]).any()


def tail_indices(view, tail, positions):
    """Tail index of each catalogue position (any shape, -1 for none); -1 outside the tail: the
    numpy reference of the compiled tail draws' lookup."""
    safe = np.maximum(positions, 0)
    lists = view.list_of_position[safe]
    rank = tail.rank_of_list[lists]
    index = tail.start[np.maximum(rank, 0)] + view.place_of_position[safe] - view.indptr[lists]
    return np.where((positions >= 0) & (rank >= 0), index, -1)


def test_defect_8_stratum_representatives_are_drawn_among_eligible_goods():
    """A drawn representative is never a good the user may not be shown, and each draw weighs the
    eligible goods of its stratum: per user, the weights sum to the tail's eligible goods."""
    scenario, model = market(goods=400, creators=40, ticks=4, **{"allocation.candidates.per_user": 60, "allocation.candidates.random": 200})
    state = model.market
    catalogue, view = view_of(scenario, state)
    users = np.flatnonzero(state.users.alive)
    remembered = state.uids.rows(state.users.history[users])
    positions = np.where(remembered >= 0, catalogue.position_of_row[np.maximum(remembered, 0)], -1)
    checked = 0
    for block in view.blocks(state.users.query[users], np.random.default_rng(2), scenario.allocation.block_elements, positions):
        own = block.own
        held = positions[block.rows]
        assert not ((own[:, :, None] == held[:, None, :]) & (own[:, :, None] >= 0)).any()
        for k, (low, high, _) in enumerate(block.runs()):
            tail = block.tails[k]
            for row in range(low, high):
                barred = np.unique(held[row][held[row] >= 0])
                in_tail = int((tail_indices(view, tail, barred) >= 0).sum())
                weights = np.exp(block.own_log_weight[row][own[row] >= 0].astype(np.float64)).sum()
                assert weights == pytest.approx(tail.size - in_tail, rel=1e-5)
                checked += in_tail > 0
    assert checked > 0  # some users had remembered goods in their tail


def numpy_draw_tail(view, tail, rows, rng, excluded):
    """The numpy stratified draw the compiled pass replaced (market/candidate_kernels.py), kept as its reference."""
    size = np.diff(tail.bounds)
    strata = len(size)
    eligible = np.broadcast_to(size, (rows, strata)).copy()
    skips = np.sort(tail_indices(view, tail, excluded), axis=1)
    skips[:, 1:][skips[:, 1:] == skips[:, :-1]] = -1
    skips.sort(axis=1)
    stratum_of = np.clip(((np.maximum(skips, 0) + 1) * strata + tail.size - 1) // tail.size - 1, 0, strata - 1)
    row, col = np.nonzero(skips >= 0)
    np.subtract.at(eligible, (row, stratum_of[row, col]), 1)
    index = (rng.random((rows, strata)) * eligible).astype(np.int64)
    np.minimum(index, np.maximum(eligible - 1, 0), out=index)
    index += tail.bounds[:-1][None, :]
    users = np.arange(rows)
    for column in range(skips.shape[1]):
        skip, stratum = skips[:, column], stratum_of[:, column]
        has = skip >= 0
        current = index[users, stratum]
        index[users[has], stratum[has]] += current[has] >= skip[has]
    drawn = eligible > 0
    positions = np.where(drawn, view.positions_of(tail.lists)[np.where(drawn, index, 0)], -1)
    return positions, np.where(drawn, np.log(np.maximum(eligible, 1)), 0.0).astype(np.float32)


def test_the_compiled_tail_draws_are_the_numpy_draws():
    """Same positions and weights as the numpy version, with exclusions that repeat, fall outside
    the tail, fill whole strata, or are absent."""
    scenario, model = market(goods=400, creators=40, ticks=2, **{"allocation.candidates.per_user": 60, "allocation.candidates.random": 50})
    catalogue, view = view_of(scenario, model.market)
    rng = np.random.default_rng(1)
    for profile in rng.normal(size=(6, scenario.embedding_dim)):
        _, tail = view.plan(profile.astype(np.float32))
        rows = 300
        excluded = rng.integers(-1, view.goods, size=(rows, 40))
        excluded[:, 20:] = excluded[:, :20]  # every good remembered twice
        whole = view.positions_of(tail.lists)[tail.bounds[3] : tail.bounds[4]]
        excluded[:5, : len(whole)] = whole[: min(len(whole), 40)]  # stratum 3 all excluded for some users
        excluded[5:10] = -1
        seed = int(rng.integers(2**32))
        got = view.draw_tail(tail, rows, np.random.default_rng(seed), excluded)
        expected = numpy_draw_tail(view, tail, rows, np.random.default_rng(seed), excluded)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def numpy_columns_of(view, block, positions):
    """The numpy `columns_of` the compiled pass replaced (market/candidate_kernels.py), kept as its reference."""
    columns = np.full(positions.shape, -1, dtype=np.int64)
    safe = np.maximum(positions, 0)
    column_of = np.full(view.goods, -1, dtype=np.int64)
    for (low, high, shared), tail in zip(block.runs(), block.tails):
        part, valid = safe[low:high], positions[low:high] >= 0
        if len(shared):
            column_of[shared] = np.arange(len(shared))
            columns[low:high] = np.where(valid, column_of[part], -1)
            column_of[shared] = -1
        strata = len(tail.bounds) - 1
        if strata:
            lists = view.list_of_position[part]
            rank = tail.rank_of_list[lists]
            index = tail.start[np.maximum(rank, 0)] + view.place_of_position[part] - view.indptr[lists]
            stratum = np.clip(((np.maximum(index, 0) + 1) * strata + tail.size - 1) // tail.size - 1, 0, strata - 1)
            drawn = np.take_along_axis(block.own[low:high], stratum, axis=1)
            hit = valid & (rank >= 0) & (drawn == part)
            columns[low:high] = np.where(hit, block.shared_width + stratum, columns[low:high])
    return columns


def test_the_compiled_candidate_columns_are_the_numpy_columns():
    """Shared candidates, drawn representatives (hits), undrawn tail goods, padding and -1, over
    blocks of several groups."""
    scenario, model = market(goods=400, creators=40, ticks=2, **{"allocation.candidates.per_user": 60, "allocation.candidates.random": 30, "allocation.block_elements": 20_000})
    state = model.market
    _, view = view_of(scenario, state)
    users = np.flatnonzero(state.users.alive)
    rng = np.random.default_rng(4)
    checked = hits = 0
    for block in view.blocks(state.users.query[users], np.random.default_rng(2), scenario.allocation.block_elements):
        positions = np.concatenate([rng.integers(-1, view.goods, size=(len(block.rows), 20)), block.own[:, :10]], axis=1)
        expected = numpy_columns_of(view, block, positions)
        np.testing.assert_array_equal(view.columns_of(block, positions), expected)
        checked += len(block.shared) > 1
        hits += int((expected >= block.shared_width).sum())
    assert checked and hits  # blocks of several groups, and stratum columns found


def test_auto_mode_picks_exact_below_the_threshold_and_ivf_above():
    rule = make_rule(tiny())
    below = tiny({"allocation.candidates.auto_above": 100})
    assert resolve_mode(below, rule, 100).mode == "exact"
    assert resolve_mode(below, rule, 101).mode == "ivf"
    assert resolve_mode(tiny({"allocation.candidates.mode": "exact", "allocation.candidates.auto_above": 0}), rule, 10**6).mode == "exact"
    # Rules without candidate scores and the unit modifiers stay exact, and say why.
    popularity = tiny({"allocation.rule": "popularity", "allocation.candidates.mode": "ivf"})
    assert resolve_mode(popularity, make_rule(popularity), 10**6).mode == "exact"
    assert "popularity" in resolve_mode(popularity, make_rule(popularity), 10**6).reason
    floor = tiny({"allocation.fairness_floor": 0.001, "allocation.candidates.auto_above": 0})
    assert resolve_mode(floor, rule, 10**6).mode == "exact"
    # Through the model: the tiny catalogue (60 goods) is exact by default, ivf above a lower bar.
    default = AttentionMarket(tiny({"ticks": 1}))
    default.step()
    assert default.allocation_mode == "exact" and default.allocation_modes == {"exact": 1}
    low = AttentionMarket(tiny({"ticks": 1, "allocation.candidates.auto_above": 10}))
    low.step()
    assert low.allocation_mode == "ivf" and "auto_above" in low.allocation_mode_reason


def test_ivf_runs_conserve_money_and_are_reproducible(tmp_path):
    scenario = tiny({"ticks": 6, "allocation.candidates.auto_above": 10, "allocation.candidates.refresh_every": 2})
    first, second = AttentionMarket(scenario), AttentionMarket(scenario)
    for _ in range(3):
        first.step()  # invariants, money conservation included, are checked after every tick
        second.step()
    path = save_checkpoint(first, tmp_path / "checkpoint.pkl")
    resumed = load_checkpoint(path)
    for _ in range(3):
        first.step()
        second.step()
        resumed.step()
    assert (first.metrics["money_conservation_error"] == 0).all()
    assert first.metrics.equals(second.metrics) and first.metrics.equals(resumed.metrics)
    assert first.allocation_modes == {"ivf": 6} == resumed.allocation_modes


def test_run_directory_records_the_mode(tmp_path):
    from simulator.runs.driver import resume_or_start

    scenario = tiny({"ticks": 2, "allocation.candidates.auto_above": 10})
    resume_or_start(tmp_path / "run", scenario)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["allocation_mode"] == "ivf" and manifest["allocation_mode_ticks"] == {"ivf": 2}


def test_the_index_state_starts_empty():
    assert initial_state(tiny(), np.random.default_rng(0)).candidates is None


def run_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_faithfulness_benchmark_quick_mode_prints_json():
    result = run_json("benchmarks/candidate_faithfulness.py", "--users", "2000", "--goods", "2000", "--dim", "16", "--repeats", "1", "--warmup", "1",
                      "--set", "allocation.candidates.per_user=256")  # fmt: skip
    assert 0 <= result["tv_expected"] < 0.1 and result["speedup"] > 0
    assert result["candidates"]["mode"] == "ivf" and result["candidates_per_user"] < result["live_goods"]


def test_tick_benchmark_reports_the_candidate_mode():
    result = run_json("benchmarks/bench_tick.py", "--size", "2000x2000x16", "--no-baselines", "--ticks", "1", "--warmup", "0",
                      "--set", "allocation.candidates.mode=ivf")  # fmt: skip
    assert result["results"][0]["simulator"]["candidate_mode"] == "ivf"
