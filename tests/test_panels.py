"""Agent panels: the right rows, columns and ticks; values that agree with the market; a sample
fixed by the seed; and a simulation that does not change when they are on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tiny
from typer.testing import CliRunner

import simulator
from simulator import AttentionMarket
from simulator.cli.main import app
from simulator.metrics import panels
from simulator.runs.rundir import metrics_parquet_bytes
from simulator.scenario.schema import ScenarioError

# Entrants on both sides (user arrivals, creator entry) and exits, so the sample's growth and every
# status are exercised: cheap goods keep enough creators profitable for entry, a short patience
# makes the loss-makers leave.
DYNAMIC = {
    "population.users.arrivals_per_tick": 6.0,
    "population.creators.entry.rate": 0.05,
    "population.creators.cost_per_good": 100,
    "population.creators.effort_cost": 0,
    "population.creators.exit.patience": 3,
    "population.users.churn.threshold": 0.2,  # some users leave, so every panel status shows up
}


def with_panels(every: int = 1, sample: int = 25, **extra) -> simulator.Scenario:
    return tiny({**DYNAMIC, "metrics.agent_panels.every": every, "metrics.agent_panels.sample": sample, **extra})


def run(scenario: simulator.Scenario) -> AttentionMarket:
    model = AttentionMarket(scenario)
    while model.running:
        model.step()
    return model


# --- the switch ----------------------------------------------------------------------------------


def test_panels_are_off_by_default():
    scenario = tiny()
    assert scenario.metrics.agent_panels is None
    assert AttentionMarket(scenario).panels is None


def test_panels_config_is_validated():
    assert with_panels(every=3, sample=7).metrics.agent_panels.every == 3
    for bad in ({"metrics.agent_panels.every": 0}, {"metrics.agent_panels.sample": 0}, {"metrics.agent_panels.size": 5}):
        with pytest.raises(ScenarioError):
            tiny(bad)


def test_metrics_are_byte_identical_with_panels_on_and_off():
    off = run(tiny({**DYNAMIC, "ticks": 12}))
    on = run(with_panels(every=1, sample=1000, ticks=12))
    sparse = run(with_panels(every=5, sample=3, ticks=12))
    assert on.panels is not None and len(on.panels.ticks) == 12
    baseline = metrics_parquet_bytes(off.metrics)
    assert metrics_parquet_bytes(on.metrics) == baseline
    assert metrics_parquet_bytes(sparse.metrics) == baseline
    assert off.metrics["creator_entries"].sum() > 0, "the scenario should have creator entrants"
    assert off.metrics["creator_exits"].sum() > 0, "the scenario should have creator exits"
    assert set(on.panels.frame(panels.CREATORS)["status"]) == set(panels.CREATOR_STATUSES)
    assert set(on.panels.frame(panels.USERS)["status"]) == set(panels.USER_STATUSES)


# --- shape -------------------------------------------------------------------------------------


def test_frames_have_the_documented_columns_and_dtypes():
    model = run(with_panels(every=1, sample=10))
    frames = model.panels.frames()
    assert set(frames) == set(panels.POPULATIONS)
    dim = model.config.embedding_dim
    for population, frame in frames.items():
        assert list(frame.columns) == panels.columns(population, dim)
        assert frame["tick"].dtype == np.int64 and frame["agent"].dtype == np.int64
        assert not frame.empty
    assert frames["users"]["status"].isin(panels.USER_STATUSES).all()
    assert frames["creators"]["status"].isin(panels.CREATOR_STATUSES).all()
    assert frames["users"]["interest_0"].dtype == np.float32
    assert frames["users"]["utility"].dtype == np.float64


@pytest.mark.parametrize("every", [1, 3, 4])
def test_recorded_ticks_are_first_every_nth_and_last(every: int):
    model = run(with_panels(every=every, sample=5, ticks=10))
    expected = sorted({*range(1, 11, every), 10})
    assert model.panels.ticks == expected
    for frame in model.panels.frames().values():
        assert sorted(frame["tick"].unique()) == expected


def test_one_row_per_sampled_agent_per_recorded_tick():
    scenario = with_panels(every=2, sample=15, ticks=9)
    model = run(scenario)
    frames = model.panels.frames()
    for frame in frames.values():
        assert not frame.duplicated(["tick", "agent"]).any()
        counts = frame.groupby("tick").size()
        assert counts.is_monotonic_increasing  # entrants join, nobody leaves the sample
    users, creators, advertisers = frames["users"], frames["creators"], frames["advertisers"]
    first_users = users[users["tick"] == 1]["agent"]
    assert (first_users < 300).sum() == 15  # 15 of the 300 users at the start; arrivals of tick 1 may join too
    assert len(creators[creators["tick"] == 1]) >= 15
    # 4 advertisers, fewer than the sample: all of them, every recorded tick
    assert sorted(advertisers["agent"].unique()) == list(range(scenario.population.advertisers.count))
    assert len(advertisers) == scenario.population.advertisers.count * len(model.panels.ticks)


def test_small_populations_are_taken_whole():
    model = run(with_panels(sample=10_000, ticks=3))
    frames = model.panels.frames()
    market = model.market
    last = frames["creators"][frames["creators"]["tick"] == 3]
    assert sorted(last["agent"]) == list(range(market.creators_born))
    last_users = frames["users"][frames["users"]["tick"] == 3]
    assert sorted(last_users["agent"]) == list(range(market.users_born))


# --- values ------------------------------------------------------------------------------------


def test_values_agree_with_the_market_and_the_metrics():
    model = run(with_panels(sample=10_000, ticks=6))
    frames = model.panels.frames()
    market, metrics = model.market, model.metrics
    users, creators = frames["users"], frames["creators"]
    last = metrics.iloc[-1]

    final_creators = creators[creators["tick"] == 6].set_index("agent")
    np.testing.assert_array_equal(final_creators["wallet"], market.ledger.balances["creators"][final_creators.index])
    np.testing.assert_array_equal(final_creators["status"] == "active", market.creators.alive[final_creators.index])
    final_users = users[users["tick"] == 6].set_index("agent")
    np.testing.assert_array_equal(final_users["wallet"], market.ledger.balances["users"][final_users.index])
    np.testing.assert_array_equal(final_users["status"] != "churned", market.users.alive[final_users.index])

    # With every agent sampled, the panels add up to the market's totals of each tick.
    for tick, row in metrics.set_index("tick").iterrows():
        u = users[users["tick"] == tick]
        c = creators[creators["tick"] == tick]
        active = u[u["utility"].notna()]  # showed up this tick: `active`, or `churned` on the tick of leaving
        assert set(active["status"]) <= {"active", "churned"}
        assert (active["status"] == "churned").sum() == row["churned_users"]
        assert len(active) == row["active_users"]
        assert active["budget"].sum() == row["attention_supplied"]
        assert active["exposures"].sum() + active["ads"].sum() == row["attention_allocated"]
        assert active["consumptions"].sum() == row["consumptions"]
        assert active["purchases"].sum() == row["purchases"]
        assert active["utility"].mean() == pytest.approx(row["user_utility_mean"], rel=1e-5)
        assert c["exposure"].sum() == active["exposures"].sum()
        assert c["income"].sum() == row["creator_sales"] + row["creator_payouts"]
        assert (c["status"] == "active").sum() == row["active_creators"]
    assert (users["status"] == "churned").groupby(users["tick"]).sum().diff().fillna(0).ge(0).all()
    assert last["alive_users"] == (users[users["tick"] == 6]["status"] != "churned").sum()

    advertisers = frames["advertisers"]
    per_tick = advertisers.groupby("tick")[["impressions", "clicks", "spend", "value"]].sum()
    np.testing.assert_array_equal(per_tick["impressions"], metrics["ad_impressions"])
    np.testing.assert_array_equal(per_tick["clicks"], metrics["ad_clicks"])
    np.testing.assert_array_equal(per_tick["spend"], metrics["ad_spend"])
    np.testing.assert_array_equal(per_tick["value"], metrics["advertiser_value"])


def test_vectors_are_unit_and_match_the_state():
    model = run(with_panels(sample=8, ticks=4))
    creators = model.panels.frame(panels.CREATORS)
    last = creators[creators["tick"] == 4]
    topics = panels.vectors(last)
    np.testing.assert_allclose(np.linalg.norm(topics, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(topics.astype(np.float32), model.market.creators.topic[last["agent"]])
    users = model.panels.frame(panels.USERS)
    assert panels.vectors(users).shape == (len(users), model.config.embedding_dim)


# --- the sample ----------------------------------------------------------------------------------


def test_sample_is_fixed_by_the_seed():
    def sample(**overrides) -> dict[str, list[int]]:
        frames = run(with_panels(sample=12, ticks=6, **overrides)).panels.frames()
        return {name: sorted(frame["agent"].unique()) for name, frame in frames.items()}

    first = sample()
    assert sample() == first
    assert sample(seed=8) != first
    # Recording less often draws the same initial sample (entrants are decided every tick either way).
    sparse = run(with_panels(every=4, sample=12, ticks=6)).panels.frames()
    assert sorted(sparse["users"]["agent"].unique()) == first["users"]


def test_sample_does_not_depend_on_the_model_stream():
    scenario = with_panels(sample=12)
    a = panels.PanelRecorder(scenario, simulator.market.populations.initial_state(scenario, np.random.default_rng(1)))
    b = panels.PanelRecorder(scenario, simulator.market.populations.initial_state(scenario, np.random.default_rng(2)))
    for population in panels.POPULATIONS:
        np.testing.assert_array_equal(a.rows[population], b.rows[population])


def test_frames_are_equal_for_equal_runs():
    one = run(with_panels(sample=10, ticks=5)).panels.frames()
    two = run(with_panels(sample=10, ticks=5)).panels.frames()
    for name in panels.POPULATIONS:
        pd.testing.assert_frame_equal(one[name], two[name])
        assert panels.panel_parquet_bytes(one[name]) == panels.panel_parquet_bytes(two[name])


# --- files ---------------------------------------------------------------------------------------

SMALL = [
    "--set", "population.users.count=300",
    "--set", "population.creators.count=20",
    "--set", "population.goods.initial=60",
    "--set", "population.advertisers.count=4",
    "--set", "embedding_dim=8",
]  # fmt: skip


def test_attnsim_run_writes_panels_and_load_run_finds_them(tmp_path):
    out = tmp_path / "run"
    args = ["run", "scenarios/baseline.yaml", "--out", str(out), "--ticks", "5", *SMALL,
            "--set", "metrics.agent_panels.every=2", "--set", "metrics.agent_panels.sample=10"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (out / "agents").iterdir()) == ["advertisers.parquet", "creators.parquet", "users.parquet"]
    frame = simulator.load_run(out)
    assert frame.attrs["panels"] == ["users", "creators", "advertisers"]
    loaded = simulator.load_panels(out)
    assert sorted(loaded["users"]["tick"].unique()) == [1, 3, 5]

    scenario = simulator.load_scenario(frame.attrs["manifest"]["scenario"])
    in_python = simulator.run(scenario).model.panels.frames()
    for name in panels.POPULATIONS:
        pd.testing.assert_frame_equal(loaded[name], in_python[name])
    plots = {path.name for path in (out / "plots").glob("*.png")}
    assert {"money_flows.png", "lorenz.png", "exposure_rank.png", "topics.png"} <= plots

    # --force clears the earlier run's panels: a run without panels leaves none behind
    again = CliRunner().invoke(app, ["run", "scenarios/baseline.yaml", "--out", str(out), "--force", "--ticks", "2", "--no-plots", *SMALL])
    assert again.exit_code == 0, again.output
    assert simulator.load_run(out).attrs["panels"] == []
    assert simulator.load_panels(out) == {}


def test_run_without_panels_writes_no_agents_directory(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "scenarios/baseline.yaml", "--out", str(out), "--ticks", "2", "--no-plots", *SMALL])
    assert result.exit_code == 0, result.output
    assert not (out / "agents").exists()
    assert simulator.load_run(out).attrs["panels"] == []


def test_load_panels_of_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        simulator.load_panels(tmp_path / "nope")


# --- analysis helpers ----------------------------------------------------------------------------


def test_creator_totals_and_topic_fit():
    model = run(with_panels(sample=10_000, ticks=5))
    frames = model.panels.frames()
    creators, users = frames["creators"], frames["users"]
    totals = panels.creator_totals(creators)
    assert len(totals) == creators["agent"].nunique()
    assert totals["exposure"].sum() == creators["exposure"].sum()
    assert totals["income"].sum() == creators["income"].sum()
    assert (totals["active_ticks"] <= totals["ticks"]).all()

    fit = panels.topic_fit(creators, users, sharpness=4.0)
    assert fit.index.equals(creators.index)
    assert ((fit > 0) & (fit <= 1)).all()
    # a creator whose niche is every user's interest fits perfectly
    tick1 = creators[creators["tick"] == 1].iloc[:1].copy()
    audience = users[users["tick"] == 1].iloc[:3].copy()
    for column in [c for c in audience.columns if c.startswith("interest_")]:
        audience[column] = tick1[column.replace("interest_", "topic_")].iloc[0]
    assert panels.topic_fit(tick1, audience).iloc[0] == pytest.approx(1.0, rel=1e-5)
