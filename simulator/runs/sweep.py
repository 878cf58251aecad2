"""Sweeps: a scenario's `sweep.grid` × `sweep.replications`, run in parallel, resumable.

    import simulator
    result = simulator.run_sweep("scenarios/payout_rules.yaml", out="runs/payout_rules", workers=4)
    frame = simulator.load_sweep("runs/payout_rules")   # every run's metrics, one row per run and tick
    frame.attrs["manifest"]["runs"]                      # each run's grid point, seed and status

A sweep directory holds

- `sweep.json`: the sweep manifest: the resolved scenario (with its `sweep:` block), its
  fingerprint, the grid, and every run with its grid point, replication, derived seed and status;
- `sweep.parquet`: the metrics of every complete run, with `run_id`, one column per grid key,
  `replication` and `seed` in front, sorted by run id then tick (the same sweep gives the same
  bytes, whatever the backend, the number of workers or the order in which runs finished);
- `runs.parquet`: one row per complete run: `run_id`, the grid keys, `replication`, `seed`, then
  every summary figure of the run (its `summary.json`), in run id order;
- `runs/<run-id>/`: one run directory per run, written by the same `RunWriter` as `attnsim run`
  (`manifest.json` with a `sweep` entry, `metrics.parquet`, `summary.json`, and `plots/` if asked).

Grid points are the Cartesian product of the grid's axes, in the order written (the last axis
varies fastest); run ids are `g<point>-r<replication>`, both counted from 0 (`g003-r01`).

Seeds. With `sweep.seeding: common` (the default: common random numbers), replication r of every
grid point runs from the same seed, `derive_seed(scenario.seed, {}, r)`: arms differ only where
their rules make them differ, and `attnsim compare` analyses them in pairs. Inside a run each
population and each stage of each tick draws from its own stream (numpy SeedSequence spawning, see
`simulator.market.populations.spawn_streams`), so a rule that draws more or fewer numbers in one
stage leaves the other stages' draws alone. With `sweep.seeding: independent`, run
`(point, replication)` gets the seed `derive_seed(scenario.seed, point, replication)`:
`SeedSequence(entropy=scenario.seed, spawn_key=(H(point), replication)).generate_state(1, uint64) >> 1`,
where `H(point)` is the first 8 bytes (little-endian) of the SHA-256 of the point's canonical JSON
(`{"dotted.key": value, ...}` with sorted keys). Either way a run's seed depends on the scenario's
seed, the seeding, the values of its grid point and its replication number only: not on the
worker that ran it, the order runs finished, the backend, nor the point's position in the grid.

Resume. Running the same sweep into the same directory again keeps every run whose manifest says
`complete` for exactly the run's resolved scenario and seed, with readable metrics of every tick,
and runs the rest. A directory holding a different sweep (another resolved scenario or grid) is
refused unless `force=True`, which adopts the new sweep: runs that match the new sweep exactly are
still kept, run directories of runs that are no longer in the sweep are removed.

Backends. `local` runs batches of runs in a process pool (the "spawn" start method, safe with
threads); one worker runs them in this process. `dask` submits the same batches to a Dask
distributed scheduler (`address="tcp://HOST:PORT"` or `client=`); Dask workers run each run in a
temporary directory of their own and send the finished files back, and this process writes them
into the sweep directory: no shared filesystem is needed, the workers only need the same
`attention-market` installed.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback as traceback_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import qmc

from simulator.files import atomic_write_bytes, jsonable, read_json, write_json
from simulator.metrics.summary import summarize
from simulator.metrics.table import FLOAT_COLUMNS, METRIC_COLUMNS
from simulator.model import AttentionMarket
from simulator.runs import checkpoint, driver, rundir
from simulator.runs.lock import LOCK_FILE, DirectoryLock, DirectoryLocked
from simulator.runs.threads import pin_worker_threads, worker_thread_limits
from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    SweepConfig,
    load_scenario,
    parse_override_value,
)

SWEEP_FORMAT = "attnsim-sweep/1"
SWEEP_MANIFEST = "sweep.json"
SWEEP_TABLE = "sweep.parquet"
RUNS_TABLE = "runs.parquet"
RUNS_DIR = "runs"
BACKENDS = ("local", "dask")

PENDING = "pending"
# sweep statuses: running while it goes on (or if killed), then complete, failed or interrupted
SWEEP_RUNNING = "running"
SWEEP_COMPLETE = "complete"
SWEEP_FAILED = "failed"
SWEEP_INTERRUPTED = "interrupted"

ROW_GROUP_ROWS = 65_536  # rows gathered before each write of sweep.parquet (a row group)
MANIFEST_WRITE_SECONDS = 2.0  # sweep.json is rewritten at most this often while runs finish


class SweepError(ValueError):
    """A sweep that cannot start: `lines` are the problems (`FILE:LINE:COL: key: message` where
    they belong to the scenario, `--option:1:1: key: message` where they belong to an option)."""

    def __init__(self, lines: str | list[str]):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


# --- planning: grid points, seeds, run ids -------------------------------------------------------


def canonical_json(value: Any) -> str:
    """`value` as compact JSON with sorted keys: the same value always gives the same text."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def fingerprint(scenario: Scenario) -> str:
    """SHA-256 of the resolved scenario's canonical JSON (the identity of a sweep)."""
    return hashlib.sha256(canonical_json(scenario.model_dump(mode="json")).encode()).hexdigest()


