"""The `viable_matching` allocation rule: the matching's choice, its realisation by prices, the
threshold reached in a run, infeasibility (refused, or a recorded fallback), determinism,
checkpoints and its memory declaration."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from conftest import assert_rule_run_resumes_identically, fresh_state, tiny
from typer.testing import CliRunner

import simulator
from simulator.cli.main import app
from simulator.market.catalogue import Catalogue
from simulator.model import advance
from simulator.rules import RuleSet
from simulator.rules.allocation.engine import make_rule
from simulator.rules.allocation.viability import CreatorTable, ViableMatching
from simulator.runs import driver
from simulator.runs.memory import estimate_memory
from simulator.scenario.schema import ScenarioError, load_scenario

def viable(share=0.03, **params):
    return {"allocation.rule": "viable_matching", "allocation.params": {"min_exposure_share": share, **params}}


def two_creator_table(users_a: int, users_b: int, niche_value: float = 1.0) -> CreatorTable:
    """Users who prefer the big creator A (A 1.0, B 0.5) and a niche who prefer B (A 0.2, B `niche_value`), one unit each."""
    value = np.array([[1.0, 0.5]] * users_a + [[0.2, niche_value]] * users_b)
    users = len(value)
    return CreatorTable(np.array([3, 8]), np.log(value), value, np.full((users, 2), 5.0), np.ones(users))


def matching(table: CreatorTable, share: float):
    rule = make_rule(tiny(viable(share)))
    return rule._matching(table, share)


def test_the_matching_keeps_a_niche_creator_when_its_users_gain_more_than_the_others_lose():
    # ν = 0.4 of 10 units: keeping B takes the 3 niche users plus 1 moved from A (loses 0.5):
    # 3·1 + 0.5 + 6·1 = 9.5 against 3·0.2 + 7 = 7.6 with A alone.
    keep, planned = matching(two_creator_table(7, 3), 0.4)
    assert keep.tolist() == [True, True]
    np.testing.assert_allclose(planned, [0.6, 0.4], atol=1e-9)
    # ν = 0.8: both cannot be kept (1.6 > 1); A alone (7.6) beats B alone (3 + 7·0.5 = 6.5).
    keep, planned = matching(two_creator_table(7, 3), 0.8)
    assert keep.tolist() == [True, False]
    np.testing.assert_allclose(planned, [1.0, 0.0], atol=1e-9)


def test_the_matching_respects_how_many_goods_a_feed_can_show():
    table = two_creator_table(7, 3)
    table = CreatorTable(table.creators, table.log_mass, table.value, np.array([[5.0, 1.0]] * 10), np.full(10, 4.0))
    keep, planned = matching(table, 0.1)
    assert keep.all()
    assert planned[1] <= 0.25 + 1e-9  # one good of B in a 4-unit feed: at most a quarter of it


def test_prices_give_every_kept_creator_its_share_and_bind_only_where_needed():
    rng = np.random.default_rng(0)
    users, creators = 200, 12
    log_mass = rng.normal(size=(users, creators)) + np.linspace(0, -3, creators)[None, :]
    table = CreatorTable(np.arange(creators), log_mass, np.exp(log_mass), np.full((users, creators), 6.0), np.full(users, 5.0))
    rule = make_rule(tiny(viable(0.05)))
    rule.plan.kept = np.arange(creators)
    price = rule._prices(table)
    logits = log_mass + price[None, :]
    first = np.exp(logits - logits.max(axis=1, keepdims=True))
    first /= first.sum(axis=1, keepdims=True)
    shares = (rule._feed_share(first, table) * 5.0).sum(axis=0) / (5.0 * users)
    assert (shares >= 0.05 * (1 - 2e-3)).all()
    assert (price[shares > 0.05 * 1.01] == 0).all()  # complementary slackness
    assert (price > 0).sum() >= 3  # the niche creators bind


def shares_in_a_run(ticks: int, share: float = 0.03, **params):
    """For each creator, its exposure share in each tick it was kept, and how many creators were kept."""
    scenario = tiny({**viable(share, every=3, **params), "population.users.count": 1000, "ticks": 40})
    state = fresh_state(scenario)
    rng = np.random.default_rng(5)
    rules = RuleSet.of(scenario)
    got = defaultdict(list)
    binding = 0
    for _ in range(ticks):
        outcome = advance(state, scenario, rules, rng)
        plan = rules.allocation.plan
        shown = outcome.allocation.exposures[outcome.allocation.exposures >= 0]
        realised = np.bincount(state.goods.owner[shown], minlength=state.creators_born) / len(shown)
        for creator in plan.kept.tolist():
            got[creator].append(realised[creator])
        binding += int((plan.price > 0).sum())
    return got, binding


@pytest.mark.slow
def test_every_kept_creator_reaches_its_threshold_in_expectation_over_ticks():
    nu = 0.03
    got, binding = shares_in_a_run(18, nu)
    assert binding > 0  # the constraint binds: without prices some kept creators fall short
    means = {creator: np.mean(values) for creator, values in got.items() if len(values) >= 6}
    assert len(means) >= 5
    assert min(means.values()) >= 0.85 * nu, means
    assert np.mean([value for values in got.values() for value in values]) >= nu


def test_zero_threshold_is_attention_softmax_exactly():
    plain = simulator.run(tiny({"ticks": 5})).metrics
    zero = simulator.run(tiny({"ticks": 5, **viable(0.0)})).metrics
    pd.testing.assert_frame_equal(plain, zero, check_exact=True)


def test_runs_are_deterministic_and_survive_a_checkpoint(tmp_path):
    scenario = tiny({"ticks": 6, **viable(0.04, every=3)})
    whole = assert_rule_run_resumes_identically(scenario, tmp_path / "checkpoint", ticks_before=3)
    assert len(whole.rule.plan.kept) > 0


def test_keeping_every_creator_beyond_what_users_can_give_is_refused_at_its_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\npopulation:\n  creators: {count: 20}\nallocation:\n  rule: viable_matching\n  params:\n    keep: all\n    min_exposure_share: 0.06\n"
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert f"{path}:8:" in message and "allocation.params.min_exposure_share: keep: all needs 0.06 × 20 creators" in message, message
    assert load_scenario(path, {"allocation.params.min_exposure_share": 0.05}).allocation.params["keep"] == "all"  # 0.05 × 20 = 1 fits
    assert load_scenario(path, {"allocation.params.keep": "optimal"}) is not None  # the matching chooses: always feasible


@pytest.mark.parametrize("params", [{"min_exposure_share": 1.5}, {"min_exposure_share": -0.1}, {"every": 0}, {"keep": "some"}])
def test_bad_params_are_refused_at_their_key(params):
    with pytest.raises(ScenarioError, match=r"allocation\.params"):
        tiny({"allocation.rule": "viable_matching", "allocation.params": params})


def test_too_many_creators_at_run_time_drop_the_least_valuable_and_the_manifest_says_so(tmp_path):
    scenario = tiny({**viable(0.05, keep="all")})  # 20 creators: exactly 1/ν
    rule = make_rule(scenario)
    crowded = tiny({"population.creators.count": 30, "population.goods.initial": 90})
    state = fresh_state(crowded)
    rule.prepare(state, crowded, np.random.default_rng(0))
    with_goods = np.unique(state.goods.owner[state.goods.live])
    assert len(with_goods) > 20
    assert len(rule.plan.kept) == 20
    (fallback,) = rule.plan.fallbacks
    assert fallback["tick"] == 0 and len(fallback["dropped"]) == len(with_goods) - 20
    assert not set(fallback["dropped"]) & set(rule.plan.kept.tolist())
    table = rule._table(state, Catalogue.of(state), rule.plan.sample, 1 << 22, True)
    worth = dict(zip(table.creators.tolist(), table.value.sum(axis=0).tolist()))
    assert max(worth[c] for c in fallback["dropped"]) <= min(worth[c] for c in rule.plan.kept.tolist())

    # In a run: creators enter beyond 1/ν, the fallback is recorded in manifest.json.
    run = tiny({**viable(0.05, keep="all", every=1), "ticks": 6, "population.creators.entry.rate": 1.0})
    outcome = driver.resume_or_start(tmp_path / "run", run)
    assert outcome.status == "complete"
    notes = json.loads((tmp_path / "run" / "manifest.json").read_text())["allocation_rule_notes"]
    assert notes["fallbacks"] and all(entry["dropped"] for entry in notes["fallbacks"])


def test_the_declared_memory_covers_the_rule_state_and_tables():
    scenario = tiny({**viable(0.02), "population.users.count": 1000, "ticks": 6})
    model = simulator.AttentionMarket(scenario)
    while model.running:
        model.step()
    rule = model.rule
    held = sum(value.nbytes for value in rule.state_dict().values() if isinstance(value, np.ndarray))
    table = rule._table(model.market, Catalogue.of(model.market), rule.plan.sample, 1 << 22, True)
    working = sum(array.nbytes for array in (table.log_mass, table.value, table.eligible)) * 4 / 3  # plus the logits
    (declared,) = [part.bytes for part in estimate_memory(scenario).parts if part.key == "allocation.rule"]
    assert held + working <= declared, (held, working, declared)
    assert ViableMatching.block_bytes_per_element == 6  # scores plus one in-place add of the prices


def test_attnsim_rules_lists_it():
    result = CliRunner().invoke(app, ["rules", "allocation"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    assert "viable_matching" in result.stdout and "Mladenov" in result.stdout
