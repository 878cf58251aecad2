"""Property-based tests (hypothesis): every valid scenario runs with its invariants holding, and
every invalid one is refused cleanly.

- Valid: small random scenarios over every rule the schema accepts (allocation rules, payout
  rules, auction formats, bidding strategies, and every other choice the schema declares as a
  Literal, read from `simulator.scenario` so rules added later are covered), run for a few ticks
  with the per-tick invariants on; a pairwise covering set makes sure every pair of (allocation
  rule, payout rule, auction format, bidding strategy) values is run at least once.
- Checkpoints: a run saved and restored mid-way ends with exactly the metrics of a run in one go.
- Invalid: a valid scenario with one mutation (a wrong type, a value out of range, NaN or inf,
  an unknown key, an unknown rule name), written as YAML and given to `attnsim validate`
  (CliRunner): exit 2, every stderr line `FILE:LINE:COL: key: message` naming the mutated key,
  never a traceback.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from simulator.cli.main import app
from simulator.model import AttentionMarket
from simulator.registry import registry
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.scenario import schema
from simulator.scenario.schema import load_scenario

ISSUE_LINE = re.compile(r"^[^:\s][^:]*:\d+:\d+: \S+: .+$")
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- the schema, read generically -------------------------------------------------------------------


def schema_leaves(model: type[BaseModel] = schema.Scenario, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> pydantic FieldInfo for every leaf of the scenario schema (sweep left out)."""
    leaves: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if key == "sweep":
            continue
        options = [arg for arg in getattr(info.annotation, "__args__", (info.annotation,)) if arg is not type(None)]
        if isinstance(options[0], type) and issubclass(options[0], BaseModel):
            leaves.update(schema_leaves(options[0], f"{key}."))
        else:
            leaves[key] = info
    return leaves


LEAVES = schema_leaves()


def literal_choices(info: Any) -> tuple[Any, ...] | None:
    return info.annotation.__args__ if typing.get_origin(info.annotation) is typing.Literal else None


# Every choice the schema offers; the rule lists come from the constants other modules extend.
CHOICES: dict[str, tuple[Any, ...]] = {key: choices for key, info in LEAVES.items() if (choices := literal_choices(info))}
CHOICES["allocation.rule"] = tuple(registry("allocation").names())
CHOICES["circulation.creator_payout.rule"] = tuple(registry("payout").names())
CHOICES["circulation.auction.format"] = tuple(registry("auction").names())
CHOICES["population.advertisers.bidding"] = tuple(registry("bidding").names())
MAIN_AXES = ("allocation.rule", "circulation.creator_payout.rule", "circulation.auction.format", "population.advertisers.bidding")


def bounds(info: Any) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(item, name)
    return found


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in flat.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


# --- valid scenarios ------------------------------------------------------------------------------------