def grid_points(sweep: SweepConfig | None, seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's points in order: the Cartesian product of the grid's axes as written, last axis
    fastest; for `design: lhs | sobol` each grid point crossed with `samples` design points over
    `ranges` (scipy.stats.qmc, drawn from `seed`, in the order drawn).

    No sweep, or an empty grid, is a single point with no keys."""
    grid = sweep.grid if sweep is not None else {}
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]
    if sweep is None or sweep.design == "grid":
        return points
    return [{**point, **sample} for point in points for sample in design_samples(sweep, seed)]


def table_axes(config: Scenario, specs: Sequence[RunSpec]) -> dict[str, list[Any]]:
    """The key columns of sweep.parquet and runs.parquet: the grid's axes, then the ranges' keys
    with the values the design drew."""
    axes: dict[str, list[Any]] = dict(config.sweep.grid) if config.sweep is not None else {}
    for key in config.sweep.ranges if config.sweep is not None else ():
        axes[key] = [spec.point[key] for spec in specs]
    return axes


def design_samples(sweep: SweepConfig, seed: int) -> list[dict[str, float]]:
    """The `lhs` or `sobol` design: `samples` points of the `ranges`, each value rounded to 12
    significant digits so it reads back the same from JSON and a command line."""
    keys = list(sweep.ranges)
    if sweep.design == "lhs":
        engine: qmc.QMCEngine = qmc.LatinHypercube(d=len(keys), seed=np.random.default_rng(seed))
    else:
        engine = qmc.Sobol(d=len(keys), scramble=True, seed=np.random.default_rng(seed))
    unit = engine.random(sweep.samples)
    scaled = qmc.scale(unit, [sweep.ranges[key][0] for key in keys], [sweep.ranges[key][1] for key in keys])
    return [{key: float(f"{value:.12g}") for key, value in zip(keys, row)} for row in scaled]


def derive_seed(base_seed: int, point: Mapping[str, Any], replication: int) -> int:
    """The seed of replication `replication` (from 0) of grid point `point` (see the module doc)."""
    digest = hashlib.sha256(canonical_json(dict(point)).encode()).digest()
    point_key = int.from_bytes(digest[:8], "little")
    sequence = np.random.SeedSequence(entropy=int(base_seed), spawn_key=(point_key, int(replication)))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def run_seed(base_seed: int, point: Mapping[str, Any], replication: int, seeding: str) -> int:
    """The seed of a sweep run: shared by every point of a replication under `common` seeding,
    the point's own under `independent` (see the module doc)."""
    return derive_seed(base_seed, {} if seeding == "common" else point, replication)


def run_id(grid_index: int, replication: int, points: int, replications: int) -> str:
    """`g<point>-r<replication>`, zero-padded (at least 3 and 2 digits) so ids sort in grid order."""
    g = max(3, len(str(max(points - 1, 0))))
    r = max(2, len(str(max(replications - 1, 0))))
    return f"g{grid_index:0{g}d}-r{replication:0{r}d}"


def value_text(value: Any) -> str:
    """A grid value as written on a command line (`--set KEY=TEXT` gives the value back)."""
    if isinstance(value, str):

        return value if parse_override_value(value) == value else json.dumps(value)
    return json.dumps(jsonable(value))


def point_label(point: Mapping[str, Any]) -> str:
    """`key=value, key=value` for a grid point (`(no grid)` for the single point of no grid)."""
    return ", ".join(f"{key}={value_text(value)}" for key, value in point.items()) or "(no grid)"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything a worker needs, as plain JSON-able data."""

    run_id: str
    grid_index: int
    replication: int
    point: dict[str, Any]
    seed: int
    scenario: dict[str, Any]  # the run's resolved scenario (grid point and seed applied, no sweep block)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "grid_index": self.grid_index,
            "replication": self.replication,
            "point": self.point,
            "seed": self.seed,
            "scenario": self.scenario,
        }


def plan(scenario: Scenario, *, source: str = "<scenario>") -> list[RunSpec]:
    """Every run of the sweep, in run id order; SweepError lists every grid point that is invalid."""
    sweep = scenario.sweep or SweepConfig()
    points = grid_points(sweep, scenario.seed)
    replications = sweep.replications
    base = scenario.model_dump(mode="json")
    base["sweep"] = None
    specs: list[RunSpec] = []
    problems: list[str] = []
    for grid_index, point in enumerate(points):
        try:
            resolved = load_scenario(base, overrides=dict(point))
        except ScenarioError as exc:
            for issue in exc.issues:
                problems.append(
                    f"{source}:1:1: sweep.grid: grid point {grid_index} ({point_label(point)}): {issue.key}: {issue.message}"
                )
            continue
        point_scenario = resolved.model_dump(mode="json")
        for replication in range(replications):
            seed = run_seed(scenario.seed, point, replication, sweep.seeding)
            run_scenario_dict = json.loads(json.dumps(point_scenario))
            run_scenario_dict["seed"] = seed
            specs.append(
                RunSpec(
                    run_id=run_id(grid_index, replication, len(points), replications),
                    grid_index=grid_index,
                    replication=replication,
                    point=json.loads(json.dumps(jsonable(point))),  # the grid's key order
                    seed=seed,
                    scenario=run_scenario_dict,
                )
            )
    if problems:
        raise SweepError(problems)
    return specs


# --- running one run (in a worker) ---------------------------------------------------------------


def _command(scenario_file: str | None, overrides: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """An `attnsim run` line that reproduces the run (same metrics, into a new run directory)."""
    command = ["attnsim", "run", scenario_file or "SCENARIO.yaml"]
    for key, value in {**dict(overrides), **dict(spec["point"])}.items():
        if key != "seed":
            command += ["--set", f"{key}={value_text(value)}"]
    command += ["--seed", str(spec["seed"])]
    return command


def _failed_record(spec: Mapping[str, Any], error: str, trace: str | None = None) -> dict[str, Any]:
    return {
        "run_id": spec["run_id"],
        "status": rundir.FAILED,
        "error": error,
        "traceback": trace,
        "ticks_done": 0,
        "duration_seconds": None,
        "host": None,
        "versions": None,
    }


def execute_run(
    spec: Mapping[str, Any], directory: Path, context: Mapping[str, Any], should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Run one spec into `directory` through the run driver, as `attnsim run` does (so its
    manifest has the same keys, plus `sweep`); never raises for a failure of the run itself (it is
    recorded, in the run's manifest and in the returned record). A KeyboardInterrupt is re-raised
    once the run directory is finished."""
    started = time.monotonic()
    record = _failed_record(spec, "")
    record["host"] = platform.node()
    every = int(context.get("checkpoint_every") or 0)
    plots = bool(context.get("plots", False))
    try:
        scenario = load_scenario(dict(spec["scenario"]))
        # A half-done run of exactly this scenario left a checkpoint: continue from it (checkpoint.py).
        resumed = checkpoint.resumable(directory, scenario) if every else None
        rundir.prepare_output_dir(directory, force=True)
        writer = rundir.RunWriter(
            directory,
            scenario,
            scenario_file=context.get("scenario_file"),
            overrides={**dict(context.get("overrides") or {}), **dict(spec["point"]), "seed": spec["seed"]},
            command=_command(context.get("scenario_file"), context.get("overrides") or {}, spec),
            plots=plots,
        )
        writer.manifest["sweep"] = {
            "sweep_directory": context.get("sweep_directory"),
            "sweep_fingerprint": context.get("fingerprint"),
            "run_id": spec["run_id"],
            "grid_index": spec["grid_index"],
            "replication": spec["replication"],
            "point": dict(spec["point"]),
            "sweep_seed": context.get("sweep_seed"),
            "seed": spec["seed"],
        }
        record["versions"] = writer.manifest["versions"]
        if resumed is not None:
            writer.manifest["resumes"] = [{"at": rundir.timestamp(), "from_tick": resumed.market.tick, "previous_status": None}]
        driver.start_writer(writer, checkpoint_every=every, plots=plots)
    except Exception as exc:  # noqa: BLE001 - reported as this run's failure
        record["error"] = f"could not start the run: {type(exc).__name__}: {exc}"
        record["traceback"] = traceback_module.format_exc()
        record["duration_seconds"] = round(time.monotonic() - started, 3)
        return record

    try:
        model = resumed if resumed is not None else AttentionMarket(scenario)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built is this run's failure
        outcome = driver.RunOutcome(rundir.FAILED, None, error=f"{type(exc).__name__}: {exc}", traceback=traceback_module.format_exc())
    else:
        outcome = driver.execute(writer, model, checkpoint_every=every, should_stop=should_stop, engine=_run)
    try:
        driver.finish_run(writer, outcome)
    except Exception as exc:  # noqa: BLE001
        outcome.status = rundir.FAILED
        outcome.error = f"could not write the run directory: {type(exc).__name__}: {exc}"
        outcome.traceback = traceback_module.format_exc()
    if outcome.hard_interrupt:
        raise KeyboardInterrupt
    record.update(
        status=outcome.status,
        error=outcome.error,
        traceback=outcome.traceback,
        ticks_done=int(writer.manifest.get("ticks_done", 0)),
        duration_seconds=round(time.monotonic() - started, 3),
    )
    return record


def _run(model: AttentionMarket, on_tick: Callable[[Any], None], should_stop: Callable[[], bool] | None) -> Any:
    """The engine call of one sweep run (a seam for tests)."""
    return driver.run(model.config, model=model, on_tick=on_tick, should_stop=should_stop)


def _pack(directory: Path) -> dict[str, bytes]:
    """The files of a finished run directory, by path relative to it."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".attnsim-tmp-")
    }


def execute_batch(
    specs: Sequence[Mapping[str, Any]], runs_dir: str | None, context: Mapping[str, Any], should_stop: Callable[[], bool] | None = None
) -> list[dict[str, Any]]:
    """Run a batch of runs one after the other; the unit of work a worker receives.
    (`should_stop`, in this process only, ends the current run at a tick boundary.)

    With `runs_dir`, each run writes `runs_dir/<run-id>/` itself (a filesystem this process shares
    with the client). Without it, each run is written into a temporary directory and its files come
    back in the record (`files`: relative path -> bytes) for the client to write.
    """
    with worker_thread_limits():  # one BLAS and one numba thread per worker (simulator/runs/threads.py)
        return _execute_batch(specs, runs_dir, context, should_stop)


def _execute_batch(
    specs: Sequence[Mapping[str, Any]], runs_dir: str | None, context: Mapping[str, Any], should_stop: Callable[[], bool] | None
) -> list[dict[str, Any]]:
    records = []
    for spec in specs:
        if runs_dir is not None:
            records.append(execute_run(spec, Path(runs_dir) / spec["run_id"], context, should_stop))
            continue
        with tempfile.TemporaryDirectory(prefix="attnsim-run-") as tmp:
            directory = Path(tmp) / spec["run_id"]
            record = execute_run(spec, directory, context)
            record["files"] = _pack(directory) if directory.is_dir() else {}
        records.append(record)
    return records


def _worker_init(parent: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the client decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_worker_threads()  # one BLAS and one numba thread each, so N workers fit N cores
    exit_with_parent(parent)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0


def exit_with_parent(parent: int) -> None:
    """Make this worker process end when `parent` (the process that started it) dies, even by
    SIGKILL: the kernel's parent-death signal on Linux, a thread watching the parent's PID elsewhere."""
    if os.getppid() != parent:  # it died while this worker was starting
        os._exit(1)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the call
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), name="attnsim-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # orphaned: nobody will collect this worker's results


# --- the sweep directory -------------------------------------------------------------------------


def _reusable(directory: Path, spec: RunSpec) -> pd.DataFrame | None:
    """The metrics of `directory` when it holds exactly this run, complete; otherwise None."""
    try:
        manifest = rundir.read_manifest(directory)
        if manifest.get("status") != rundir.COMPLETE or manifest.get("seed") != spec.seed:
            return None
        if json.loads(canonical_json(manifest.get("scenario"))) != json.loads(canonical_json(spec.scenario)):
            return None
        metrics = rundir.read_metrics(directory / rundir.METRICS)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    except Exception:  # noqa: BLE001 - an unreadable parquet file: run it again
        return None
    if list(metrics.columns) != list(METRIC_COLUMNS) or len(metrics) != spec.scenario["ticks"]:
        return None
    return metrics


def _write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write a run directory's files sent back by a worker: the manifest last, each atomically."""
    rundir.prepare_output_dir(directory, force=True)
    order = sorted(files, key=lambda name: (name == rundir.MANIFEST, name))
    for name in order:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"a worker sent a file outside its run directory: {name!r}")
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, files[name])


