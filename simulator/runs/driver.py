"""The one run driver: `run` steps a model to its last tick (what `simulator.run` is), and
`execute` + `finish_run` drive it inside a run directory. `attnsim run`, `attnsim resume`,
every sweep run (local or Dask worker) and `resume_or_start` all go through `execute` and
`finish_run`, so every run directory's manifest has the same keys (allocation mode, invariant
violation, warnings, checkpointing, process) whoever ran it.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback as traceback_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.files import read_json, write_json
from simulator.metrics.invariants import InvariantViolation
from simulator.metrics.summary import summarize
from simulator.model import AttentionMarket
from simulator.runs import rundir
from simulator.runs.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    ResumeError,
    open_resume,
    panel_frames,
    save_checkpoint,
    scenario_digest,
)
from simulator.runs.rundir import RunWriter
from simulator.scenario.schema import (
    Scenario,
    ScenarioIssue,
    load_scenario,
    with_overrides,
)


@dataclass
class RunResult:
    scenario: Scenario
    metrics: pd.DataFrame
    summary: dict[str, Any]
    model: AttentionMarket = field(repr=False)
    completed: bool = True


def run(
    scenario: Scenario | str | Path | dict[str, Any],
    *,
    seed: int | None = None,
    ticks: int | None = None,
    on_tick: Callable[[AttentionMarket], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    model: AttentionMarket | None = None,
) -> RunResult:
    """Run a scenario tick by tick; `on_tick` sees the model after each tick.

    `should_stop` is polled between ticks: when it returns True the run ends at that tick
    boundary and the result has `completed=False` with the ticks done so far. `model` continues
    an existing model (e.g. one restored by `load_checkpoint`) instead of building a fresh one;
    `scenario` is then its scenario.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if ticks is not None:
        scenario = with_overrides(scenario, {"ticks": ticks})
    if model is None:
        model = AttentionMarket(scenario, seed=seed)
    scenario = model.config
    completed = True
    while model.running:
        if should_stop is not None and should_stop():
            completed = False
            break
        model.step()
        if on_tick is not None:
            on_tick(model)
    metrics = model.metrics
    return RunResult(model.config, metrics, summarize(metrics, scenario.metrics.summary_fraction), model, completed)


# The loop `execute` runs a model with: `run` (a seam: sweep tests break runs through it).
Engine = Callable[[AttentionMarket, Callable[[AttentionMarket], None], "Callable[[], bool] | None"], RunResult]


def _engine(model: AttentionMarket, on_tick: Callable[[AttentionMarket], None], should_stop: Callable[[], bool] | None) -> RunResult:
    return run(model.config, model=model, on_tick=on_tick, should_stop=should_stop)


def start_writer(writer: RunWriter, *, checkpoint_every: int, plots: bool) -> None:
    """Record how the run is driven and by which process, then write the directory's first files."""
    writer.manifest.update(checkpoint_every=checkpoint_every, plots=plots, pid=os.getpid(), host=platform.node())
    writer.start()


# --- running inside a run directory ----------------------------------------------------------------


@dataclass
class RunOutcome:
    """How `execute` ended: `status` is one of rundir's statuses; the rest is what to write."""

    status: str
    metrics: pd.DataFrame | None
    panels: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    violation: dict[str, Any] | None = None
    hard_interrupt: bool = False
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    skipped: bool = False  # resume_or_start: the run was already complete
    resumed_from: int | None = None  # the tick resumed from, None for a fresh start


