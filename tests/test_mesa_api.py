"""AttentionMarket as Mesa users drive it: scenario keys as constructor arguments (validated like
`--set`), Mesa's rng convention, `mesa.batch_run` replications, the end of the run, `model.scenario`."""

from __future__ import annotations

import copy
import warnings

import mesa
import pytest

from simulator.model import ALIASES, AttentionMarket
from simulator.scenario.schema import ScenarioError, load_scenario
from tests.conftest import TINY, tiny


def test_aliases_and_overrides_set_scenario_keys():
    model = AttentionMarket(
        TINY, temperature=0.5, payout_rule="shapley", allocation_rule="top_k", auction_format="gsp",
        ad_slots=1, take_rate=0.2, fairness_floor=0.01, creator_cap=0.5, users=120, creators=10, ticks=3,
        overrides={"circulation.attention_reward": 2},
    )  # fmt: skip
    config = model.config
    assert config.allocation.temperature == 0.5 and config.allocation.rule == "top_k"
    assert config.circulation.creator_payout.rule == "shapley" and config.circulation.auction.format == "gsp"
    assert config.allocation.ad_slots == 1 and config.circulation.platform_take_rate == 0.2
    assert config.allocation.fairness_floor == 0.01 and config.allocation.creator_cap == 0.5
    assert config.population.users.count == 120 and config.population.creators.count == 10 and config.ticks == 3
    assert config.circulation.attention_reward == 2
    assert model.market.users_born == 120
    # the same as --set on the file's keys
    assert config == load_scenario(copy.deepcopy(TINY), {ALIASES[name]: value for name, value in {
        "temperature": 0.5, "payout_rule": "shapley", "allocation_rule": "top_k", "auction_format": "gsp",
        "ad_slots": 1, "take_rate": 0.2, "fairness_floor": 0.01, "creator_cap": 0.5, "users": 120,
        "creators": 10, "ticks": 3}.items()} | {"circulation.attention_reward": 2})  # fmt: skip


def test_every_alias_is_a_constructor_parameter_and_a_scenario_key():
    import inspect

    parameters = inspect.signature(AttentionMarket).parameters
    assert set(ALIASES) <= set(parameters)
    scenario = tiny()
    for name, key in ALIASES.items():
        node = scenario
        for part in key.split("."):
            node = getattr(node, part)  # raises if the alias points nowhere


def test_bad_constructor_arguments_are_located_like_set_errors():
    with pytest.raises(ScenarioError) as caught:
        AttentionMarket(TINY, temperature=-1, payout_rule="nope", overrides={"allocation.ad_slotz": 1})
    lines = str(caught.value).splitlines()
    assert any(line.startswith("AttentionMarket(temperature=...):1:1: allocation.temperature: ") for line in lines)
    assert any(line.startswith("AttentionMarket(payout_rule=...):1:1: circulation.creator_payout.rule: unknown payout rule 'nope'") for line in lines)
    assert any(line.startswith("AttentionMarket(overrides['allocation.ad_slotz']):1:1: allocation.ad_slotz: unknown key") for line in lines)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'; did you mean 'temperature'"):
        AttentionMarket(TINY, temprature=0.5)
    with pytest.raises(TypeError, match="set twice"):
        AttentionMarket(TINY, temperature=0.5, overrides={"allocation.temperature": 0.7})
    with pytest.raises(TypeError, match="pass either rng or seed"):
        AttentionMarket(TINY, rng=1, seed=2)


def test_a_wrong_positional_argument_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"expected a simulator.Scenario, a path to a scenario YAML file or a dict, got builtins.tuple"):
        AttentionMarket(("scenarios/baseline.yaml",))
    with pytest.raises(TypeError, match="got mesa.experimental.scenarios"):
        AttentionMarket(mesa.experimental.scenarios.Scenario())
    with pytest.raises(TypeError, match="positional argument"):
        AttentionMarket(TINY, 0.5)


def test_rng_follows_mesa_and_the_seed_used_is_recorded():
    assert AttentionMarket(TINY).config.seed == TINY["seed"]  # left out: the scenario's seed
    assert AttentionMarket(TINY, seed=None).config.seed == TINY["seed"]  # the older keyword, as before
    assert AttentionMarket(TINY, seed=5).config.seed == 5
    fresh = [AttentionMarket(TINY, rng=None).config.seed for _ in range(3)]
    assert len(set(fresh)) == 3  # rng=None: fresh entropy, recorded
    first, again = AttentionMarket(TINY, rng=fresh[0], ticks=3), AttentionMarket(TINY, rng=fresh[0], ticks=3)
    first.run_model()
    again.run_model()
    assert first.metrics.equals(again.metrics)
    with pytest.raises(ScenarioError, match=r"AttentionMarket\(seed=...\):1:1: seed: "):
        AttentionMarket(TINY, rng=-1)


def batch(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # mesa deprecates iterations= for rng=[None] * n
        return mesa.batch_run(
            AttentionMarket,
            parameters={"scenario": [TINY], "temperature": [0.3, 1.0], "ticks": 3},
            display_progress=False,
            **options,
        )


def final_rows(results):
    return {(row["temperature"], row["iteration"]): (row["consumptions"], row["user_welfare"], row["ad_spend"]) for row in results if row["Step"] == 3}


def test_batch_run_iterations_give_distinct_replications():
    rows = final_rows(batch(iterations=3))
    assert len(rows) == 6
    for temperature in (0.3, 1.0):
        assert len({rows[(temperature, i)] for i in range(3)}) == 3


def test_batch_run_with_a_fixed_rng_list_reproduces():
    first, second = final_rows(batch(rng=[11, 12, 13])), final_rows(batch(rng=[11, 12, 13]))
    assert first == second and len(first) == 6
    assert len({first[(1.0, i)] for i in range(3)}) == 3


def test_step_after_the_last_tick_does_nothing():
    model = AttentionMarket(TINY, ticks=2)
    model.run_model()
    assert model.running is False and model.market.tick == 2
    rows = model.metrics
    model.step()
    model.step()
    assert model.running is False and model.market.tick == 2
    assert model.metrics.equals(rows)


def test_model_scenario_is_not_mesas_empty_scenario():
    model = AttentionMarket(TINY)
    with pytest.raises(AttributeError, match=r"model.config \(a simulator.Scenario\)"):
        model.scenario  # noqa: B018
    assert model.config.name == "tiny"
