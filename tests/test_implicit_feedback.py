"""Implicit-feedback learning for the `learned` rule (`allocation.learned.feedback: implicit`):
weighted ALS of Hu, Koren & Volinsky (2008) against the explicit fit, on planted preferences,
against a dense reference, through a checkpoint, and within its declared memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import assert_rule_run_resumes_identically, fresh_state, tiny

import simulator
from simulator.market.catalogue import Catalogue
from simulator.rules.allocation.engine import make_rule
from simulator.runs import driver
from simulator.runs.memory import estimate_memory
from simulator.scenario.schema import ScenarioError

PLANTED_RANK = 3


def planted_market(feedback: str, users: int = 400, goods: int = 200, seed: int = 0, **overrides):
    """(scenario, state, rule, held-out positives, seen mask): a log where every shown good was
    consumed, each user's goods drawn by planted low-rank preferences the priors know nothing of
    (each user's 10 best by u·v + Gumbel noise are logged, the next 4 are held out)."""
    scenario = tiny(
        {
            "allocation.rule": "learned",
            "population.users.count": users,
            "population.goods.initial": goods,
            "allocation.learned.feedback": feedback,
            **overrides,
        }
    )
    state = fresh_state(scenario)
    rule = make_rule(scenario)
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(state.users.alive)
    catalogue = Catalogue.of(state)
    taste = rng.standard_normal((len(rows), PLANTED_RANK)) @ rng.standard_normal((len(catalogue.rows), PLANTED_RANK)).T
    order = np.argsort(-(1.5 * taste + rng.gumbel(size=taste.shape)), axis=1)
    logged, held_out = order[:, :10], order[:, 10:14]
    rule.model.log.append((0, np.repeat(rows, 10), state.goods.uid[catalogue.rows[logged.ravel()]], np.ones(logged.size, dtype=bool)))
    seen = np.zeros(taste.shape, dtype=bool)
    np.put_along_axis(seen, order[:, :14], True, axis=1)
    return scenario, state, rule, held_out, seen


def held_out_auc(feedback: str, seed: int = 0) -> float:
    """Mean over users of the AUC of held-out consumed goods against goods the user never met."""
    scenario, state, rule, held_out, seen = planted_market(feedback, seed=seed)
    rule.prepare(state, scenario, np.random.default_rng(1))
    assert rule.model.trained_tick == 0
    scores = rule.scores(state, Catalogue.of(state), np.flatnonzero(state.users.alive))
    positive = np.take_along_axis(scores, held_out, axis=1)
    return float(np.mean([(positive[i][:, None] > scores[i, ~seen[i]][None, :]).mean() for i in range(len(scores))]))


def test_explicit_fit_learns_nothing_from_an_all_positive_log():
    """The issue's evidence: every label equals the mean, every residual is 0, so the user
    vectors are their priors shrunk toward 0 and carry nothing of the planted preferences."""
    scenario, state, rule, _, _ = planted_market("explicit")
    rule.prepare(state, scenario, np.random.default_rng(1))
    assert rule.model.mean == 1.0
    prior = rule._priors(state, rule.model.user_rows, rule.model.item_uids, rule.rank)[0]
    fitted = rule.model.user_factor[:, : rule.rank]
    cosine = (fitted * prior).sum(1) / np.linalg.norm(fitted, axis=1) / np.linalg.norm(prior, axis=1)
    assert cosine.min() > 0.99
    assert (np.linalg.norm(fitted, axis=1) < np.linalg.norm(prior, axis=1)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_implicit_recovers_planted_preferences_that_explicit_cannot(seed):
    explicit, implicit = held_out_auc("explicit", seed), held_out_auc("implicit", seed)
    assert abs(explicit - 0.5) < 0.05, explicit  # chance: the priors are independent of the planted tastes
    assert implicit > 0.72 and implicit > explicit + 0.2, (explicit, implicit)


def dense_objective(people, items, preference, confidence, user_prior, item_prior, penalty):
    return float(
        (confidence * (preference - people @ items.T) ** 2).sum()
        + penalty * ((people - user_prior) ** 2).sum()
        + penalty * ((items - item_prior) ** 2).sum()
    )


def small_log_rule(iterations: int, alpha: float = 3.0, penalty: float = 2.0, rank: int = 3):
    """A rule with a hand-made log over a 60-good catalogue: pairs consumed once and twice, shown
    but not consumed, and consumed goods that have since left the catalogue."""
    scenario = tiny(
        {
            "allocation.rule": "learned",
            "allocation.learned.feedback": "implicit",
            "allocation.learned.confidence": alpha,
            "allocation.learned.regularization": penalty,
            "allocation.learned.rank": rank,
            "allocation.learned.iterations": iterations,
        }
    )
    state = fresh_state(scenario)
    rng = np.random.default_rng(3)
    users = rng.choice(np.flatnonzero(state.users.alive), size=40)  # repeats: some pairs twice
    goods = rng.choice(np.flatnonzero(state.goods.live), size=40)
    consumed = rng.random(40) < 0.7
    rule = make_rule(scenario)
    rule.model.log.append((0, users, state.goods.uid[goods], consumed))
    rule.model.log.append((1, users[:10], state.goods.uid[goods[:10]], np.ones(10, dtype=bool)))
    state.goods.live[goods[-3:]] = False  # consumed once, now gone: not in the fit
    return scenario, state, rule


def dense_reference(state, rule, alpha, penalty, rng):
    """Hu, Koren & Volinsky's WALS written out densely: C and P over every logged user × live good,
    each row's normal equations (YᵀC_uY + λI) x_u = YᵀC_u p_u + λx⁰_u solved one by one."""
    users = np.concatenate([entry[1] for entry in rule.model.log])
    uids = np.concatenate([entry[2] for entry in rule.model.log])
    consumed = np.concatenate([entry[3] for entry in rule.model.log])
    user_rows = np.unique(users)
    item_uids = np.sort(state.goods.uid[state.goods.live])
    counts = np.zeros((len(user_rows), len(item_uids)))
    for user, uid, took in zip(users, uids, consumed):
        if took and uid in item_uids:
            counts[np.searchsorted(user_rows, user), np.searchsorted(item_uids, uid)] += 1
    confidence, preference = 1 + alpha * counts, (counts > 0).astype(float)
    user_prior, item_prior = rule._priors(state, user_rows, item_uids, rule.rank)
    items = rule._warm_start(item_uids, item_prior, rng)
    objectives = []
    for _ in range(rule.iterations):
        people = np.stack(
            [
                np.linalg.solve(items.T @ (c[:, None] * items) + penalty * np.eye(rule.rank), items.T @ (c * p) + penalty * x0)
                for c, p, x0 in zip(confidence, preference, user_prior)
            ]
        )
        items = np.stack(
            [
                np.linalg.solve(people.T @ (c[:, None] * people) + penalty * np.eye(rule.rank), people.T @ (c * p) + penalty * y0)
                for c, p, y0 in zip(confidence.T, preference.T, item_prior)
            ]
        )
        objectives.append(dense_objective(people, items, preference, confidence, user_prior, item_prior, penalty))
    return user_rows, item_uids, people, items, objectives, counts


def test_implicit_fit_matches_a_dense_reference():
    alpha, penalty = 3.0, 2.0
    scenario, state, rule = small_log_rule(iterations=4, alpha=alpha, penalty=penalty)
    user_rows, item_uids, people, items, objectives, counts = dense_reference(state, rule, alpha, penalty, np.random.default_rng(8))
    assert counts.max() == 2 and (counts > 0).sum() < counts.size / 4  # the log has repeats and most pairs are unobserved
    rule.fit_implicit(state, np.random.default_rng(8))
    np.testing.assert_array_equal(rule.model.user_rows, user_rows)
    np.testing.assert_array_equal(rule.model.item_uids, item_uids)
    np.testing.assert_allclose(rule.model.user_factor[:, :-1], people, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rule.model.item_factor[:, :-1], items, rtol=1e-5, atol=1e-6)
    assert (rule.model.user_factor[:, -1] == 0).all() and (rule.model.item_factor[:, -1] == 0).all()  # no biases
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(objectives, objectives[1:]))  # ALS never climbs


def test_goods_published_after_a_fit_score_like_fitted_goods_without_consumptions():
    scenario, state, rule = small_log_rule(iterations=3)
    rule.fit_implicit(state, np.random.default_rng(0))
    consumed_uids = np.concatenate([entry[2][entry[3]] for entry in rule.model.log])
    untouched = ~np.isin(rule.model.item_uids, consumed_uids)
    assert untouched.sum() > 10
    priors = rule._priors(state, rule.model.user_rows, rule.model.item_uids, rule.rank)[1]
    np.testing.assert_allclose(rule.model.item_factor[untouched, :-1], rule._unseen_items(priors[untouched]), rtol=1e-6, atol=1e-9)
    # A new good with the key of an untouched one gets that good's scores.
    users = rule.model.user_rows[:5]
    row = state.uids.rows(rule.model.item_uids[np.flatnonzero(untouched)[:1]])
    fitted = rule.scores(state, Catalogue.of(state), users)[:, Catalogue.of(state).position_of_row[row[0]]]
    new = rule.audience_scores(state, users, state.goods.key[row], state.goods.quality[row])[:, 0]
    np.testing.assert_allclose(new, fitted, rtol=1e-4, atol=1e-5)


def implicit_scenario(**overrides):
    return tiny({"allocation.rule": "learned", "allocation.learned.feedback": "implicit", "allocation.learned.retrain_every": 2, "ticks": 8, **overrides})


def test_implicit_runs_are_deterministic_and_survive_a_checkpoint(tmp_path):
    scenario = implicit_scenario()
    whole = assert_rule_run_resumes_identically(scenario, tmp_path / "checkpoint", ticks_before=5)
    assert whole.rule.model.unseen_item_map.shape == (16, 16)


def test_implicit_changes_the_run_and_explicit_stays_the_default():
    assert tiny().allocation.learned.feedback == "explicit"
    explicit = simulator.run(implicit_scenario(**{"allocation.learned.feedback": "explicit"})).metrics
    implicit = simulator.run(implicit_scenario()).metrics
    assert not explicit["user_utility_mean"].equals(implicit["user_utility_mean"])


def test_declared_state_bytes_cover_the_implicit_rule_state_and_the_fit_never_goes_dense():
    scenario = implicit_scenario(**{"population.users.count": 1500, "population.goods.initial": 400, "ticks": 6})
    model = simulator.AttentionMarket(scenario)
    while model.running:
        model.step()
    held = sum(
        np.asarray(value).nbytes
        for value in [*model.rule.state_dict().values(), *(array for entry in model.rule.model.log for array in entry[1:])]
        if isinstance(value, np.ndarray)
    )
    declared = [part.bytes for part in estimate_memory(scenario).parts if part.key == "allocation.rule"]
    assert declared and held <= declared[0], (held, declared)

    # The fit's working memory follows the consumed pairs: well under one dense users × goods matrix.
    scenario, state, rule, _, _ = planted_market("implicit", users=3000, goods=3000)
    dense = 3000 * 3000 * 8
    tracemalloc.start()
    try:
        rule.fit_implicit(state, np.random.default_rng(0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense / 4, (peak, dense)


@pytest.mark.parametrize(("key", "value"), [("allocation.learned.feedback", "implicitly"), ("allocation.learned.confidence", -1.0)])
def test_bad_feedback_settings_are_refused_at_their_key(key, value):
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        tiny({key: value})


def test_an_interrupted_implicit_run_resumes_to_the_same_bytes(tmp_path):
    scenario = implicit_scenario(**{"ticks": 6})
    driver.resume_or_start(tmp_path / "fresh", scenario, checkpoint_every=2)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    assert driver.resume_or_start(tmp_path / "half", scenario, checkpoint_every=2, should_stop=stop_after_three).status == "interrupted"
    finished = driver.resume_or_start(tmp_path / "half", scenario, checkpoint_every=2)
    assert finished.status == "complete" and finished.resumed_from == 3
    assert (tmp_path / "half" / "metrics.parquet").read_bytes() == (tmp_path / "fresh" / "metrics.parquet").read_bytes()