SMALL_KNOBS: dict[str, st.SearchStrategy] = {
    "seed": st.integers(0, 2**31),
    "ticks": st.integers(2, 4),
    "embedding_dim": st.integers(2, 8),
    "topics.clusters": st.integers(1, 4),
    "population.users.count": st.integers(2, 120),
    "population.users.arrivals_per_tick": st.sampled_from([0.0, 0.5, 3.0]),
    "population.users.budget_max": st.integers(4, 12),
    "population.users.activity": st.floats(0.0, 1.0),
    "population.users.income_per_tick": st.integers(0, 100),
    "population.users.initial_wallet": st.integers(0, 10_000),
    "population.creators.count": st.integers(1, 12),
    "population.creators.publish_rate": st.floats(0.0, 2.0),
    "population.creators.clickbait_share": st.floats(0.0, 1.0),
    "population.creators.initial_wallet": st.integers(0, 50_000),
    "population.creators.entry.rate": st.sampled_from([0.0, 0.05, 0.5]),
    "population.goods.initial": st.integers(0, 40),
    "population.goods.lifetime": st.integers(1, 6),
    "population.goods.product_share": st.floats(0.0, 1.0),
    "population.advertisers.count": st.integers(0, 5),
    "population.advertisers.budget_per_tick": st.integers(0, 3_000),
    "population.advertisers.total_budget": st.integers(0, 20_000),
    "population.advertisers.learning_arms": st.integers(2, 6),
    "allocation.temperature": st.floats(0.05, 5.0),
    "allocation.ad_slots": st.integers(0, 3),
    "allocation.mask_consumed": st.booleans(),
    "allocation.consumed_memory": st.integers(1, 8),
    "allocation.block_elements": st.sampled_from([1024, 4096, 4_194_304]),
    "allocation.popularity_window": st.integers(1, 5),
    "allocation.learned.retrain_every": st.integers(1, 3),
    "allocation.learned.rank": st.integers(1, 4),
    "allocation.learned.log_ticks": st.integers(1, 4),
    "allocation.fairness_floor": st.sampled_from([0.0, 0.1, 0.5]),
    "allocation.creator_cap": st.sampled_from([1.0, 0.5, 0.2]),
    "allocation.engagement_weight": st.sampled_from([0.0, 0.5]),
    "circulation.platform_take_rate": st.floats(0.0, 1.0),
    "circulation.platform_initial_wallet": st.integers(0, 5_000),
    "circulation.attention_reward": st.integers(0, 5),
    "circulation.clickbait_penalty.threshold": st.sampled_from([0.0, 0.1]),
    "circulation.clickbait_penalty.min_exposures": st.integers(1, 5),
    "circulation.min_quality": st.sampled_from([0.0, 0.3]),
    "circulation.creator_payout.pool_share": st.floats(0.0, 1.0),
    "circulation.auction.reserve_price": st.integers(0, 50),
    "population.creators.adaptation.candidates": st.integers(1, 4),
    "metrics.homogenization_pairs": st.integers(1, 16),
    "population.users.choice.n": st.integers(1, 4),
    "population.users.choice.position_bias": st.sampled_from([0.0, 1.0, 2.5]),
    "population.creators.exit.min_share": st.sampled_from([0.0, 0.1, 0.5]),
    "circulation.exposure_pay.per_exposure": st.integers(0, 5),
    "circulation.exposure_pay.per_engagement": st.integers(0, 20),
}
SMALL_KNOBS = {key: value for key, value in SMALL_KNOBS.items() if key in LEAVES}  # keys renamed elsewhere drop out