def _column_type(values: Sequence[Any]) -> tuple[Any, Callable[[Any], Any]]:
    """The Arrow type of a grid key's column, and how to convert each value to it."""

    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return pa.bool_(), lambda value: value
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return pa.int64(), lambda value: value
    if present and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return pa.float64(), lambda value: None if value is None else float(value)
    if all(isinstance(value, str) for value in present):
        return pa.string(), lambda value: value
    return pa.string(), lambda value: None if value is None else canonical_json(value)


def sweep_schema(grid: Mapping[str, Sequence[Any]]) -> Any:
    """The Arrow schema of sweep.parquet: run_id, the grid keys, replication, seed, the metric columns."""

    fields = [pa.field("run_id", pa.string())]
    fields += [pa.field(key, _column_type(values)[0]) for key, values in grid.items()]
    fields.append(pa.field("replication", pa.int64()))
    fields.append(pa.field("seed", pa.int64()))
    fields += [pa.field(column, pa.float64() if column in FLOAT_COLUMNS else pa.int64()) for column in METRIC_COLUMNS]
    return pa.schema(fields)


def write_sweep_table(
    path: Path, grid: Mapping[str, Sequence[Any]], runs: Iterable[tuple[RunSpec, pd.DataFrame]]
) -> int:
    """Write sweep.parquet atomically from (spec, metrics) pairs (taken in run id order); returns rows.

    The file holds only data (no timestamps) and is written in fixed-size row groups, so the same
    runs give the same bytes.
    """

    schema = sweep_schema(grid)
    converters = {key: _column_type(values)[1] for key, values in grid.items()}
    tmp = path.with_name(f".attnsim-tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            pending: list[pa.Table] = []
            pending_rows = 0

            def flush() -> None:
                nonlocal pending, pending_rows
                if pending:
                    table = pa.concat_tables(pending)
                    for start in range(0, table.num_rows, ROW_GROUP_ROWS):
                        writer.write_table(table.slice(start, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                pending, pending_rows = [], 0

            for spec, metrics in sorted(runs, key=lambda item: item[0].run_id):
                frame = rundir.normalize_metrics(metrics)
                n = len(frame)
                arrays = [pa.array([spec.run_id] * n, pa.string())]
                for key in grid:
                    arrays.append(pa.array([converters[key](spec.point.get(key))] * n, schema.field(key).type))
                arrays.append(pa.array(np.full(n, spec.replication, dtype=np.int64)))
                arrays.append(pa.array(np.full(n, spec.seed, dtype=np.int64)))
                for column in METRIC_COLUMNS:
                    arrays.append(pa.array(frame[column].to_numpy(), schema.field(column).type))
                pending.append(pa.Table.from_arrays(arrays, schema=schema))
                pending_rows += n
                rows += n
                while pending_rows >= ROW_GROUP_ROWS:
                    table = pa.concat_tables(pending)
                    writer.write_table(table.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                    rest = table.slice(ROW_GROUP_ROWS)
                    pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
            flush()
            if rows == 0:
                writer.write_table(schema.empty_table())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


def write_runs_table(path: Path, grid: Mapping[str, Sequence[Any]], runs: Iterable[tuple[RunSpec, pd.DataFrame]]) -> int:
    """Write runs.parquet atomically: one row per run (in run id order) with its run id, grid
    point, replication, seed and every summary figure (`summarize`, as in its summary.json)."""
    rows = []
    for spec, metrics in sorted(runs, key=lambda item: item[0].run_id):
        fraction = float(spec.scenario.get("metrics", {}).get("summary_fraction", 0.2))
        summary = summarize(rundir.normalize_metrics(metrics), fraction)
        rows.append({"run_id": spec.run_id, **{key: spec.point.get(key) for key in grid}, "replication": spec.replication, "seed": spec.seed, **summary})
    frame = pd.DataFrame(rows, columns=["run_id", *grid, "replication", "seed"] if not rows else None)
    atomic_write_bytes(path, frame.to_parquet(index=False))
    return len(rows)


def load_sweep(directory: str | Path, *, long: bool = False) -> pd.DataFrame:
    """sweep.parquet of a sweep directory, with sweep.json attached as `attrs["manifest"]`.

    One row per tick of every complete run: `run_id`, one column per grid key (named by its dotted
    key), `replication`, `seed`, then the metric columns; sorted by run id then tick. With
    `long=True`, one row per run, tick and metric (`run_id`, the grid keys, `replication`, `seed`,
    `tick`, `metric`, `value`), the shape seaborn and plotnine take
    (`sns.relplot(data=frame, x="tick", y="value", col="metric", hue=key, kind="line")`).
    """
    directory = Path(directory)
    table_path = directory / SWEEP_TABLE
    if not table_path.is_file():
        raise FileNotFoundError(f"{directory} is not a sweep directory (it has no {SWEEP_TABLE})")
    try:
        frame = pd.read_parquet(table_path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SweepError(f"{table_path}:1:1: <file>: not a readable Parquet table ({type(exc).__name__}: {_first_line(exc)}); run the sweep again to rebuild it") from None
    missing = [column for column in ("run_id", "tick") if column not in frame.columns]
    if missing:
        raise SweepError(f"{table_path}:1:1: <file>: not a sweep table (no column {', '.join(missing)}); run the sweep again to rebuild it")
    if long:
        identity = [column for column in frame.columns if column not in METRIC_COLUMNS or column == "tick"]
        frame = frame.melt(id_vars=identity, value_vars=[c for c in METRIC_COLUMNS if c != "tick" and c in frame.columns], var_name="metric", value_name="value")
        frame = frame.sort_values(["run_id", "tick"], kind="stable").reset_index(drop=True)
    manifest_path = directory / SWEEP_MANIFEST
    frame.attrs["manifest"] = read_sweep_manifest(manifest_path) if manifest_path.is_file() else None
    return frame


# The keys of sweep.json that readers rely on, with the JSON type each must have.
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {"runs": (list,), "grid_keys": (list,), "ranges": (dict,), "scenario": (dict,), "name": (str,), "fingerprint": (str,)}


def read_sweep_manifest(path: str | Path) -> dict[str, Any]:
    """sweep.json, checked for the shape its readers rely on; SweepError (located) when damaged."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}:1:1: <file>: cannot read the sweep manifest ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SweepError(f"{path}:{exc.lineno}:{exc.colno}: <file>: the sweep manifest is not valid JSON: {exc.msg}") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{path}:1:1: <root>: the sweep manifest is not a JSON object")
    for key, types in _MANIFEST_TYPES.items():
        if manifest.get(key) is not None and not isinstance(manifest[key], types):
            raise SweepError(f"{path}:1:1: {key}: expected a JSON {'array' if list in types else 'object' if dict in types else 'string'}, got {type(manifest[key]).__name__}")
    for index, run in enumerate(manifest.get("runs") or []):
        if not isinstance(run, dict) or not isinstance(run.get("run_id"), str):
            raise SweepError(f"{path}:1:1: runs[{index}]: expected an object with a run_id string")
    return manifest


def _first_line(exc: BaseException) -> str:
    """An exception's message, its first line only and at most 200 characters."""
    text = (str(exc).splitlines() or [""])[0]
    return text if len(text) <= 200 else text[:200] + "..."


# --- running a sweep (the client) ----------------------------------------------------------------


@dataclass
class SweepResult:
    """What `run_sweep` did: the directory, the final sweep manifest and the runs by fate."""

    directory: Path
    manifest: dict[str, Any]
    ran: list[str] = field(default_factory=list)  # run ids executed by this call
    reused: list[str] = field(default_factory=list)  # complete runs kept from an earlier call
    failed: list[str] = field(default_factory=list)  # run ids whose status is not complete

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def ok(self) -> bool:
        return self.status == SWEEP_COMPLETE

    def load(self) -> pd.DataFrame:
        return load_sweep(self.directory)


def default_sweep_dir(name: str, base: str | Path = "runs") -> Path:
    """`runs/<name>-sweep`: a stable default, so running the same sweep again resumes it."""
    return Path(base) / f"{name}-sweep"


def check_sweep_dir(directory: Path, scenario: Scenario, *, force: bool) -> list[str]:
    """Problems with writing this sweep into `directory` (empty when it can be used)."""
    if not directory.exists():
        return [f"{directory} is a broken symbolic link"] if directory.is_symlink() else []
    if not directory.is_dir():
        return [f"{directory} exists and is not a directory"]
    try:
        entries = [entry for entry in directory.iterdir() if entry.name != LOCK_FILE]
    except OSError as exc:
        return [f"{directory} cannot be read: {exc.strerror or exc}"]
    if not entries or force:
        return []
    manifest_path = directory / SWEEP_MANIFEST
    if not manifest_path.is_file():
        return [f"{directory} exists, is not empty and holds no {SWEEP_MANIFEST}; choose another --out or pass --force to write into it"]
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as exc:
        return [f"{manifest_path} cannot be read ({exc}); pass --force to start the sweep again there"]
    if manifest.get("fingerprint") != fingerprint(scenario):
        changed = _changed_keys(manifest.get("scenario"), scenario.model_dump(mode="json"))
        detail = f" (differs in {', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})" if changed else ""
        return [
            f"{directory} holds a different sweep{detail}; choose another --out, or pass --force to "
            "replace it (runs that match exactly are kept)"
        ]
    return []


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for key in sorted(set(old) | set(new)):
            keys += _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return keys
    return [] if canonical_json(old) == canonical_json(new) else [prefix or "<root>"]


def _auto_batch_size(todo: int, workers: int, replications: int) -> int:
    """Runs per task: enough tasks for about four per worker (load balance), at most one grid
    point's replications per task (so tasks of a slow point do not pile up on one worker)."""
    if todo == 0:
        return 1
    return max(1, min(replications, math.ceil(todo / (workers * 4))))


def run_sweep(
    scenario: Scenario | str | Path | dict[str, Any],
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    client: Any = None,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    plots: bool = False,
    batch_size: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    scenario_file: str | Path | None = None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Run the scenario's `sweep.grid` × `sweep.replications` into a sweep directory.

    `scenario` is a Scenario, a path to a YAML file or a dict; `overrides` are dotted keys applied
    on top (as `--set`). `out` defaults to `runs/<name>-sweep`. `backend="local"` runs `workers`
    processes (default `os.cpu_count()`; 1 runs in this process); `backend="dask"` needs `address`
    (`tcp://HOST:PORT` of a scheduler) or a `distributed.Client` as `client`. Runs already complete
    in `out` are kept (resume); `force` adopts a directory that holds a different sweep.

    `on_start(total_runs, runs_to_do)` and `on_run(record)` (each finished run: `run_id`,
    `status`, `error`, ...) report progress. Raises ScenarioError or SweepError on bad input (nothing
    written); KeyboardInterrupt stops the sweep with sweep.json `interrupted` and the finished runs
    kept, and so does `should_stop()` turning True (polled every STOP_POLL_SECONDS; the result is
    returned, sweep.json `interrupted`, or `complete` when every run had finished). Failed runs do not stop the sweep: `result.failed` lists them, `result.status` is `failed`.

    With the local backend and more than one worker, a script calling this must guard it with
    `if __name__ == "__main__":` (worker processes are started with "spawn").

    `checkpoint_every` N > 0 saves each run's model to its `checkpoint.pkl` every N ticks, so a
    sweep stopped half-way resumes its half-done runs from their checkpoints, not from tick 0
    (see simulator/runs/checkpoint.py; removed when the run completes).
    """
    if backend not in BACKENDS:
        raise SweepError(f"--backend:1:1: backend: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "local" and (address is not None or client is not None):
        raise SweepError("--address:1:1: address: --address is for --backend dask")
    if backend == "dask" and address is None and client is None:
        raise SweepError("--address:1:1: address: --backend dask needs --address tcp://HOST:PORT of a running scheduler (see docs/sweeps.md)")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise SweepError(f"--workers:1:1: workers: must be at least 1 (got {workers})")
    if batch_size is not None and batch_size < 1:
        raise SweepError(f"--batch-size:1:1: batch_size: must be at least 1 (got {batch_size})")

    if isinstance(scenario, Scenario):
        config = load_scenario(scenario.model_dump(), overrides=dict(overrides)) if overrides else scenario
    else:
        if isinstance(scenario, (str, Path)) and scenario_file is None:
            scenario_file = scenario
        config = load_scenario(scenario, overrides=dict(overrides or {}))
    source = str(scenario_file) if scenario_file is not None else "<scenario>"
    specs = plan(config, source=source)
    directory = Path(out) if out is not None else default_sweep_dir(config.name)
    dask_client, own_client = None, False
    if backend == "dask":
        dask_client, own_client = _dask_client(address, client)

    try:
        lock = _lock_sweep_dir(directory, config, force=force)
    except SweepError:
        _close_own_client(dask_client, own_client)
        raise
    try:
        return _run_sweep(
            config,
            specs,
            directory,
            workers=workers,
            backend=backend,
            dask_client=dask_client,
            address=address,
            overrides=dict(overrides or {}),
            force=force,
            plots=plots,
            batch_size=batch_size,
            on_start=on_start,
            on_run=on_run,
            scenario_file=str(Path(scenario_file).resolve()) if scenario_file is not None else None,
            checkpoint_every=checkpoint_every,
            should_stop=should_stop,
        )
    finally:
        lock.release()
        _close_own_client(dask_client, own_client)


def _close_own_client(dask_client: Any, own_client: bool) -> None:
    if own_client and dask_client is not None:
        try:
            dask_client.close()
        except Exception:  # noqa: BLE001
            pass


def _lock_sweep_dir(directory: Path, config: Scenario, *, force: bool) -> DirectoryLock:
    """Create `directory` and its runs/ folder and take its lock (one sweep writes there at a time).

    The checks of `check_sweep_dir` are made under the lock: a sweep that started in the
    same directory a moment before is reported by its PID, never as a directory that "holds no
    sweep.json". A directory this call created is removed again when it is refused.
    """
    created = not directory.exists() and not directory.is_symlink()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(directory, "attnsim sweep").acquire()
    except DirectoryLocked as exc:
        raise SweepError(f"--out:1:1: out: {exc}") from None
    except OSError as exc:
        problems = check_sweep_dir(directory, config, force=force) if not created else []
        raise SweepError([f"--out:1:1: out: {problem}" for problem in problems] or [f"--out:1:1: out: cannot write the sweep directory {directory}: {exc.strerror or exc}"]) from None
    try:
        problems = check_sweep_dir(directory, config, force=force)
        if not problems:
            (directory / RUNS_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        problems = [f"cannot write the sweep directory {directory}: {exc.strerror or exc}"]
    if problems:
        lock.release()
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise SweepError([f"--out:1:1: out: {problem}" for problem in problems])
    return lock


def _dask_client(address: str | None, client: Any) -> tuple[Any, bool]:
    if client is not None:
        return client, False
    try:
        from distributed import Client  # optional heavy dependency: the [dask] extra
        from distributed.comm import get_address_host_port, parse_address  # the same dependency: its address parser
        from distributed.comm.registry import backends as dask_schemes  # the same dependency: tcp, tls, inproc, ...
    except ImportError:
        raise SweepError(
            "--backend:1:1: backend: the dask backend needs dask.distributed: pip install 'attention-market[dask]'"
        ) from None
    # A malformed address must be refused before Client(): a Client that fails to parse it is left
    # half-built, and its __del__ then waits 40 s for a loop that never ran and prints a traceback.
    example = "write tcp://HOST:PORT, e.g. tcp://127.0.0.1:8786"
    try:
        scheme, _location = parse_address(str(address))
        if scheme not in dask_schemes:
            raise ValueError(f"unknown scheme {scheme!r}; Dask knows {', '.join(sorted(dask_schemes))}")
        if scheme != "inproc":  # the network schemes need a host and a port (inproc:// names a process)
            host, port = get_address_host_port(str(address))
            if not host or not 0 < port < 65536:
                raise ValueError("it needs a host and a port in 1..65535")
    except (ValueError, TypeError) as exc:
        raise SweepError(f"--address:1:1: address: not a Dask scheduler address {address!r} ({exc}); {example}") from None
    try:
        return Client(address, timeout="20s", set_as_default=False), True
    except Exception as exc:  # noqa: BLE001 - any connection problem is a bad --address
        raise SweepError(f"--address:1:1: address: cannot connect to the Dask scheduler at {address}: {type(exc).__name__}: {exc}") from None


def _run_sweep(
    config: Scenario,
    specs: list[RunSpec],
    directory: Path,
    *,
    workers: int,
    backend: str,
    dask_client: Any,
    address: str | None,
    overrides: dict[str, Any],
    force: bool,
    plots: bool,
    batch_size: int | None,
    on_start: Callable[[int, int], None] | None,
    on_run: Callable[[dict[str, Any]], None] | None,
    scenario_file: str | None,
    checkpoint_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    if backend == "dask":
        workers = _dask_workers(dask_client)  # the cluster's threads, for sweep.json and batching
    runs_dir = directory / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    if force:
        _drop_foreign_runs(runs_dir, {spec.run_id for spec in specs})
    reused = {spec.run_id: metrics for spec in specs if (metrics := _reusable(runs_dir / spec.run_id, spec)) is not None}
    todo = [spec for spec in specs if spec.run_id not in reused]
    progress = _SweepProgress(
        config, specs, directory, backend, workers, address, scenario_file, overrides, on_run,
        records=_initial_records(specs, reused, _previous_records(directory)),
    )  # fmt: skip
    progress.write_manifest(SWEEP_RUNNING)
    if on_start is not None:
        on_start(len(specs), len(todo))
    context = {
        "scenario_file": scenario_file,
        "overrides": overrides,
        "plots": plots,
        "fingerprint": fingerprint(config),
        "sweep_seed": config.seed,
        "sweep_directory": str(directory.resolve()),
        "checkpoint_every": checkpoint_every,
    }
    stop = should_stop or (lambda: False)
    interrupted: KeyboardInterrupt | None = None
    crash: BaseException | None = None
    try:
        if todo:
            _dispatch(todo, runs_dir, context, progress, backend, dask_client, workers, batch_size, stop)
    except KeyboardInterrupt as exc:
        interrupted = exc
    except Exception as exc:  # noqa: BLE001 - the backend broke down: keep what is done, then raise
        crash = exc
        progress.warnings.append(f"the sweep stopped: {type(exc).__name__}: {exc}")
    if interrupted is not None or crash is not None or stop():
        _recover_finished(specs, runs_dir, progress.records, reused)  # done on disk, result never came back
    result = _finish_sweep(progress, runs_dir, reused, stopped=interrupted is not None or stop(), crashed=crash is not None)
    if interrupted is not None:
        raise type(interrupted)(result)  # the same kind (the CLI tells SIGTERM from Ctrl-C by it)
    if crash is not None:
        raise crash
    return result


def _drop_foreign_runs(runs_dir: Path, ids: set[str]) -> None:
    """With --force the directory may hold another sweep: drop run directories not in this one."""
    for child in sorted(runs_dir.iterdir()):
        if child.name not in ids and child.is_dir() and ((child / rundir.MANIFEST).is_file() or not any(child.iterdir())):
            shutil.rmtree(child)


def _initial_records(specs: list[RunSpec], reused: Mapping[str, pd.DataFrame], previous: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each run's entry in sweep.json before anything runs: complete runs kept, the rest pending."""
    records: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if spec.run_id in reused:
            records[spec.run_id] = {
                "status": rundir.COMPLETE,
                "error": None,
                "ticks_done": len(reused[spec.run_id]),
                "duration_seconds": previous.get(spec.run_id, {}).get("duration_seconds"),
                "reused": True,
            }
        else:
            records[spec.run_id] = {"status": PENDING, "error": None, "ticks_done": 0, "duration_seconds": None, "reused": False}
    return records


@dataclass
class _SweepProgress:
    """What sweep.json says while runs finish: every run's record, warnings, the last write."""

    config: Scenario
    specs: list[RunSpec]
    directory: Path
    backend: str
    workers: int
    address: str | None
    scenario_file: str | None
    overrides: dict[str, Any]
    on_run: Callable[[dict[str, Any]], None] | None
    records: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    own_versions: dict[str, str] = field(default_factory=rundir.package_versions)
    started: Any = field(default_factory=rundir.utc_now)
    last_write: float = field(default_factory=time.monotonic)

    def write_manifest(self, status: str, *, ended: bool = False) -> dict[str, Any]:
        manifest = _sweep_manifest(
            self.config, self.specs, self.records, self.started, status, self.backend, self.workers, self.address,
            self.scenario_file, self.overrides, self.warnings, ended=ended,
        )  # fmt: skip
        write_json(self.directory / SWEEP_MANIFEST, manifest)
        self.last_write = time.monotonic()
        return manifest

    def finished(self, record: dict[str, Any]) -> None:
        """One run's record came back: write its files (Dask), note it, rewrite sweep.json now and then."""
        files = record.pop("files", None)
        if files is not None:
            try:
                _write_files(self.directory / RUNS_DIR / record["run_id"], files)
            except Exception as exc:  # noqa: BLE001
                record.update(status=rundir.FAILED, error=f"could not write the run directory: {type(exc).__name__}: {exc}")
        theirs = (record.get("versions") or {}).get("attention-market")
        if theirs is not None and theirs != self.own_versions.get("attention-market"):
            note = f"worker {record.get('host')} runs attention-market {theirs}, this machine {self.own_versions.get('attention-market')}"
            if note not in self.warnings:
                self.warnings.append(note)
        self.records[record["run_id"]] = {
            "status": record["status"],
            "error": record.get("error"),
            "ticks_done": record.get("ticks_done", 0),
            "duration_seconds": record.get("duration_seconds"),
            "reused": False,
            **({"host": record["host"]} if record.get("host") else {}),
        }
        if self.on_run is not None:
            self.on_run(dict(record))
        if time.monotonic() - self.last_write >= MANIFEST_WRITE_SECONDS:
            self.write_manifest(SWEEP_RUNNING)


def _dispatch(
    todo: list[RunSpec],
    runs_dir: Path,
    context: Mapping[str, Any],
    progress: _SweepProgress,
    backend: str,
    dask_client: Any,
    workers: int,
    batch_size: int | None,
    should_stop: Callable[[], bool],
) -> None:
    """Run `todo` on the backend, reporting each record to `progress`; returns early when asked to stop."""
    config = progress.config
    size = batch_size or _auto_batch_size(len(todo), workers, config.sweep.replications if config.sweep else 1)
    batches = [todo[start : start + size] for start in range(0, len(todo), size)]
    if backend == "dask":
        _execute_dask(dask_client, batches, context, progress.finished, should_stop)
    elif workers == 1:
        for spec in todo:
            if should_stop():
                return
            for record in execute_batch([spec.to_dict()], str(runs_dir), context, should_stop=should_stop):
                progress.finished(record)
    else:
        _execute_local(batches, str(runs_dir), context, min(workers, len(batches)), progress.finished, should_stop)


def _recover_finished(specs: list[RunSpec], runs_dir: Path, records: dict[str, dict[str, Any]], reused: dict[str, pd.DataFrame]) -> None:
    """Runs that finished inside a batch whose result never came back are complete on disk: count them."""
    for spec in specs:
        if records[spec.run_id]["status"] == PENDING:
            metrics = _reusable(runs_dir / spec.run_id, spec)
            if metrics is not None:
                reused[spec.run_id] = metrics
                records[spec.run_id].update(status=rundir.COMPLETE, ticks_done=len(metrics))


def _finish_sweep(progress: _SweepProgress, runs_dir: Path, reused: Mapping[str, pd.DataFrame], *, stopped: bool, crashed: bool) -> SweepResult:
    """sweep.parquet from every complete run, then the final sweep.json: `complete` when every run
    is (even if a stop came after the last one), else `interrupted` when stopped, else `failed`."""
    specs, records = progress.specs, progress.records
    complete: list[tuple[RunSpec, pd.DataFrame]] = []
    for spec in specs:
        if records[spec.run_id]["status"] != rundir.COMPLETE:
            continue
        metrics = reused.get(spec.run_id)
        if metrics is None:
            try:
                metrics = rundir.read_metrics(runs_dir / spec.run_id / rundir.METRICS)
            except Exception as exc:  # noqa: BLE001
                records[spec.run_id].update(status=rundir.FAILED, error=f"metrics.parquet unreadable: {type(exc).__name__}: {exc}")
                continue
        complete.append((spec, metrics))
    grid = table_axes(progress.config, specs)
    write_sweep_table(progress.directory / SWEEP_TABLE, grid, complete)
    write_runs_table(progress.directory / RUNS_TABLE, grid, complete)
    failed = [spec.run_id for spec in specs if records[spec.run_id]["status"] != rundir.COMPLETE]
    if not failed and not crashed:
        status = SWEEP_COMPLETE
    elif stopped:
        status = SWEEP_INTERRUPTED
    else:
        status = SWEEP_FAILED
    manifest = progress.write_manifest(status, ended=True)
    return SweepResult(
        directory=progress.directory,
        manifest=manifest,
        ran=[spec.run_id for spec in specs if not records[spec.run_id].get("reused") and records[spec.run_id]["status"] != PENDING],
        reused=[spec.run_id for spec in specs if records[spec.run_id].get("reused")],
        failed=failed,
    )


def _previous_records(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        manifest = read_json(directory / SWEEP_MANIFEST)
        return {run["run_id"]: run for run in manifest.get("runs", [])}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _sweep_manifest(
    config: Scenario,
    specs: list[RunSpec],
    records: Mapping[str, Mapping[str, Any]],
    started: Any,
    status: str,
    backend: str,
    workers: int,
    address: str | None,
    scenario_file: str | None,
    overrides: Mapping[str, Any],
    warnings: list[str],
    *,
    ended: bool = False,
) -> dict[str, Any]:
    sweep = config.sweep or SweepConfig()
    counts: dict[str, int] = {}
    for record in records.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    end = rundir.utc_now() if ended else None
    manifest: dict[str, Any] = {
        "format": SWEEP_FORMAT,
        "name": config.name,
        "status": status,
        "seed": config.seed,
        "grid": dict(sweep.grid),
        "grid_keys": [*sweep.grid, *sweep.ranges],
        "replications": sweep.replications,
        "points": len(grid_points(sweep, config.seed)),
        "design": sweep.design,
        "ranges": dict(sweep.ranges),
        "runs_total": len(specs),
        "counts": dict(sorted(counts.items())),
        "started_at": rundir.timestamp(started),
        "ended_at": rundir.timestamp(end) if end else None,
        "duration_seconds": round((end - started).total_seconds(), 3) if end else None,
        "backend": backend,
        "workers": workers,
        "address": address,
        "scenario_file": scenario_file,
        "overrides": dict(overrides),
        "fingerprint": fingerprint(config),
        "seeding": sweep.seeding,
        "seed_rule": (
            "SeedSequence(entropy=seed, spawn_key=(sha256(canonical JSON of "
            + ("{}" if sweep.seeding == "common" else "the grid point")
            + ")[:8] as little-endian int, replication)).generate_state(1, uint64) >> 1"
        ),
        "versions": rundir.package_versions(),
        "source": rundir.source_revision(),
        "platform": platform.platform(),
        "scenario": config.model_dump(mode="json"),
        "runs": [
            {
                "run_id": spec.run_id,
                "grid_index": spec.grid_index,
                "replication": spec.replication,
                "point": spec.point,
                "seed": spec.seed,
                "directory": f"{RUNS_DIR}/{spec.run_id}",
                **records[spec.run_id],
            }
            for spec in specs
        ],
    }
    if warnings:
        manifest["warnings"] = list(warnings)
    return manifest


STOP_POLL_SECONDS = 0.2  # how often the sweep looks at its stop flag while runs are out


def _execute_local(
    batches: list[list[RunSpec]],
    runs_dir: str,
    context: Mapping[str, Any],
    workers: int,
    finished: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> None:
    """Batches on a pool of `workers` spawned processes; each worker writes its run directories.
    Asked to stop, the workers are terminated (runs in progress resume from their checkpoints)."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),))
    futures: dict[Future, list[RunSpec]] = {}
    try:
        for batch in batches:
            futures[pool.submit(execute_batch, [spec.to_dict() for spec in batch], runs_dir, context)] = batch
        pending = set(futures)
        while pending and not should_stop():
            done, pending = wait(pending, timeout=STOP_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                batch = futures[future]
                try:
                    records = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory, ...)
                    records = [_failed_record(spec.to_dict(), f"worker process failed: {type(exc).__name__}: {exc}") for spec in batch]
                for record in records:
                    finished(record)
    except BaseException:
        _abandon(pool, futures)
        raise
    if pending:  # asked to stop
        _abandon(pool, futures)
    pool.shutdown(wait=True, cancel_futures=True)


def _abandon(pool: ProcessPoolExecutor, futures: Iterable[Future]) -> None:
    """Cancel what has not started and terminate the workers (runs in progress are left `running`)."""
    for future in futures:
        future.cancel()
    _terminate(pool)
    pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's worker processes now (runs in progress are left `running`; resume redoes them)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except Exception:  # noqa: BLE001
            pass


def _dask_workers(client: Any) -> int:
    try:
        info = client.scheduler_info()
        return max(1, sum(worker.get("nthreads", 1) for worker in info.get("workers", {}).values()))
    except Exception:  # noqa: BLE001
        return 1


NO_WORKERS_TIMEOUT_SECONDS = 60.0  # a Dask sweep with no worker for this long gives up (docs/sweeps.md)


class NoWorkersError(RuntimeError):
    """Every Dask worker is gone and none came back within NO_WORKERS_TIMEOUT_SECONDS."""


def _execute_dask(
    client: Any,
    batches: list[list[RunSpec]],
    context: Mapping[str, Any],
    finished: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> None:
    """Batches as Dask tasks; the workers send each run's files back and they are written here.
    Gives up (NoWorkersError) when the cluster has had no worker for NO_WORKERS_TIMEOUT_SECONDS."""
    futures = {}
    token = context["fingerprint"][:12]
    for batch in batches:
        key = f"attnsim-{token}-{batch[0].run_id}-{secrets.token_hex(4)}"
        future = client.submit(execute_batch, [spec.to_dict() for spec in batch], None, dict(context), key=key, pure=False, retries=0)
        futures[future] = batch
    pending = set(futures)
    alone_since: float | None = None
    try:
        while pending and not should_stop():
            done = {future for future in pending if future.done()}
            pending -= done
            if not done:
                alone_since = _check_workers(client, alone_since)
                time.sleep(STOP_POLL_SECONDS)
                continue
            alone_since = None
            for future in done:
                batch = futures[future]
                try:
                    records = future.result()
                except Exception as exc:  # noqa: BLE001 - the task failed on the worker (lost worker, import error)
                    records = [_failed_record(spec.to_dict(), f"dask task failed: {type(exc).__name__}: {exc}") for spec in batch]
                for record in records:
                    finished(record)
                future.release()
    except BaseException:
        _cancel_dask(client, futures)
        raise
    if pending:  # asked to stop
        _cancel_dask(client, futures)


def _check_workers(client: Any, alone_since: float | None) -> float | None:
    """When the cluster has no worker: since when; raises NoWorkersError past the timeout."""
    if _dask_worker_count(client):
        return None
    now = time.monotonic()
    if alone_since is None:
        return now
    if now - alone_since >= NO_WORKERS_TIMEOUT_SECONDS:
        raise NoWorkersError(
            f"no Dask worker for {NO_WORKERS_TIMEOUT_SECONDS:.0f} s; the runs not finished are left for the next attempt (run the same command again)"
        )
    return alone_since


def _dask_worker_count(client: Any) -> int:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - the scheduler itself is gone: as good as no workers
        return 0


def _cancel_dask(client: Any, futures: Iterable[Any]) -> None:
    try:
        client.cancel(list(futures))
    except Exception:  # noqa: BLE001
        pass
