"""Run directories: what `attnsim run` writes, and `load_run` to read one back.

A run directory holds

- `manifest.json`: the fully resolved scenario, seed, package versions, start and end time and
  `status` (`running` while the run goes on or if the process was killed, then `complete`,
  `interrupted` or `failed`, with `error` text when failed);
- `metrics.parquet`: one row per tick done, the columns of `simulator.metrics.METRIC_COLUMNS`;
  rewritten during the run (checkpoints) and at the end;
- `summary.json`: `simulator.runner.summarize` of those metrics;
- `plots/*.png`: time series of the headline metrics (see `simulator.plots`);
- `agents/<population>.parquet`: agent panels, only when `metrics.agent_panels` is on (see
  `simulator.panels`); rewritten with the metrics at checkpoints and at the end.

Every file is written atomically (a temporary file in the same directory, then `os.replace`), so
a process killed at any moment leaves the previous good version of each file, never a torn one.
`metrics.parquet` holds nothing but the metrics, so the same scenario and seed give the same bytes.
"""

from __future__ import annotations

import io
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.figures.plots import save_plots, save_run_extras
from simulator.files import TMP_PREFIX, atomic_write_bytes, read_json, write_json
from simulator.metrics.panels import available, write_panels
from simulator.metrics.summary import summarize
from simulator.metrics.table import FLOAT_COLUMNS, METRIC_COLUMNS
from simulator.runs.lock import LOCK_FILE
from simulator.scenario.schema import Scenario

MANIFEST = "manifest.json"
METRICS = "metrics.parquet"
SUMMARY = "summary.json"
PLOTS = "plots"
CHECKPOINT = "checkpoint.pkl"  # the model saved by --checkpoint-every (simulator/runs/checkpoint.py)
RUN_FILES = (MANIFEST, METRICS, SUMMARY, CHECKPOINT)
FORMAT = "attnsim-run/1"

RUNNING = "running"
COMPLETE = "complete"
INTERRUPTED = "interrupted"
FAILED = "failed"
STATUSES = (RUNNING, COMPLETE, INTERRUPTED, FAILED)

class RunDirError(ValueError):
    """The output directory cannot be used (exists and is not empty, is a file, cannot be created)."""


# --- metrics -------------------------------------------------------------------------------------


def normalize_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """The metrics frame with the contract's columns, in order, as int64 / float64."""
    columns = list(METRIC_COLUMNS)
    frame = frame.reindex(columns=columns)
    types = {column: (np.float64 if column in FLOAT_COLUMNS else np.int64) for column in columns}
    return frame.astype(types).reset_index(drop=True)


def metrics_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The metrics frame as Parquet bytes: only the data, so equal frames give equal bytes."""

    table = pa.Table.from_pandas(normalize_metrics(frame), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_metrics(path: str | Path, frame: pd.DataFrame) -> None:
    atomic_write_bytes(path, metrics_parquet_bytes(frame))


def read_metrics(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def empty_metrics() -> pd.DataFrame:
    return normalize_metrics(pd.DataFrame(columns=list(METRIC_COLUMNS)))


# --- the directory -------------------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 with a UTC offset, to the second."""
    return (moment or utc_now()).isoformat(timespec="seconds")


def default_run_dir(name: str, base: str | Path = "runs", moment: datetime | None = None) -> Path:
    """`runs/<name>-<YYYYmmdd-HHMMSS>` in local time, with `-2`, `-3`, ... if that one is taken."""
    stamp = (moment or datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate = Path(base) / f"{name}-{stamp}"
    counter = 2
    while candidate.exists():
        candidate = Path(base) / f"{name}-{stamp}-{counter}"
        counter += 1
    return candidate


def check_output_dir(path: str | Path, *, force: bool = False) -> list[str]:
    """Problems with using `path` as a new run directory (empty when it can be used)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            return [f"{path} is a broken symbolic link"]
        return []
    if not path.is_dir():
        return [f"{path} exists and is not a directory"]
    try:
        non_empty = any(entry.name != LOCK_FILE for entry in path.iterdir())  # its own lock is not content
    except OSError as exc:
        return [f"{path} cannot be read: {exc.strerror or exc}"]
    if non_empty and not force:
        return [f"{path} exists and is not empty; choose another --out or pass --force to write into it"]
    # Files are written (and, under --force, removed) inside these: a link would lead elsewhere.
    linked = [name for name in (PLOTS, "agents", *RUN_FILES) if (path / name).is_symlink()]
    if linked:
        return [f"{path / linked[0]} is a symbolic link; a run directory writes its own files, not through links"]
    return []


def prepare_output_dir(path: str | Path, *, force: bool = False) -> Path:
    """Create `path` (with its parents) for a new run; with `force`, clear an earlier run's files.

    Only the run directory's own files (manifest, metrics, summary, plots/*.png and leftover
    temporary files) are removed under `force`; anything else in the directory is left alone.
    """
    path = Path(path)
    problems = check_output_dir(path, force=force)
    if problems:
        raise RunDirError("; ".join(problems))
    try:
        path.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        for leftover in path.glob(f"{TMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
        agents = path / "agents"
        if agents.is_dir():
            for stale in [*agents.glob("*.parquet"), *agents.glob(f"{TMP_PREFIX}*")]:
                stale.unlink(missing_ok=True)
        plots = path / PLOTS
        if plots.is_dir():
            for png in [*plots.glob("*.png"), *plots.glob(f"{TMP_PREFIX}*")]:
                png.unlink(missing_ok=True)
    except OSError as exc:
        raise RunDirError(f"{path} cannot be used: {exc.strerror or exc}") from None
    return path


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide a run's numbers."""

    versions = {"python": platform.python_version()}
    for label, dist in (
        ("attention-market", "attention-market"),
        ("numpy", "numpy"),
        ("numba", "numba"),
        ("scipy", "scipy"),
        ("mesa", "mesa"),
        ("pandas", "pandas"),
        ("pyarrow", "pyarrow"),
        ("pydantic", "pydantic"),
    ):
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[label] = "unknown"
    return versions