@st.composite
def valid_scenarios(draw: st.DrawFn, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    flat: dict[str, Any] = {"name": "prop"}
    for key, strategy in SMALL_KNOBS.items():
        if draw(st.booleans()):
            flat[key] = draw(strategy)
    for key, choices in CHOICES.items():
        flat[key] = draw(st.sampled_from(choices))
    if draw(st.booleans()) and "metrics.agent_panels.every" in LEAVES:
        flat["metrics.agent_panels.every"] = draw(st.integers(1, 3))
        flat["metrics.agent_panels.sample"] = draw(st.integers(1, 10))
    flat.update(fixed or {})
    flat.setdefault("population.users.count", 40)
    flat.setdefault("population.creators.count", 5)
    flat.setdefault("population.goods.initial", 15)
    flat.setdefault("population.advertisers.count", 3)
    flat.setdefault("embedding_dim", 4)
    flat.setdefault("ticks", 3)
    # The budget's median may not exceed its cap.
    flat["population.users.budget"] = {"median": float(min(4, flat.get("population.users.budget_max", 32))), "sigma": 0.5}
    # Orthogonal centres need clusters ≤ embedding_dim (a simplex one more).
    if flat["topics.geometry"] != "random":
        flat["topics.clusters"] = min(flat.get("topics.clusters", 8), flat["embedding_dim"])
    return nested(flat)


def run_checked(data: dict[str, Any]) -> AttentionMarket:
    model = AttentionMarket(load_scenario(data))
    assert model.check_invariants
    while model.running:
        model.step()  # raises InvariantViolation on any broken invariant
    metrics = model.metrics
    assert len(metrics) == model.config.ticks
    assert (metrics["money_conservation_error"] == 0).all()
    assert (metrics["attention_allocated"] <= metrics["attention_supplied"]).all()
    return model


@settings(max_examples=60, **SETTINGS)
@given(valid_scenarios())
def test_random_valid_scenarios_run_with_every_invariant_holding(data):
    run_checked(data)


def pairwise_cover(axes: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """A small set of combinations in which every pair of values of every two axes appears (greedy)."""
    keys = list(axes)
    uncovered = {
        (a, va, b, vb) for a, b in itertools.combinations(keys, 2) for va in axes[a] for vb in axes[b]
    }
    rows: list[dict[str, Any]] = []
    while uncovered:
        best, best_gain = None, -1
        for values in itertools.product(*(axes[key] for key in keys)):
            row = dict(zip(keys, values))
            gain = sum((a, row[a], b, row[b]) in uncovered for a, b in itertools.combinations(keys, 2))
            if gain > best_gain:
                best, best_gain = row, gain
        assert best is not None
        rows.append(best)
        uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(keys, 2)}
    return rows


COVER = pairwise_cover({key: CHOICES[key] for key in MAIN_AXES})


def test_the_cover_holds_every_pair():
    for a, b in itertools.combinations(MAIN_AXES, 2):
        seen = {(row[a], row[b]) for row in COVER}
        assert seen == set(itertools.product(CHOICES[a], CHOICES[b]))


@pytest.mark.parametrize("combo", COVER, ids=["-".join(str(value) for value in row.values()) for row in COVER])
def test_every_pair_of_rules_runs_with_every_invariant_holding(combo):
    flat = {
        "name": "pairs",
        "seed": 3,
        "ticks": 3,
        "embedding_dim": 4,
        "population.users.count": 60,
        "population.creators.count": 6,
        "population.goods.initial": 20,
        "population.advertisers.count": 3,
        **combo,
    }
    run_checked(nested(flat))


@settings(max_examples=20, **SETTINGS)
@given(valid_scenarios(fixed={"ticks": 5}), st.integers(1, 4), st.data())
def test_a_checkpoint_restored_mid_run_ends_exactly_like_a_run_in_one_go(tmp_path_factory, data, stop_at, _draw):
    scenario = load_scenario(data)
    whole = AttentionMarket(scenario)
    while whole.running:
        whole.step()
    first = AttentionMarket(scenario)
    for _ in range(stop_at):
        first.step()
    path = Path(tmp_path_factory.mktemp("ckpt")) / "checkpoint.pkl"
    save_checkpoint(first, path)
    resumed = load_checkpoint(path)
    assert resumed.market.tick == stop_at
    while resumed.running:
        resumed.step()
    assert resumed.metrics.equals(whole.metrics)
    assert resumed.rng.bit_generator.state == whole.rng.bit_generator.state
    if whole.panels is not None:
        for population, frame in whole.panels.frames().items():
            assert resumed.panels.frames()[population].equals(frame)


# --- invalid scenarios ------------------------------------------------------------------------------

NUMERIC = {key: info for key, info in LEAVES.items() if info.annotation in (int, float)}
BOUNDED = {key: info for key, info in NUMERIC.items() if bounds(info)}
FLOATS = [key for key, info in NUMERIC.items() if info.annotation is float]
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in LEAVES if "." in key}) + [""]


