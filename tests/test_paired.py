"""Comparisons a reviewer accepts: common random numbers across the arms of a sweep, paired
analysis, honest intervals for bounded metrics, the duplicate guard, designs beyond grids."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from simulator.market.populations import spawn_streams
from simulator.model import AttentionMarket
from simulator.runs.sweep import derive_seed, plan
from simulator.scenario.schema import load_scenario

PAYOUT_ARMS: dict[str, Any] = {
    "name": "arms",
    "seed": 11,
    "ticks": 4,
    "embedding_dim": 8,
    "population": {
        "users": {"count": 300, "arrivals_per_tick": 5.0},
        "creators": {"count": 20, "entry": {"rate": 0.2}},
        "goods": {"initial": 60},
        "advertisers": {"count": 3},
    },
    "sweep": {"grid": {"circulation.creator_payout.rule": ["exposure", "equal"]}, "replications": 2},
}

POPULATION_ARRAYS = {
    "users": ("interest", "query", "budget", "activity"),
    "creators": ("topic", "quality", "publish_rate", "clickbait"),
    "goods": ("key", "quality", "owner", "price", "expires"),
    "advertisers": ("targeting", "value_per_click"),
}


def _arms(seeding: str | None = None) -> list:
    data = copy.deepcopy(PAYOUT_ARMS)
    if seeding is not None:
        data["sweep"]["seeding"] = seeding
    return plan(load_scenario(data))


def test_common_seeding_is_the_default_and_shares_a_seed_per_replication():
    specs = _arms()
    assert load_scenario(copy.deepcopy(PAYOUT_ARMS)).sweep.seeding == "common"
    by_replication: dict[int, set[int]] = {}
    for spec in specs:
        by_replication.setdefault(spec.replication, set()).add(spec.seed)
        assert spec.seed == derive_seed(11, {}, spec.replication)
    assert all(len(seeds) == 1 for seeds in by_replication.values())
    assert len({next(iter(seeds)) for seeds in by_replication.values()}) == 2  # replications differ
    independent = _arms("independent")
    assert len({spec.seed for spec in independent}) == len(independent)


def test_two_arms_differing_only_in_the_payout_rule_start_from_identical_populations():
    exposure, equal = (spec for spec in _arms() if spec.replication == 0)
    assert exposure.point != equal.point
    first, second = AttentionMarket(exposure.scenario), AttentionMarket(equal.scenario)
    for population, columns in POPULATION_ARRAYS.items():
        for column in columns:
            np.testing.assert_array_equal(
                getattr(getattr(first.market, population), column), getattr(getattr(second.market, population), column), err_msg=f"{population}.{column}"
            )
    np.testing.assert_array_equal(first.market.topic_centres, second.market.topic_centres)
    np.testing.assert_array_equal(first.market.homogenization.pairs, second.market.homogenization.pairs)
    # and the first tick, before the rules have changed anything, sees the same users show up
    first.step()
    second.step()
    assert first.latest_metrics["active_users"] == second.latest_metrics["active_users"]
    assert first.latest_metrics["goods_published"] == second.latest_metrics["goods_published"]


@pytest.mark.parametrize(
    "key, values",
    [("allocation.rule", ["top_k", "random"]), ("circulation.creator_payout.rule", ["exposure", "equal"])],
)
def test_a_stage_that_draws_more_leaves_the_other_stages_and_later_ticks_alone(key, values):
    """Under two rules the allocation (or circulation and adaptation) stage draws different
    amounts of random numbers; the number of users who arrive in every later tick (the first draw
    of acquisition's stream) is the same in both arms."""
    data = copy.deepcopy(PAYOUT_ARMS)
    data["sweep"]["grid"] = {key: values}
    first, second = (AttentionMarket(spec.scenario) for spec in plan(load_scenario(data)) if spec.replication == 0)
    for _ in range(4):
        first.step()
        second.step()
        assert first.market.users_born == second.market.users_born


def test_spawned_streams_advance_the_parent_by_a_fixed_amount():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    streams_a = spawn_streams(a, 3)
    streams_b = spawn_streams(b, 3)
    streams_a[0].random(1000)  # one child draws far more than its twin
    assert a.random() == b.random()
    assert streams_a[1].random() == streams_b[1].random()
    assert len({stream.random() for stream in spawn_streams(np.random.default_rng(3), 4)}) == 4


def test_a_population_size_leaves_the_other_populations_alone():
    base = {k: v for k, v in PAYOUT_ARMS.items() if k != "sweep"}
    small = AttentionMarket(load_scenario(copy.deepcopy(base)))
    bigger = AttentionMarket(load_scenario(copy.deepcopy(base), {"population.users.count": 400}))
    np.testing.assert_array_equal(small.market.creators.topic, bigger.market.creators.topic)


@pytest.mark.parametrize("seed", [0, 5])
def test_same_seed_same_metrics(seed):
    base = {k: v for k, v in PAYOUT_ARMS.items() if k != "sweep"}
    runs = []
    for _ in range(2):
        model = AttentionMarket(load_scenario(copy.deepcopy(base)), seed=seed)
        for _ in range(3):
            model.step()
        runs.append(model.metrics)
    assert runs[0].equals(runs[1])