def execute(
    writer: RunWriter,
    model: AttentionMarket,
    *,
    checkpoint_every: int = 0,
    checkpoint_seconds: float = 5.0,
    on_tick: Callable[[AttentionMarket], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    engine: Engine = _engine,
) -> RunOutcome:
    """Step `model` to its last tick inside `writer`'s directory; never raises for engine failures.

    After every `checkpoint_every` ticks (0: never) the model is saved to `checkpoint.pkl` and the
    metrics rewritten; otherwise the metrics are rewritten after the first tick and every
    `checkpoint_seconds`. A stop asked by `should_stop` ends at a tick boundary (status
    `interrupted`, and a checkpoint of that tick when checkpointing is on); KeyboardInterrupt
    ends at once (`interrupted`, no checkpoint: the tick was half done); any other exception,
    an `InvariantViolation` included, gives `failed` with the error, traceback and violation.
    The final files are written by `finish_run`.
    """

    checkpoint_path = writer.directory / CHECKPOINT
    outcome = RunOutcome(status="failed", metrics=None)
    clock = {"last": time.monotonic(), "first": True}
    saving = {"on": checkpoint_every > 0}

    def save(current: AttentionMarket) -> None:
        if not saving["on"]:
            return
        try:
            save_checkpoint(current, checkpoint_path)
        except CheckpointError as exc:
            saving["on"] = False  # keep running; say so in the manifest
            outcome.warnings.append(f"checkpoints stopped at tick {current.market.tick}: {exc.message}")

    def tick_done(current: AttentionMarket) -> None:
        tick = current.market.tick
        now = time.monotonic()
        if checkpoint_every and tick % checkpoint_every == 0 and current.running:
            save(current)
            writer.checkpoint(current.metrics, panel_frames(current))
            writer.manifest["ticks_done"] = tick  # what a run killed now leaves, as its metrics say
            write_json(writer.manifest_path, writer.manifest)
            clock["last"] = time.monotonic()
        elif clock["first"] or now - clock["last"] >= checkpoint_seconds:
            writer.checkpoint(current.metrics, panel_frames(current))
            clock["last"] = time.monotonic()
        clock["first"] = False
        if on_tick is not None:
            on_tick(current)

    try:
        result = engine(model, tick_done, should_stop)
        outcome.metrics = result.metrics
        if result.completed:
            outcome.status = "complete"
        else:
            outcome.status = "interrupted"
            save(model)
    except KeyboardInterrupt:
        outcome.status, outcome.hard_interrupt = "interrupted", True
        outcome.metrics = _metrics_or_none(model)
    except Exception as exc:  # noqa: BLE001 - any failure of the engine is reported, with what was done
        outcome.status = "failed"
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.traceback = traceback_module.format_exc()
        if isinstance(exc, InvariantViolation):
            outcome.violation = exc.to_dict()
        outcome.metrics = _metrics_or_none(model)
    outcome.panels = panel_frames(model)
    if getattr(model, "allocation_mode", None) is not None:  # which allocation ran (allocation.candidates)
        writer.manifest.update(
            allocation_mode=model.allocation_mode,
            allocation_mode_reason=model.allocation_mode_reason,
            allocation_mode_ticks=dict(model.allocation_modes),
        )
    notes = model.rule.manifest_notes() if getattr(model, "rule", None) is not None else {}
    if notes:  # what the allocation rule reports of the run (e.g. viable_matching's fallbacks)
        writer.manifest.update(allocation_rule_notes=notes)
    return outcome


def _metrics_or_none(model: AttentionMarket) -> pd.DataFrame | None:
    try:
        return model.metrics
    except Exception:  # noqa: BLE001 - the model may be half-updated; keep the last checkpoint
        return None


def finish_run(writer: RunWriter, outcome: RunOutcome) -> dict[str, Any] | None:
    """Write the run's final files for `outcome`; a complete run's checkpoint is removed after."""

    metrics = outcome.metrics
    if metrics is None and writer.metrics_path.is_file():
        metrics = rundir.read_metrics(writer.metrics_path)  # the last metrics written
    if outcome.violation is not None:
        writer.manifest["violation"] = outcome.violation
    if outcome.warnings:
        writer.manifest["warnings"] = [*writer.manifest.get("warnings", []), *outcome.warnings]
    summary = writer.finish(outcome.status, metrics, error=outcome.error, traceback=outcome.traceback, panels=outcome.panels)
    kept = writer.manifest.get("warnings", [])
    if outcome.warnings and not set(outcome.warnings) <= set(kept):  # finish() wrote its own list over ours
        writer.manifest["warnings"] = [*outcome.warnings, *kept]
        write_json(writer.manifest_path, writer.manifest)
    if outcome.status == rundir.COMPLETE:
        (writer.directory / CHECKPOINT).unlink(missing_ok=True)
    outcome.summary = summary
    return summary



def resume_or_start(
    run_dir: str | Path,
    scenario: Scenario,
    *,
    checkpoint_every: int = 0,
    checkpoint_seconds: float = 5.0,
    plots: bool = False,
    scenario_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    command: list[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_tick: Callable[[AttentionMarket], None] | None = None,
) -> RunOutcome:
    """Run `scenario` into `run_dir`, picking up whatever an earlier attempt left there.

    For sweeps: a run directory whose manifest says `complete` is left alone (`skipped`); one
    with a checkpoint of the same scenario resumes from it; one whose checkpoint is damaged, or
    that has none, starts again from tick 0 (the same scenario and seed give the same result);
    anything else is a fresh start. A directory holding a run of a *different* scenario raises
    `ResumeError` rather than being overwritten. Returns the outcome with its summary; the run
    directory is finished (manifest, metrics, summary, plots) whatever the status.
    """

    run_dir = Path(run_dir)
    manifest_path = run_dir / rundir.MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = None  # a torn directory from a crash before its first manifest: start afresh
        if isinstance(manifest, dict) and isinstance(manifest.get("scenario"), dict):
            if scenario_digest(manifest["scenario"]) != scenario_digest(scenario):
                raise ResumeError(
                    [ScenarioIssue(str(manifest_path), 1, 1, "scenario", "this run directory holds a run of a different scenario")]
                )
            if manifest.get("status") == rundir.COMPLETE:
                metrics = rundir.read_metrics(run_dir / rundir.METRICS)
                summary_path = run_dir / rundir.SUMMARY
                summary = read_json(summary_path) if summary_path.is_file() else None
                return RunOutcome(status=rundir.COMPLETE, metrics=metrics, summary=summary, skipped=True)
            plan = open_resume(run_dir, checkpoint_every=checkpoint_every, plots=plots, on_corrupt="restart")
            outcome = execute(
                plan.writer,
                plan.model,
                checkpoint_every=checkpoint_every,
                checkpoint_seconds=checkpoint_seconds,
                on_tick=on_tick,
                should_stop=should_stop,
            )
            outcome.resumed_from = plan.from_tick
            finish_run(plan.writer, outcome)
            return outcome
    directory = rundir.prepare_output_dir(run_dir, force=True)
    writer = rundir.RunWriter(directory, scenario, scenario_file=scenario_file, overrides=overrides, command=command, plots=plots)
    start_writer(writer, checkpoint_every=checkpoint_every, plots=plots)
    outcome = execute(
        writer,
        AttentionMarket(scenario),
        checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
        on_tick=on_tick,
        should_stop=should_stop,
    )
    finish_run(writer, outcome)
    return outcome
