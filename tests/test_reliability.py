"""Invariants, checkpoints and the memory check, in process.

(Faults in real processes are in test_faults.py; bad input through the CLI in test_bad_inputs.py;
random scenarios in test_properties.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny
from typer.testing import CliRunner

import simulator
import simulator.model
from simulator.cli.main import app
from simulator.market.state import Users
from simulator.metrics.invariants import (
    INVARIANTS,
    MAX_AGENTS,
    ConservationError,
    InvariantViolation,
    check_tick,
)
from simulator.model import AttentionMarket, advance
from simulator.rules.allocation.learned import LearnedModel
from simulator.runs import checkpoint as ckpt
from simulator.runs import driver, rundir
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.runs.memory import (
    BASELINE_BYTES,
    check_memory,
    estimate_memory,
    peak_rss_bytes,
    row_bytes,
)

ROOT = Path(__file__).resolve().parents[1]


def stepped(ticks: int = 2, overrides: dict | None = None) -> AttentionMarket:
    model = AttentionMarket(tiny(overrides))
    for _ in range(ticks):
        model.step()
    return model


# --- invariants ------------------------------------------------------------------------------------


def violation_of(model: AttentionMarket, **outputs) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as caught:
        check_tick(model.market, rule=model.rule, **outputs)
    return caught.value


def test_a_healthy_market_passes_every_invariant():
    model = stepped(3)
    outcome = advance(model.market, model.config, model.rules, model.rng)
    model.market.ledger.take_flows()
    check_tick(model.market, arrivals=outcome.arrivals, allocation=outcome.allocation, rule=model.rule)


def test_money_leak_is_the_money_conserved_invariant():
    model = stepped(1)
    model.market.ledger.balances["platform"][0] += 1
    with pytest.raises(ConservationError) as caught:
        model.step()
    assert caught.value.invariant == "money_conserved"
    assert caught.value.tick == 2
    assert isinstance(caught.value, InvariantViolation)
    assert simulator.model.ConservationError is ConservationError  # still importable from the model


def test_negative_wallet_names_the_account_rows():
    model = stepped(1)
    balances = model.market.ledger.balances["users"]
    moved = int(balances[3]) + 7
    balances[3] -= moved  # conserved: the money went to user 4
    balances[4] += moved
    found = violation_of(model)
    assert found.invariant == "non_negative_balances"
    assert found.agents == {"users": [3]}


def test_negative_budget_names_the_advertiser():
    model = stepped(1)
    model.market.advertisers.budget_per_tick[2] = -1
    found = violation_of(model)
    assert (found.invariant, found.agents) == ("non_negative_budgets", {"advertisers": [2]})


@pytest.mark.parametrize(("population", "field", "row"), [("users", "interest", 5), ("goods", "value_delivered", 7), ("creators", "profit_ema", 1)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_found_in_any_population(population, field, row, bad):
    model = stepped(1)
    array = getattr(getattr(model.market, population), field)
    if array.ndim == 2:
        array[row, 1] = bad
    else:
        array[row] = bad
    found = violation_of(model)
    assert found.invariant == "finite_floats"
    assert found.agents == {population: [row]}
    assert f"market.{population}.{field}" in found.message


def test_non_finite_floats_are_found_in_a_rules_state():
    """The walk is generic: the state a rule keeps (here the learned rule's model) is checked
    without being listed anywhere."""
    model = AttentionMarket(tiny({"allocation.rule": "learned"}))
    model.step()
    model.rule.model = LearnedModel(user_factor=np.array([[0.5, np.nan], [1.0, 2.0]]))
    found = violation_of(model)
    assert found.invariant == "finite_floats"
    assert "rule.model.user_factor" in found.message
    assert found.agents == {"rule.model.user_factor": [0]}


def test_exposures_beyond_a_users_budget():
    model = stepped(1)
    outcome = advance(model.market, model.config, model.rules, model.rng)
    model.market.ledger.take_flows()
    shown = np.count_nonzero(outcome.allocation.exposures >= 0, axis=1)
    index = int(np.flatnonzero(shown > 0)[0])
    outcome.arrivals.budgets[index] = 0
    found = violation_of(model, arrivals=outcome.arrivals, allocation=outcome.allocation)
    assert found.invariant == "exposures_within_budgets"
    assert found.agents == {"users": [int(outcome.allocation.users[index])]}


def test_dangling_goods_references():
    model = stepped(1)
    live = np.flatnonzero(model.market.goods.live)
    model.market.goods.owner[live[2]] = model.market.creators_born + 3
    found = violation_of(model)
    assert (found.invariant, found.agents) == ("goods_references_valid", {"goods": [int(live[2])]})

    model = stepped(1)
    model.market.users.history[9, 0] = model.market.uids.issued + 100
    found = violation_of(model)
    assert (found.invariant, found.agents) == ("goods_references_valid", {"users": [9]})


def test_offending_agents_are_capped_but_counted():
    model = stepped(1)
    model.market.users.fatigue[:100] = np.nan
    found = violation_of(model)
    assert found.agents["users"] == list(range(MAX_AGENTS))
    assert found.offending == 100
    assert set(found.to_dict()) == {"tick", "invariant", "message", "agents", "offending"}
    assert found.to_dict()["invariant"] in INVARIANTS


def test_a_violation_stops_the_model_before_the_tick_is_recorded(monkeypatch):
    original = simulator.model.advance

    def corrupting(market, *args, **kwargs):
        outcome = original(market, *args, **kwargs)
        if market.tick == 3:
            market.users.activity[11] = np.inf
        return outcome

    monkeypatch.setattr(simulator.model, "advance", corrupting)
    model = AttentionMarket(tiny())
    model.step()
    model.step()
    with pytest.raises(InvariantViolation) as caught:
        model.step()
    assert (caught.value.tick, caught.value.invariant, caught.value.agents) == (3, "finite_floats", {"users": [11]})
    assert model.metrics["tick"].tolist() == [1, 2]


def test_the_checks_can_be_switched_off():
    model = stepped(1)
    model.check_invariants = False
    model.market.users.activity[0] = np.nan  # would be caught; the run is on its own now
    model.step()


def test_the_cli_fails_the_run_and_records_the_violation(tmp_path, monkeypatch):
    original = simulator.model.advance

    def corrupting(market, *args, **kwargs):
        outcome = original(market, *args, **kwargs)
        if market.tick == 3:
            market.goods.value_delivered[np.flatnonzero(market.goods.live)[:2]] = np.nan
        return outcome

    monkeypatch.setattr(simulator.model, "advance", corrupting)
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(json.dumps({**json.loads(json.dumps(tiny().model_dump(mode="json"))), "ticks": 6}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--no-plots"])
    assert result.exit_code == 1, result.stderr
    assert "invariant finite_floats broken at tick 3" in result.stderr
    frame = rundir.load_run(out)
    manifest = frame.attrs["manifest"]
    assert manifest["status"] == "failed"
    assert manifest["violation"]["tick"] == 3
    assert manifest["violation"]["invariant"] == "finite_floats"
    assert len(manifest["violation"]["agents"]["goods"]) == 2
    assert "InvariantViolation" in manifest["error"]
    assert frame["tick"].tolist() == [1, 2]
    assert frame.attrs["summary"]["ticks"] == 2


# --- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_round_trip_continues_exactly(tmp_path):
    whole = stepped(10)
    part = stepped(4)
    path = save_checkpoint(part, tmp_path / "checkpoint.pkl")
    restored = load_checkpoint(path)
    assert (restored.steps, restored.time, restored.market.tick) == (4, 4.0, 4)
    result = simulator.run(restored.config, model=restored)
    assert result.completed
    pd.testing.assert_frame_equal(result.metrics, whole.metrics)
    header = ckpt.read_header(path)
    assert header["tick"] == 4 and header["version"] == ckpt.FORMAT_VERSION
    assert header["scenario_sha256"] == ckpt.scenario_digest(part.config)
    assert header["scenario"] == json.loads(json.dumps(part.config.model_dump(mode="json")))


def test_state_added_to_the_model_later_is_checkpointed_too(tmp_path):
    model = stepped(2)
    model.extra_memory = {"window": [np.arange(5, dtype=np.int64), np.linspace(0, 1, 3)], "count": 7}
    restored = load_checkpoint(save_checkpoint(model, tmp_path / "c.pkl"))
    assert restored.extra_memory["count"] == 7
    np.testing.assert_array_equal(restored.extra_memory["window"][1], np.linspace(0, 1, 3))


@pytest.mark.parametrize("holding", [lambda: (lambda: 1), lambda: open(__file__, "rb"), lambda: pd.DataFrame({"a": [1]})])
def test_state_a_checkpoint_may_not_hold_is_refused_when_saving(tmp_path, holding):
    model = stepped(1)
    path = tmp_path / "checkpoint.pkl"
    save_checkpoint(model, path)
    good = path.read_bytes()
    model.unsupported = holding()
    with pytest.raises(ckpt.CheckpointError, match="cannot checkpoint this model"):
        save_checkpoint(model, path)
    assert path.read_bytes() == good, "a failed save leaves the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pkl"]


def test_a_save_killed_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = stepped(1)
    path = save_checkpoint(model, tmp_path / "checkpoint.pkl")
    good = path.read_bytes()
    model.step()
    write_array = np.lib.format.write_array
    written: list[int] = []

    def exploding(stream, values, **options):
        if written:
            raise KeyboardInterrupt  # as a second Ctrl-C in the middle of writing
        written.append(1)
        write_array(stream, values, **options)

    monkeypatch.setattr(np.lib.format, "write_array", exploding)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path)
    assert written, "the save was cut after it began writing"
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pkl"]


def test_cli_run_checkpoints_and_removes_the_checkpoint_when_complete(tmp_path, monkeypatch):
    saved: list[int] = []
    original = ckpt.save_checkpoint

    def spy(model, path):
        saved.append(model.market.tick)
        return original(model, path)

    monkeypatch.setattr(driver, "save_checkpoint", spy)
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(json.dumps({**tiny().model_dump(mode="json"), "ticks": 7}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--no-plots", "--checkpoint-every", "2"])
    assert result.exit_code == 0, result.stderr
    assert saved == [2, 4, 6]
    assert not (out / "checkpoint.pkl").exists()
    manifest = rundir.read_manifest(out)
    assert manifest["checkpoint_every"] == 2 and manifest["plots"] is False


def test_a_checkpoint_that_cannot_be_written_warns_and_the_run_goes_on(tmp_path, monkeypatch):
    def failing(model, path):
        raise ckpt.CheckpointError(path, "cannot checkpoint this model: disk says no")

    monkeypatch.setattr(driver, "save_checkpoint", failing)
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(json.dumps({**tiny().model_dump(mode="json"), "ticks": 5}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--no-plots", "--checkpoint-every", "1"])
    assert result.exit_code == 0, result.stderr
    manifest = rundir.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["ticks_done"] == 5
    assert any("checkpoints stopped at tick 1" in warning for warning in manifest["warnings"])
    assert "disk says no" in result.stderr


def test_run_force_clears_an_old_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pkl").write_bytes(b"stale")
    rundir.prepare_output_dir(out, force=True)
    assert not (out / "checkpoint.pkl").exists()


# --- the sweep hook ----------------------------------------------------------------------------------


def test_resume_or_start_runs_skips_and_resumes(tmp_path):
    scenario = tiny({"ticks": 6})
    fresh = driver.resume_or_start(tmp_path / "fresh", scenario, checkpoint_every=2)
    assert fresh.status == "complete" and fresh.resumed_from is None and not fresh.skipped
    again = driver.resume_or_start(tmp_path / "fresh", scenario, checkpoint_every=2)
    assert again.skipped and again.status == "complete"
    pd.testing.assert_frame_equal(again.metrics, fresh.metrics, check_dtype=False)

    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    half = driver.resume_or_start(tmp_path / "half", scenario, checkpoint_every=2, should_stop=stop_after_three)
    assert half.status == "interrupted"
    assert ckpt.read_header(tmp_path / "half" / "checkpoint.pkl")["tick"] == 3
    finished = driver.resume_or_start(tmp_path / "half", scenario, checkpoint_every=2)
    assert finished.status == "complete" and finished.resumed_from == 3
    assert (tmp_path / "half" / "metrics.parquet").read_bytes() == (tmp_path / "fresh" / "metrics.parquet").read_bytes()

    with pytest.raises(ckpt.ResumeError, match="different scenario"):
        driver.resume_or_start(tmp_path / "half", tiny({"ticks": 7}))


def test_resume_or_start_restarts_from_a_damaged_checkpoint(tmp_path):
    scenario = tiny({"ticks": 5})
    reference = driver.resume_or_start(tmp_path / "reference", scenario)
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    driver.resume_or_start(tmp_path / "run", scenario, checkpoint_every=1, should_stop=stop_after_two)
    (tmp_path / "run" / "checkpoint.pkl").write_bytes(b"garbage")
    outcome = driver.resume_or_start(tmp_path / "run", scenario, checkpoint_every=1)
    assert outcome.status == "complete" and outcome.resumed_from == 0
    assert (tmp_path / "run" / "checkpoint.pkl.corrupt").exists()
    assert "unusable" in rundir.read_manifest(tmp_path / "run")["resumes"][-1]["notes"][0]
    assert (tmp_path / "run" / "metrics.parquet").read_bytes() == (tmp_path / "reference" / "metrics.parquet").read_bytes()
    assert reference.status == "complete"


# --- the memory check --------------------------------------------------------------------------------


def test_row_bytes_follow_the_dtypes_in_state_py():
    users = Users.empty(1000, 16, history_width=32)
    actual = sum(getattr(users, name).nbytes for name in users.__dataclass_fields__)
    assert actual == 1000 * row_bytes(Users, 16, {"history": 32})


@pytest.mark.parametrize(("users", "rule"), [(2_000, "attention_softmax"), (15_000, "attention_softmax"), (5_000, "top_k")])
def test_the_estimate_is_within_a_factor_2_of_tracemalloc(users, rule):
    scenario = simulator.load_scenario(
        ROOT / "scenarios" / "baseline.yaml", overrides={"population.users.count": users, "ticks": 3, "allocation.rule": rule}
    )
    estimate = estimate_memory(scenario).total - BASELINE_BYTES
    tracemalloc.start()
    try:
        model = AttentionMarket(scenario)
        while model.running:
            model.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.5 <= estimate / peak <= 2.0, f"estimate {estimate:,} vs traced peak {peak:,}"


def test_the_estimate_is_within_a_factor_2_of_peak_rss():
    script = (
        "import simulator\n"
        "from simulator.runs.memory import estimate_memory, peak_rss_bytes\n"
        "s = simulator.load_scenario('scenarios/baseline.yaml', overrides={'population.users.count': 20000, 'ticks': 2})\n"
        "m = simulator.AttentionMarket(s)\n"
        "while m.running: m.step()\n"
        "print(estimate_memory(s).total, peak_rss_bytes())\n"
    )
    # Compile (and cache) the numba kernels first: a process that compiles them peaks higher
    # for a moment, once per installation, which the estimate does not model.
    warm = "import simulator\nsimulator.run(simulator.load_scenario('scenarios/baseline.yaml', overrides={'population.users.count': 500, 'ticks': 2}))\n"
    subprocess.run([sys.executable, "-c", warm], check=True, capture_output=True, timeout=300, cwd=ROOT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    estimate, rss = (int(value) for value in done.stdout.split())
    assert 0.5 <= estimate / rss <= 2.0, f"estimate {estimate:,} vs peak RSS {rss:,}"


def test_a_child_process_reports_its_own_peak_not_its_parents():
    """`ru_maxrss` would carry this (parent) process's peak into the child across fork and exec."""
    parent_block = np.ones(2**30, dtype=np.uint8)  # touched: 1 GiB resident here; the child needs ~0.2
    child = "from simulator.runs.memory import peak_rss_bytes\nprint(peak_rss_bytes())\n"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    assert peak_rss_bytes() >= parent_block.nbytes
    assert int(done.stdout) < parent_block.nbytes / 2


def test_check_memory_names_the_driving_keys():
    scenario = tiny({"population.users.count": 5_000_000, "embedding_dim": 256})
    issues = check_memory(scenario, lambda key: ("s.yaml", 3, 7), available=10**9)
    assert issues and issues[0].key == "population.users.count"
    assert "more than the 953.7 MiB available" in issues[0].message
    assert all(str(issue).startswith("s.yaml:3:7: ") for issue in issues)
    assert not check_memory(tiny(), available=10**12)
    many = check_memory(tiny(), available=estimate_memory(tiny()).total * 3, workers=4)
    assert many and "4 runs side by side" in many[0].message


def test_available_memory_is_measured(monkeypatch):
    from simulator.runs.memory import available_memory

    monkeypatch.delenv("ATTNSIM_AVAILABLE_MEMORY", raising=False)
    value, origin = available_memory()
    assert value is None or value > 0
    monkeypatch.setenv("ATTNSIM_AVAILABLE_MEMORY", "12345")
    assert available_memory() == (12345, "ATTNSIM_AVAILABLE_MEMORY")


def test_a_sweep_resumes_its_half_done_run_from_the_checkpoint(tmp_path, monkeypatch):
    """sweep.py's hook: a run stopped half-way leaves a checkpoint; running the sweep again
    continues that run from it (not from tick 0) and ends with the same sweep.parquet."""
    import yaml

    import simulator.runs.sweep as sweep_module

    data = {
        "name": "ckptsweep",
        "seed": 5,
        "ticks": 6,
        "embedding_dim": 4,
        "population": {"users": {"count": 80}, "creators": {"count": 6}, "goods": {"initial": 20}, "advertisers": {"count": 2}},
        "sweep": {"grid": {"allocation.temperature": [0.5, 2.0]}, "replications": 1},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    clean = sweep_module.run_sweep(path, out=tmp_path / "clean", workers=1, checkpoint_every=2)
    assert clean.ok
    assert not list((tmp_path / "clean").rglob("checkpoint.pkl")), "complete runs keep no checkpoint"

    real = sweep_module._run

    def stopped_at_tick_5(model, on_tick, should_stop):
        def tick(model):
            on_tick(model)
            if model.config.allocation.temperature == 2.0 and model.market.tick == 5:
                raise KeyboardInterrupt
        return real(model, tick, should_stop)

    monkeypatch.setattr(sweep_module, "_run", stopped_at_tick_5)
    with pytest.raises(KeyboardInterrupt):
        sweep_module.run_sweep(path, out=tmp_path / "resumed", workers=1, checkpoint_every=2)
    half = tmp_path / "resumed" / "runs" / "g001-r00"
    assert ckpt.read_header(half / "checkpoint.pkl")["tick"] == 4

    resumed_from: list[int] = []
    original = ckpt.resumable

    def spy(directory, scenario):
        model = original(directory, scenario)
        resumed_from.append(model.market.tick if model is not None else 0)
        return model

    monkeypatch.setattr(ckpt, "resumable", spy)
    monkeypatch.setattr(sweep_module, "_run", real)
    again = sweep_module.run_sweep(path, out=tmp_path / "resumed", workers=1, checkpoint_every=2)
    assert again.ok and again.ran == ["g001-r00"]
    assert resumed_from == [4]
    assert rundir.read_manifest(half)["resumes"][0]["from_tick"] == 4
    assert (tmp_path / "resumed" / "sweep.parquet").read_bytes() == (tmp_path / "clean" / "sweep.parquet").read_bytes()
    assert not (half / "checkpoint.pkl").exists()