def source_revision(directory: Path = Path(__file__).resolve().parent) -> dict[str, Any] | None:
    """The git commit of the checkout this package runs from and whether it has uncommitted
    changes (`dirty`); None when it is not run from a git checkout (an installed wheel)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


class RunWriter:
    """Writes one run directory: `start()`, any number of `checkpoint(metrics)`, then `finish(...)`.

    The manifest is written first (status `running`) together with an empty `metrics.parquet`,
    so the directory is readable with `load_run` from the start; `finish` writes the final
    metrics, the summary and the plots, and the manifest last with the final status.
    """

    def __init__(
        self,
        directory: str | Path,
        scenario: Scenario,
        *,
        scenario_file: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        command: Sequence[str] | None = None,
        plots: bool = True,
    ):
        self.directory = Path(directory)
        self.scenario = scenario
        self.plots = plots
        self.started = utc_now()
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "name": scenario.name,
            "status": RUNNING,
            "seed": scenario.seed,
            "ticks_requested": scenario.ticks,
            "ticks_done": 0,
            "started_at": timestamp(self.started),
            "ended_at": None,
            "duration_seconds": None,
            "scenario_file": str(Path(scenario_file).resolve()) if scenario_file is not None else None,
            "overrides": dict(overrides or {}),
            "command": list(command) if command is not None else None,
            "versions": package_versions(),
            "source": source_revision(),
            "platform": platform.platform(),
            "scenario": scenario.model_dump(mode="json"),
        }

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def metrics_path(self) -> Path:
        return self.directory / METRICS

    @property
    def summary_path(self) -> Path:
        return self.directory / SUMMARY

    def start(self) -> None:
        write_metrics(self.metrics_path, empty_metrics())
        write_json(self.manifest_path, self.manifest)

    def checkpoint(self, metrics: pd.DataFrame, panels: Mapping[str, pd.DataFrame] | None = None) -> None:
        """Replace metrics.parquet (and `agents/*.parquet` when `panels` are given) with the ticks done so far."""
        write_metrics(self.metrics_path, metrics)
        if panels:

            write_panels(self.directory, panels)

    def finish(
        self,
        status: str,
        metrics: pd.DataFrame | None,
        *,
        error: str | None = None,
        traceback: str | None = None,
        panels: Mapping[str, pd.DataFrame] | None = None,
    ) -> dict[str, Any] | None:
        """Write the final files; returns the summary (None if it could not be computed).

        Metrics come first, the manifest last, so a manifest with a final status always goes with
        final metrics. Plot or summary problems are recorded in the manifest (`warnings`) rather
        than raised, so a failing run still leaves everything that could be written.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        frame = normalize_metrics(metrics if metrics is not None else empty_metrics())
        warnings: list[str] = []
        self.checkpoint(frame)
        if panels:
            try:

                write_panels(self.directory, panels)
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                warnings.append(f"agent panels not written: {type(exc).__name__}: {exc}")
        summary: dict[str, Any] | None = None
        try:
            summary = summarize(frame, self.scenario.metrics.summary_fraction)
            write_json(self.summary_path, summary)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            summary = None
            warnings.append(f"summary.json not written: {type(exc).__name__}: {exc}")
        if self.plots:
            try:

                save_plots(frame, self.directory / PLOTS)

                save_run_extras(frame, panels, self.directory / PLOTS)
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                warnings.append(f"plots not written: {type(exc).__name__}: {exc}")
        ended = utc_now()
        self.manifest.update(
            status=status,
            ticks_done=int(len(frame)),
            ended_at=timestamp(ended),
            duration_seconds=round((ended - self.started).total_seconds(), 3),
        )
        if error is not None:
            self.manifest["error"] = error
        if traceback is not None:
            self.manifest["traceback"] = traceback
        if warnings:
            self.manifest["warnings"] = warnings
        write_json(self.manifest_path, self.manifest)
        return summary


# --- reading -------------------------------------------------------------------------------------


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return read_json(Path(directory) / MANIFEST)


def load_run(directory: str | Path) -> pd.DataFrame:
    """A run directory's metrics, one row per tick, with `attrs["manifest"]` and `attrs["summary"]`.

    `attrs["summary"]` is None when the run ended before writing `summary.json` (a killed
    process); check `attrs["manifest"]["status"]` for `complete`, `interrupted`, `failed` or
    `running` (still running, or killed without a chance to finish). `attrs["panels"]` lists the
    populations whose agent panels the run wrote (empty when off); `simulator.load_panels(DIR)`
    reads them.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a run directory (no such directory)")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{directory} is not a run directory (it has no {MANIFEST})")
    manifest = read_json(manifest_path)
    metrics_path = directory / METRICS
    frame = read_metrics(metrics_path) if metrics_path.is_file() else empty_metrics()
    summary_path = directory / SUMMARY
    summary = read_json(summary_path) if summary_path.is_file() else None
    frame.attrs["manifest"] = manifest
    frame.attrs["summary"] = summary

    frame.attrs["panels"] = available(directory)  # populations with agents/*.parquet; simulator.load_panels reads them
    return frame
