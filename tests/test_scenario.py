"""The scenario schema and loader: refusals name the dotted key and point at the YAML."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import TINY

from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    _compose_with_positions,
    load_scenario,
    parse_override_value,
    with_overrides,
)

BASELINE = Path(__file__).resolve().parent.parent / "scenarios" / "baseline.yaml"


def issues_of(source, overrides=None):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(source, overrides)
    issues = caught.value.issues
    assert issues, "a ScenarioError without issues"
    return issues


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_defaults_make_a_valid_scenario():
    scenario = load_scenario({})
    assert isinstance(scenario, Scenario)
    assert scenario.allocation.rule == "attention_softmax"
    assert scenario.sweep is None


def test_bundled_baseline_loads_with_the_documented_values():
    scenario = load_scenario(BASELINE)
    assert scenario.name == "baseline" and scenario.seed == 42 and scenario.ticks == 100
    assert scenario.population.users.count == 10_000
    assert scenario.population.creators.count == 200
    assert scenario.population.goods.initial == 2_000
    assert scenario.population.advertisers.count == 20
    assert scenario.embedding_dim == 16
    assert scenario.allocation.temperature == 1.0 and scenario.allocation.ad_slots == 2
    assert scenario.circulation.platform_take_rate == 0.3
    assert scenario.circulation.creator_payout.rule == "exposure"
    assert scenario.circulation.auction.format == "second_price"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"population.users.count": -1}, "population.users.count"),
        ({"population.creators.count": -5}, "population.creators.count"),
        ({"population.advertisers.count": -1}, "population.advertisers.count"),
        ({"population.goods.initial": -1}, "population.goods.initial"),
        ({"allocation.temperature": 0}, "allocation.temperature"),
        ({"allocation.temperature": -0.5}, "allocation.temperature"),
        ({"circulation.platform_take_rate": -0.01}, "circulation.platform_take_rate"),
        ({"circulation.platform_take_rate": 1.5}, "circulation.platform_take_rate"),
        ({"allocation.rule": "magic"}, "allocation.rule"),
        ({"circulation.creator_payout.rule": "magic"}, "circulation.creator_payout.rule"),
        ({"circulation.auction.format": "dutch"}, "circulation.auction.format"),
        ({"allocation.wibble": 1}, "allocation.wibble"),
        ({"wibble": 1}, "wibble"),
        ({"population.users.budget": {"median": 8, "mean": 3}}, "population.users.budget.mean"),
        ({"allocation.temperature": float("nan")}, "allocation.temperature"),
        ({"allocation.temperature": float("inf")}, "allocation.temperature"),
        ({"circulation.platform_take_rate": float("nan")}, "circulation.platform_take_rate"),
        ({"population.users.churn.threshold": float("-inf")}, "population.users.churn.threshold"),
        ({"population.users.budget.median": float("nan")}, "population.users.budget.median"),
        ({"population.users.income_per_tick": float("inf")}, "population.users.income_per_tick"),
        ({"population.users.count": 2.5}, "population.users.count"),
        ({"ticks": "many"}, "ticks"),
    ],
)
def test_bad_values_are_refused_with_their_dotted_key(override, key):
    issues = issues_of(dict(TINY), override)
    assert [issue.key for issue in issues] == [key]
    assert key in str(issues[0])


def test_unknown_rule_names_the_choices():
    (issue,) = issues_of({"allocation": {"rule": "magic"}})
    assert "magic" in issue.message and "attention_softmax" in issue.message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """
        name: several
        ticks: 0
        population:
          users:
            count: -5
          creators: {count: 3, bogus: 1}
        allocation:
          rule: nope
          temperature: .nan
        circulation:
          platform_take_rate: 1.5
        typo_section: {}
        """,
    )
    issues = issues_of(path)
    assert {issue.key for issue in issues} == {
        "ticks",
        "population.users.count",
        "population.creators.bogus",
        "allocation.rule",
        "allocation.temperature",
        "circulation.platform_take_rate",
        "typo_section",
    }
    assert all(issue.source == str(path) for issue in issues)


def test_line_and_column_point_at_the_key(tmp_path):
    path = write(
        tmp_path,
        """
        name: located
        population:
          users:
            count: -5
          creators: {count: 3, bogus: 1}
        allocation:
            temperature: 0
        circulation:
          platform_take_rate: 1.5
        """,
    )
    where = {issue.key: (issue.line, issue.column) for issue in issues_of(path)}
    assert where == {
        "population.users.count": (4, 5),
        "population.creators.bogus": (5, 24),
        "allocation.temperature": (7, 5),
        "circulation.platform_take_rate": (9, 3),
    }
    (first,) = [i for i in issues_of(path) if i.key == "population.users.count"]
    assert str(first).startswith(f"{path}:4:5: population.users.count: ")


def test_a_missing_nested_key_points_at_its_section(tmp_path):
    path = write(
        tmp_path,
        """
        population:
          users:
            budget: {sigma: 0.1}
        """,
    )
    (issue,) = issues_of(path)
    assert issue.key == "population.users.budget.median"
    assert (issue.line, issue.column) == (3, 5)


def test_overrides_with_dotted_keys_apply():
    scenario = load_scenario(
        dict(TINY),
        {"ticks": 3, "allocation.temperature": 0.5, "population.users.churn.patience": 2, "circulation.auction.format": "gsp"},
    )
    assert scenario.ticks == 3
    assert scenario.allocation.temperature == 0.5
    assert scenario.population.users.churn.patience == 2
    assert scenario.circulation.auction.format == "gsp"
    assert scenario.population.users.count == 300  # untouched keys stay


def test_overrides_apply_on_top_of_a_file(tmp_path):
    path = write(tmp_path, "name: f\nallocation: {temperature: 2.0}\n")
    scenario = load_scenario(path, {"allocation.temperature": 0.25, "allocation.ad_slots": 0})
    assert scenario.allocation.temperature == 0.25 and scenario.allocation.ad_slots == 0


def test_overrides_are_validated_and_located_at_their_option(tmp_path):
    path = write(tmp_path, "name: f\n")
    issues = issues_of(path, {"ticks": 5, "allocation.temperature": -1, "allocation.foo": 2})
    assert [(i.source, i.line, i.key) for i in issues] == [
        ("overrides['allocation.temperature']", 1, "allocation.temperature"),
        ("overrides['allocation.foo']", 1, "allocation.foo"),
    ]
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, {"ticks": 5, "allocation.temperature": -1, "allocation.foo": 2}, overrides_from="--set")
    cli = caught.value.issues
    assert [(i.source, i.line, i.key) for i in cli] == [("--set", 2, "allocation.temperature"), ("--set", 3, "allocation.foo")]


def test_an_override_through_a_value_is_refused():
    (issue,) = issues_of(dict(TINY), {"ticks.x": 1})
    assert issue.key == "ticks.x" and issue.source == "overrides['ticks.x']" and "value" in issue.message
    (issue,) = issues_of({}, {"allocation..temperature": 1})
    assert issue.source == "overrides['allocation..temperature']"


def test_with_overrides_returns_a_validated_copy():
    base = load_scenario(dict(TINY))
    changed = with_overrides(base, {"allocation.temperature": 0.1})
    assert changed.allocation.temperature == 0.1 and base.allocation.temperature == 1.0
    with pytest.raises(ScenarioError):
        with_overrides(base, {"allocation.temperature": 0})


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.5", 0.5), ("3", 3), ("true", True), ("top_k", "top_k"), ("null", None), ("[1, 2]", [1, 2]), ("a: [", "a: [")],
)
def test_override_values_parse_as_yaml_scalars(text, value):
    assert parse_override_value(text) == value


def test_python_yaml_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f'name: evil\nseed: !!python/object/apply:os.system ["touch {marker}"]\n')
    (issue,) = issues_of(path)
    assert issue.key == "<yaml>" and issue.line == 2
    assert "refused" in issue.message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [("", "<root>"), ("- a\n- b\n", "<root>"), ("name: x\nticks: [1\n", "<yaml>"), ("just a string\n", "<root>")],
)
def test_files_that_are_not_mappings_are_refused(tmp_path, text, key):
    (issue,) = issues_of(write(tmp_path, text))
    assert issue.key == key


def test_unreadable_and_binary_files_are_refused(tmp_path):
    (issue,) = issues_of(tmp_path / "missing.yaml")
    assert issue.key == "<file>"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe\n")
    (issue,) = issues_of(binary)
    assert issue.key == "<file>"


def test_each_sweep_value_must_make_a_valid_scenario(tmp_path):
    path = write(
        tmp_path,
        """
        name: sweeping
        sweep:
          grid:
            allocation.temperature: [0.5, -1]
            allocation.nosuch: [1]
          replications: 2
        """,
    )
    issues = issues_of(path)
    assert {i.key for i in issues} == {"sweep.grid.allocation.temperature[1]", "sweep.grid.allocation.nosuch[0]"}
    lines = {i.key: i.line for i in issues}
    assert lines == {"sweep.grid.allocation.temperature[1]": 4, "sweep.grid.allocation.nosuch[0]": 5}


def test_a_valid_sweep_loads(tmp_path):
    path = write(
        tmp_path,
        """
        name: sweeping
        sweep:
          grid: {allocation.temperature: [0.3, 1.0], circulation.auction.format: [gsp, second_price]}
          replications: 3
        """,
    )
    scenario = load_scenario(path)
    assert scenario.sweep.replications == 3
    assert scenario.sweep.grid["allocation.temperature"] == [0.3, 1.0]


def test_budget_median_above_the_cap_is_refused():
    issues = issues_of({"population": {"users": {"budget": {"median": 40}}}})
    assert any(issue.key == "population.users.budget" and "budget_max" in issue.message for issue in issues)


def test_budget_median_above_the_cap_points_at_the_median(tmp_path):
    path = write(tmp_path, "population:\n  users:\n    budget: {median: 40}\n")
    (issue,) = issues_of(path)
    assert issue.key == "population.users.budget"
    assert issue.line == 3


def test_duplicate_keys_are_refused(tmp_path):
    path = write(tmp_path, "name: dup\nticks: 5\nticks: 7\n")
    (issue,) = issues_of(path)
    assert issue.key == "ticks" and issue.line in (2, 3)


def test_override_and_file_errors_are_reported_together(tmp_path):
    path = write(tmp_path, "name: f\nticks: 0\n")
    issues = issues_of(path, {"ticks.x": 1, "allocation.temperature": -1})
    assert {i.key for i in issues} >= {"ticks.x", "ticks", "allocation.temperature"}


def test_nested_yaml_aliases_do_not_explode():
    lines = ["l0: &l0 {x: 1, y: 2}"] + [f"l{i}: &l{i} {{p: *l{i - 1}, q: *l{i - 1}}}" for i in range(1, 16)]
    text = "\n".join(lines) + "\n"
    try:
        located = _compose_with_positions(text, "bomb.yaml")
    except ScenarioError:
        return  # refusing aliases outright is a fine fix
    assert len(located.positions) < 1_000
