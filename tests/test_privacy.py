"""Differential privacy of the platform's learning inputs: results from theory and the ε = ∞ identity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import fresh_state, tiny

from simulator.model import AttentionMarket
from simulator.rules.allocation.privacy import (
    MECHANISMS,
    gaussian_sigma,
    keep_probability,
    randomized_response,
)
from simulator.runs.checkpoint import scenario_json
from simulator.scenario.schema import ScenarioError, load_scenario

SMALL = {"population.users.count": 200, "population.creators.count": 15, "population.goods.initial": 60, "ticks": 8}


def metrics_of(overrides: dict, seed: int = 2):
    model = AttentionMarket(tiny({**SMALL, **overrides}), seed=seed)
    while model.running:
        model.step()
    return model


@pytest.mark.parametrize("rule", ["learned", "popularity"])
@pytest.mark.parametrize("mechanism", ["randomized_response", "laplace", "gaussian"])
def test_epsilon_infinity_equals_the_non_private_run_byte_for_byte(rule, mechanism):
    extra = {"allocation.rule": rule, "allocation.learned.retrain_every": 2, "allocation.engagement_weight": 1.0}
    plain = metrics_of(extra)
    private = metrics_of({**extra, "privacy.mechanism": mechanism, "privacy.epsilon": "inf"})
    assert plain.metrics.to_csv() == private.metrics.to_csv()
    np.testing.assert_array_equal(plain.market.goods.consumptions, private.market.goods.consumptions)
    assert private.market.privacy_rng is None  # nothing was drawn


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 3.0])
def test_randomized_response_keeps_a_bit_with_probability_e_eps_over_one_plus_e_eps(epsilon):
    rng = np.random.default_rng(11)
    bits = rng.random(400_000) < 0.3
    reported = randomized_response(bits, epsilon, rng)
    kept = float(np.mean(reported == bits))
    p = math.exp(epsilon) / (1 + math.exp(epsilon))
    assert keep_probability(epsilon) == pytest.approx(p)
    assert abs(kept - p) < 4 * math.sqrt(p * (1 - p) / len(bits))


@pytest.mark.parametrize(("mechanism", "epsilon"), [("laplace", 0.5), ("laplace", 2.0), ("gaussian", 0.5)])
def test_central_noise_on_released_counts_has_its_mechanisms_scale(mechanism, epsilon):
    """Each live good's count is released as truth + noise (rounded): Laplace sd √2/ε, Gaussian σ."""
    scenario = tiny({**SMALL, "population.goods.initial": 0, "privacy.mechanism": mechanism, "privacy.epsilon": epsilon})
    state = fresh_state(scenario)
    goods = state.goods
    goods.live[:16] = True
    exposures = np.repeat(np.arange(16)[None, :], 50, axis=0)  # 50 users consume each of 16 goods
    consumed = np.ones(exposures.shape, dtype=bool)
    released = np.concatenate(
        [MECHANISMS[mechanism](state, exposures, consumed, consumed, scenario.privacy, np.random.default_rng(seed)).counts[:16] for seed in range(2_000)]
    )
    noise = released - 50
    sd = math.sqrt(2) / epsilon if mechanism == "laplace" else gaussian_sigma(epsilon, scenario.privacy.delta)
    assert abs(noise.mean()) < 4 * sd / math.sqrt(len(noise))
    assert noise.std() == pytest.approx(math.sqrt(sd**2 + 1 / 12), rel=0.05)  # rounding adds 1/12


def test_a_finite_epsilon_changes_the_run_through_its_own_generator():
    plain = metrics_of({"allocation.rule": "popularity"})
    private = metrics_of({"allocation.rule": "popularity", "privacy.mechanism": "laplace", "privacy.epsilon": 0.5})
    assert plain.metrics.to_csv() != private.metrics.to_csv()
    assert private.market.privacy_rng is not None


def test_randomized_response_at_small_epsilon_makes_the_logs_near_coin_flips():
    model = metrics_of({"allocation.rule": "learned", "privacy.mechanism": "randomized_response", "privacy.epsilon": 0.01})
    logged = np.concatenate([entry[3] for entry in model.rules.allocation.model.log])
    assert abs(logged.mean() - 0.5) < 0.02
    truth = metrics_of({"allocation.rule": "learned"}).metrics
    assert (truth["consumptions"].sum() / truth["attention_allocated"].sum()) < 0.4  # the truth is far from 1/2


def test_epsilon_infinity_round_trips_through_json_and_bad_epsilon_is_refused(tmp_path):
    scenario = load_scenario({"privacy": {"mechanism": "laplace", "epsilon": "inf"}})
    assert math.isinf(scenario.privacy.epsilon)
    data = scenario_json(scenario)
    assert data["privacy"]["epsilon"] == "inf"
    assert math.isinf(load_scenario(json.loads(json.dumps(data))).privacy.epsilon)
    path = tmp_path / "bad.yaml"
    for text in ("privacy:\n  mechanism: laplace\n  epsilon: 0\n", "privacy:\n  mechanism: laplace\n  epsilon: -1.5\n"):
        path.write_text(text)
        with pytest.raises(ScenarioError) as caught:
            load_scenario(path)
        (issue,) = caught.value.issues
        assert (issue.key, issue.line, issue.column) == ("privacy.epsilon", 3, 3)