def out_of_range(info: Any) -> list[Any]:
    found = bounds(info)
    whole = info.annotation is int
    values: list[Any] = []
    if "ge" in found:
        values.append(found["ge"] - 1 if whole else found["ge"] - 0.5)
    if "gt" in found:
        values.append(found["gt"] if not whole else found["gt"])
    if "le" in found:
        values.append(found["le"] + 1 if whole else found["le"] + 0.5)
    if "lt" in found:
        values.append(found["lt"])
    return values


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any]:
    """(dotted key, bad value) for one mutation; the key is what the error must name."""
    kind = draw(st.sampled_from(["wrong_type", "out_of_range", "non_finite", "unknown_key", "unknown_rule"]))
    if kind == "wrong_type":
        key = draw(st.sampled_from(sorted(LEAVES)))
        info = LEAVES[key]
        if info.annotation is str:
            return key, draw(st.sampled_from([5, [1], {"a": 1}, None]))
        if info.annotation is bool:
            return key, draw(st.sampled_from(["yes", 2, [True]]))
        if literal_choices(info):
            return key, draw(st.sampled_from([7, ["x"], {"a": 1}]))
        if info.annotation is int:
            return key, draw(st.sampled_from(["abc", 1.5, True, [1], {"a": 1}]))
        return key, draw(st.sampled_from(["abc", True, [0.5], {"a": 1}]))
    if kind == "out_of_range":
        key = draw(st.sampled_from(sorted(BOUNDED)))
        return key, draw(st.sampled_from(out_of_range(BOUNDED[key])))
    if kind == "non_finite":
        return draw(st.sampled_from(FLOATS)), draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if kind == "unknown_key":
        section = draw(st.sampled_from(SECTIONS))
        name = draw(st.sampled_from(["zzz", "cuont", "rules", "tmperature"]))
        return (f"{section}.{name}" if section else name), draw(st.sampled_from([1, "x", 0.5]))
    key = draw(st.sampled_from(sorted(CHOICES)))
    return key, draw(st.sampled_from(["magic", "nonexistent_rule", "SECOND_PRICE", ""]))


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(float, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float", ".nan" if math.isnan(value) else ".inf" if value == math.inf else "-.inf" if value == -math.inf else repr(value)))


@settings(max_examples=150, **SETTINGS)
@given(valid_scenarios(), mutations())
def test_a_mutated_scenario_is_refused_with_exit_2_and_no_traceback(tmp_path_factory, data, mutation):
    key, value = mutation
    mutated = copy.deepcopy(data)
    _set(mutated, key, value)
    path = Path(tmp_path_factory.mktemp("bad")) / "bad.yaml"
    path.write_text(yaml.dump(mutated, Dumper=_Dumper, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path)])
    explain = f"{key}={value!r}\nexit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    assert result.exit_code == 2, explain
    assert "Traceback" not in result.stderr, explain
    assert result.exception is None or isinstance(result.exception, SystemExit), explain
    lines = result.stderr.strip().splitlines()
    assert lines and all(ISSUE_LINE.match(line) for line in lines), explain
    assert all(line.startswith(f"{path}:") for line in lines), explain
    # The mutated key (or, for a mapping put where a value belongs, a key inside it) is named.
    assert any(f": {key}" in line for line in lines), explain


@settings(max_examples=40, **SETTINGS)
@given(valid_scenarios(), mutations())
def test_a_mutated_set_option_is_refused_with_exit_2(tmp_path_factory, data, mutation):
    key, value = mutation
    if isinstance(value, (dict, list)) or value is None:
        return  # --set takes scalars
    path = Path(tmp_path_factory.mktemp("set")) / "ok.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    text = ".nan" if isinstance(value, float) and math.isnan(value) else ".inf" if value == math.inf else "-.inf" if value == -math.inf else value
    text = "true" if value is True else str(text)
    result = CliRunner().invoke(app, ["validate", str(path), "--set", f"{key}={text}"])
    explain = f"{key}={text}\nexit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    if result.exit_code == 0:
        # A string that happens to be valid where a string belongs (e.g. name=x): not a mutation.
        assert LEAVES.get(key) is not None and LEAVES[key].annotation is str, explain
        return
    assert result.exit_code == 2, explain
    assert "Traceback" not in result.stderr, explain
    lines = result.stderr.strip().splitlines()
    assert lines and all(ISSUE_LINE.match(line) for line in lines), explain
    assert any(line.startswith("--set:1:1: ") for line in lines), explain
