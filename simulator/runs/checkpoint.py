"""Checkpoints: the whole state of a running model in one file, so a long run survives faults.

`save_checkpoint(model, path)` writes everything the next tick depends on: every attribute the
model holds beyond mesa's own bookkeeping (the `MarketState` dataclass tree, the allocation rule
with whatever it learned, agent panels, and anything added later, found generically), the
state of the model's random generators, mesa's step count and the metrics recorded so far.
`load_checkpoint(path)` rebuilds an `AttentionMarket` that continues exactly where the saved one
stood: a run interrupted, resumed and finished gives the same metrics, byte for byte, as the
same run done in one go.

The file (`checkpoint.pkl` in a run directory) is written atomically (a temporary file in the
same directory, fsynced, then renamed over the old one), so a process killed while writing
leaves the previous checkpoint whole. Layout:

    ATTNSIM-CHECKPOINT\\n
    one line of JSON: format, version, tick, the resolved scenario and its SHA-256, versions
    the payload: a pickle (protocol 5)
    a fixed-size trailer: payload length and the SHA-256 of everything before the trailer

Loading checks the magic, the version, the length and the digest before unpickling, and
unpickles with an allowlist (the simulator's own classes, numpy arrays and generators, plain
containers): a damaged or foreign file is refused with a clear `CheckpointError`, never half
loaded, and a crafted one cannot make the loader call arbitrary functions. Still, resume only
run directories you trust.

Run directories: `execute` drives a model inside a `RunWriter`'s directory, rewriting metrics
every few seconds and the checkpoint every N ticks; `finish_run` writes the final files;
`open_resume` prepares an interrupted run directory for resuming; `resume_or_start` does the
whole thing for one run of a sweep (skip if complete, resume from the checkpoint if there is
one, start afresh otherwise).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
import traceback as traceback_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.scenario.schema import Scenario, ScenarioError, ScenarioIssue, load_scenario
from simulator.registry import REGISTRIES
from simulator.files import TMP_PREFIX, atomic_file
from simulator.model import AttentionMarket
from simulator.runs.rundir import RunWriter
from simulator.runs.rundir import package_versions
from simulator.metrics.invariants import InvariantViolation
from simulator.runs.driver import run as run_scenario
from simulator.runs import rundir
from simulator.runs.rundir import MANIFEST
import pandas as pd
import mesa



CHECKPOINT = "checkpoint.pkl"
FORMAT = "attnsim-checkpoint"
FORMAT_VERSION = 1
MAGIC = b"ATTNSIM-CHECKPOINT\n"
_TRAILER_TAG = b"\nATTNSIM-END "
_TRAILER_SIZE = len(_TRAILER_TAG) + 16 + 1 + 64 + 1  # tag, length (hex), space, sha256 (hex), newline
_MAX_HEADER = 64 * 1024 * 1024
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or used: unreadable, damaged, foreign or mismatched."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")

    def issue(self, key: str = "<checkpoint>") -> ScenarioIssue:
        """The problem as a `FILE:1:1: key: message` line for the command line."""
        return ScenarioIssue(self.path, 1, 1, key, self.message)


# --- the scenario's fingerprint --------------------------------------------------------------------


def scenario_json(scenario: Scenario | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved scenario as plain JSON data (what manifest.json holds under `scenario`)."""
    data = scenario.model_dump(mode="json") if isinstance(scenario, Scenario) else scenario
    return json.loads(json.dumps(data, allow_nan=False))


def scenario_digest(scenario: Scenario | Mapping[str, Any]) -> str:
    """SHA-256 of the resolved scenario in canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(scenario_json(scenario), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- what a checkpoint may contain -----------------------------------------------------------------

_BUILTIN_CLASSES = frozenset(
    {"int", "float", "complex", "bool", "str", "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset", "slice", "range", "object"}
)
_COLLECTION_CLASSES = frozenset({"deque", "defaultdict", "OrderedDict", "Counter"})
_DATETIME_CLASSES = frozenset({"date", "datetime", "time", "timedelta", "timezone"})
_FUNCTIONS = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("copyreg", "_reconstructor"),
    }
)


def _allowed_numpy_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    if issubclass(obj, np.ndarray):
        return obj is np.ndarray  # not np.memmap and friends, which open files
    if issubclass(obj, (np.dtype, np.generic)):
        return True
    return issubclass(obj, (np.random.BitGenerator, np.random.Generator, np.random.SeedSequence, np.random.RandomState))


def allowed_global(module: str, name: str, obj: Any) -> bool:
    """Whether a checkpoint may refer to `module.name` (which resolved to `obj`)."""
    root = module.split(".")[0]
    if (module, name) in _FUNCTIONS:
        return True
    if isinstance(obj, type) and any(obj is rule for kind in REGISTRIES.values() for rule in kind.rules.values()):
        return True  # a registered rule (a plug-in's too): the scenario that names it registered it
    if root == "simulator":
        return isinstance(obj, type)  # the simulator's own classes, never its functions
    if root == "numpy":
        return _allowed_numpy_class(obj)
    if module == "builtins":
        return name in _BUILTIN_CLASSES or obj is type(None)
    if module == "collections":
        return name in _COLLECTION_CLASSES
    if module == "datetime":
        return name in _DATETIME_CLASSES
    return False


class _CheckingPickler(pickle.Pickler):
    """A pickler that refuses, at save time, anything the loader would refuse."""

    def persistent_id(self, obj: Any) -> None:
        if isinstance(obj, type) or type(obj).__name__ in _FUNCTION_TYPES:  # saved by reference
            module, name = getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "")
            if not allowed_global(module, name, obj):
                raise pickle.PicklingError(f"the model holds {module}.{name}, which a checkpoint may not refer to")
            return None
        kind = type(obj)
        if kind in _PLAIN_TYPES or kind in _CHECKED_TYPES:
            return None
        if not allowed_global(kind.__module__, kind.__qualname__, kind):
            raise pickle.PicklingError(
                f"the model holds a {kind.__module__}.{kind.__qualname__}, which a checkpoint may not hold "
                "(allowed: the simulator's classes, numpy arrays and generators, plain containers)"
            )
        _CHECKED_TYPES.add(kind)
        return None


_FUNCTION_TYPES = frozenset({"function", "builtin_function_or_method", "cython_function_or_method", "method", "method_descriptor"})
_PLAIN_TYPES = frozenset({int, float, bool, str, bytes, bytearray, tuple, list, dict, set, frozenset, type(None), pickle.PickleBuffer})
_CHECKED_TYPES: set[type] = set()


# What unpickling damaged bytes can raise (random bytes can ask for absurd sizes: OverflowError,
# MemoryError; or nest without end: RecursionError).
UNPICKLING_FAILURES = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError,
    OverflowError, MemoryError, RecursionError,
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            obj = super().find_class(module, name)
        except (ImportError, AttributeError) as exc:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which this installation does not have ({exc})") from None
        if not allowed_global(module, name, obj):
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a checkpoint may not refer to")
        return obj


# --- the model's state -------------------------------------------------------------------------------

_MESA_ATTRIBUTES: frozenset[str] | None = None
_REBUILT = frozenset({"config", "datacollector"})


def _mesa_attributes() -> frozenset[str]:
    """Attributes every bare `mesa.Model` has: mesa's bookkeeping, rebuilt rather than pickled."""
    global _MESA_ATTRIBUTES
    if _MESA_ATTRIBUTES is None:

        _MESA_ATTRIBUTES = frozenset(vars(mesa.Model(rng=0)))
    return _MESA_ATTRIBUTES


def model_state(model: AttentionMarket) -> dict[str, Any]:
    """Everything of `model` that the next tick depends on (what a checkpoint pickles)."""
    skip = _mesa_attributes() | _REBUILT
    return {
        "attributes": {name: value for name, value in vars(model).items() if name not in skip},
        "running": bool(model.running),
        "steps": int(model.steps),
        "rng": model.rng.bit_generator.state,
        "random": model.random.getstate(),
        "model_vars": {name: list(values) for name, values in model.datacollector.model_vars.items()},
    }


def restore_model(scenario: Scenario, state: Mapping[str, Any]) -> AttentionMarket:
    """An `AttentionMarket` for `scenario` in the saved `state`, without drawing a fresh market."""


    model = AttentionMarket.__new__(AttentionMarket)
    mesa.Model.__init__(model, rng=scenario.seed)
    model.config = scenario
    model.datacollector = model.new_datacollector()
    for name, value in state["attributes"].items():
        setattr(model, name, value)
    # mesa's clock: run its scheduler through the saved steps with a no-op step, so `steps` and
    # `time` read as they did and the next step() is the next tick.
    steps = int(state["steps"])
    if steps:
        user_step = getattr(model, "_user_step", None)
        if user_step is not None and hasattr(model, "_advance_time"):
            model._user_step = lambda: None
            try:
                model._advance_time(float(steps))
            finally:
                model._user_step = user_step
        model.steps = steps
    model.running = bool(state["running"])
    model.rng.bit_generator.state = state["rng"]
    model.random.setstate(state["random"])
    model.datacollector.model_vars = {name: list(values) for name, values in state["model_vars"].items()}
    return model


# --- writing -------------------------------------------------------------------------------------------


class _HashingWriter:
    def __init__(self, handle: Any, digest: Any):
        self.handle = handle
        self.digest = digest
        self.count = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.digest.update(view)
        self.handle.write(view)
        self.count += len(view)
        return len(view)


def _versions() -> dict[str, str]:

    return package_versions()


def save_checkpoint(model: AttentionMarket, path: str | Path) -> Path:
    """Write `model`'s whole state to `path`, atomically; returns the path.

    Raises `CheckpointError` when the model holds something a checkpoint may not (a function, an
    open file, a class from outside the allowlist); the old checkpoint is then left as it was.
    """
    path = Path(path)
    scenario = scenario_json(model.config)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tick": int(model.market.tick),
        "ticks": int(model.config.ticks),
        "scenario_sha256": scenario_digest(scenario),
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": _versions(),
        "scenario": scenario,
    }
    header_bytes = json.dumps(header, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii") + b"\n"
    digest = hashlib.sha256()
    with atomic_file(path, buffering=_CHUNK) as handle:
        writer = _HashingWriter(handle, digest)
        writer.write(MAGIC)
        writer.write(header_bytes)
        start = writer.count
        try:
            _CheckingPickler(writer, protocol=5).dump(model_state(model))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CheckpointError(path, f"cannot checkpoint this model: {exc}") from None
        length = writer.count - start
        handle.write(_TRAILER_TAG + f"{length:016x} {digest.hexdigest()}\n".encode("ascii"))
    return path


# --- reading -------------------------------------------------------------------------------------------


def read_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's header (format, version, tick, scenario and its digest), checked but
    without reading the payload. Raises `CheckpointError` for anything but a checkpoint of this
    format version."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read_header(handle, path)[0]
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the checkpoint: {exc.strerror or exc}") from None


def _read_header(handle: Any, path: Path) -> tuple[dict[str, Any], int]:
    magic = handle.read(len(MAGIC))
    if magic != MAGIC:
        raise CheckpointError(path, "not an attnsim checkpoint (wrong magic bytes); the file is damaged or foreign")
    line = handle.readline(_MAX_HEADER)
    if not line.endswith(b"\n"):
        raise CheckpointError(path, "corrupt checkpoint: its header is truncated")
    try:
        header = json.loads(line.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(path, "corrupt checkpoint: its header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(path, "corrupt checkpoint: its header is not an attnsim checkpoint header")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format version {header.get('version')!r}; this attnsim reads version {FORMAT_VERSION}"
        )
    for key, kind in (("tick", int), ("scenario_sha256", str), ("scenario", dict)):
        if not isinstance(header.get(key), kind):
            raise CheckpointError(path, f"corrupt checkpoint: its header has no valid {key!r}")
    if scenario_digest(header["scenario"]) != header["scenario_sha256"]:
        raise CheckpointError(path, "corrupt checkpoint: its scenario does not match the digest stored with it")
    return header, len(MAGIC) + len(line)


def _verify(handle: Any, path: Path, payload_start: int) -> int:
    """Check the trailer's length and digest; returns the payload's length."""
    size = os.fstat(handle.fileno()).st_size
    if size < payload_start + _TRAILER_SIZE:
        raise CheckpointError(path, "corrupt checkpoint: the file is truncated")
    handle.seek(size - _TRAILER_SIZE)
    trailer = handle.read(_TRAILER_SIZE)
    if not trailer.startswith(_TRAILER_TAG) or not trailer.endswith(b"\n"):
        raise CheckpointError(path, "corrupt checkpoint: the file is truncated or damaged (no end marker)")
    try:
        length_hex, digest_hex = trailer[len(_TRAILER_TAG) : -1].decode("ascii").split(" ")
        length = int(length_hex, 16)
    except ValueError:
        raise CheckpointError(path, "corrupt checkpoint: its end marker is damaged") from None
    if payload_start + length + _TRAILER_SIZE != size:
        raise CheckpointError(path, "corrupt checkpoint: the file's length does not match its end marker")
    digest = hashlib.sha256()
    handle.seek(0)
    remaining = size - _TRAILER_SIZE
    while remaining:
        chunk = handle.read(min(_CHUNK, remaining))
        if not chunk:
            raise CheckpointError(path, "corrupt checkpoint: the file changed while being read")
        digest.update(chunk)
        remaining -= len(chunk)
    if digest.hexdigest() != digest_hex:
        raise CheckpointError(path, "corrupt checkpoint: its SHA-256 does not match (the file was damaged)")
    return length


def load_checkpoint(path: str | Path, *, expect_digest: str | None = None) -> AttentionMarket:
    """The model saved in `path`, ready to continue with its next `step()`.

    `expect_digest` (a `scenario_digest`) refuses a checkpoint of another scenario. Raises
    `CheckpointError` for an unreadable, damaged, foreign or mismatched file.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the checkpoint: {exc.strerror or exc}") from None
    with handle:
        header, payload_start = _read_header(handle, path)
        if expect_digest is not None and header["scenario_sha256"] != expect_digest:
            raise CheckpointError(
                path, "the checkpoint's scenario does not match the run's manifest (a checkpoint of another run?)"
            )
        length = _verify(handle, path, payload_start)
        try:
            scenario = load_scenario(header["scenario"])
        except ScenarioError as exc:
            raise CheckpointError(path, f"the checkpoint's scenario is not valid here: {exc.issues[0].key}: {exc.issues[0].message}") from None
        if not 0 <= header["tick"] <= scenario.ticks:
            raise CheckpointError(path, f"the checkpoint is at tick {header['tick']}, outside 0..{scenario.ticks}")
        handle.seek(payload_start)
        try:
            state = _RestrictedUnpickler(_Bounded(handle, length)).load()
        except UNPICKLING_FAILURES as exc:
            raise CheckpointError(path, f"corrupt checkpoint: cannot unpickle it: {exc}") from None
    if not isinstance(state, dict) or not {"attributes", "running", "steps", "rng", "random", "model_vars"} <= set(state):
        raise CheckpointError(path, "corrupt checkpoint: its payload is not a model state")
    try:
        model = restore_model(scenario, state)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(path, f"corrupt checkpoint: cannot restore the model: {exc}") from None
    market = getattr(model, "market", None)
    if market is None or getattr(market, "tick", None) != header["tick"]:
        raise CheckpointError(path, "corrupt checkpoint: its state does not match its header")
    return model


class _Bounded(io.RawIOBase):
    """A read-only view of the next `length` bytes of `handle`."""

    def __init__(self, handle: Any, length: int):
        self.handle = handle
        self.remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        view = memoryview(buffer)[: self.remaining]
        got = self.handle.readinto(view)
        self.remaining -= got or 0
        return got or 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self.handle.read(size)
        self.remaining -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        limit = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self.handle.readline(limit)
        self.remaining -= len(data)
        return data


# --- running inside a run directory ------------------------------------------------------------------


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


def _panel_frames(model: Any) -> dict[str, Any] | None:
    recorder = getattr(model, "panels", None)
    if recorder is None:
        return None
    try:
        return recorder.frames()
    except Exception:  # noqa: BLE001 - a half-updated model after a failure: keep the last checkpoint
        return None


def execute(
    writer: RunWriter,
    model: AttentionMarket,
    *,
    checkpoint_every: int = 0,
    checkpoint_seconds: float = 5.0,
    on_tick: Callable[[AttentionMarket], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
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
            writer.checkpoint(current.metrics, _panel_frames(current))
            clock["last"] = time.monotonic()
        elif clock["first"] or now - clock["last"] >= checkpoint_seconds:
            writer.checkpoint(current.metrics, _panel_frames(current))
            clock["last"] = time.monotonic()
        clock["first"] = False
        if on_tick is not None:
            on_tick(current)

    try:
        result = run_scenario(model.config, model=model, on_tick=tick_done, should_stop=should_stop)
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
    outcome.panels = _panel_frames(model)
    if getattr(model, "allocation_mode", None) is not None:  # which allocation ran (allocation.candidates)
        writer.manifest.update(
            allocation_mode=model.allocation_mode,
            allocation_mode_reason=model.allocation_mode_reason,
            allocation_mode_ticks=dict(model.allocation_modes),
        )
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
        rundir.write_json(writer.manifest_path, writer.manifest)
    if outcome.status == rundir.COMPLETE:
        (writer.directory / CHECKPOINT).unlink(missing_ok=True)
    outcome.summary = summary
    return summary


# --- resuming ----------------------------------------------------------------------------------------


@dataclass
class ResumePlan:
    """A run directory ready to resume: its writer (manifest back to `running`) and the model."""

    writer: RunWriter
    model: AttentionMarket
    from_tick: int  # 0 when there was no checkpoint and the run starts afresh
    previous_status: str
    checkpoint_every: int
    plots: bool


class ResumeError(ValueError):
    """A run directory that cannot be resumed; `issues` are located problems, as ScenarioError's."""

    def __init__(self, issues: list[ScenarioIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def read_run_scenario(directory: str | Path) -> tuple[dict[str, Any], Scenario]:
    """A run directory's manifest and its validated scenario; ResumeError when either is unusable."""

    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise ResumeError([ScenarioIssue(str(directory), 1, 1, "<dir>", "not a run directory (no such directory)")])
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResumeError([ScenarioIssue(str(manifest_path), 1, 1, "<file>", f"cannot read the manifest: {exc.strerror or exc}")]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeError([ScenarioIssue(str(manifest_path), 1, 1, "<file>", f"the manifest is not valid JSON: {exc}")]) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("scenario"), dict):
        raise ResumeError([ScenarioIssue(str(manifest_path), 1, 1, "scenario", "the manifest holds no resolved scenario")])
    try:
        scenario = load_scenario(manifest["scenario"])
    except ScenarioError as exc:
        issues = [ScenarioIssue(str(manifest_path), 1, 1, f"scenario.{issue.key}", issue.message) for issue in exc.issues]
        raise ResumeError(issues) from None
    return manifest, scenario


def open_resume(
    directory: str | Path,
    *,
    checkpoint_every: int | None = None,
    plots: bool | None = None,
    on_corrupt: str = "raise",
) -> ResumePlan:
    """Prepare `directory` (a run that did not complete) to continue from its checkpoint.

    Refuses (ResumeError) a directory without a readable manifest, a checkpoint whose scenario
    differs from the manifest's, or, with `on_corrupt="raise"`, a damaged checkpoint; with
    `on_corrupt="restart"` a damaged checkpoint is set aside and the run starts from tick 0. A
    directory without a checkpoint starts from tick 0 too (same scenario and seed, so the same
    result). The manifest goes back to `running`, with the resume recorded under `resumes`.
    `checkpoint_every` and `plots` default to what the run was started with.
    """

    directory = Path(directory)
    manifest, scenario = read_run_scenario(directory)
    previous = manifest.get("status")
    if previous == rundir.COMPLETE:
        raise ResumeError([ScenarioIssue(str(directory / rundir.MANIFEST), 1, 1, "status", "the run is already complete; nothing to resume")])
    checkpoint_path = directory / CHECKPOINT
    expected = scenario_digest(manifest["scenario"])
    model: AttentionMarket | None = None
    notes: list[str] = []
    if checkpoint_path.exists():
        try:
            model = load_checkpoint(checkpoint_path, expect_digest=expected)
        except CheckpointError as exc:
            mismatch = "does not match the run's manifest" in exc.message
            if on_corrupt != "restart" or mismatch:
                raise ResumeError([exc.issue()]) from None
            aside = checkpoint_path.with_name(f"{CHECKPOINT}.corrupt")
            os.replace(checkpoint_path, aside)
            notes.append(f"the checkpoint was unusable ({exc.message}); moved to {aside.name}, restarted from tick 0")
    if model is None:
        model = AttentionMarket(scenario)
    from_tick = int(model.market.tick)

    every = checkpoint_every if checkpoint_every is not None else int(manifest.get("checkpoint_every") or 0)
    draw = plots if plots is not None else bool(manifest.get("plots", True))
    writer = rundir.RunWriter(directory, model.config, plots=draw)
    versions = writer.manifest["versions"]
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
    resumed = dict(manifest)
    for key in ("error", "traceback", "violation", "warnings"):
        resumed.pop(key, None)
    record: dict[str, Any] = {"at": rundir.timestamp(), "from_tick": from_tick, "previous_status": previous}
    if manifest.get("versions") and manifest.get("versions") != versions:
        record["versions"] = versions  # results may differ from an uninterrupted run
    if notes:
        record["notes"] = notes
    resumed.update(
        status=rundir.RUNNING,
        ticks_done=from_tick,
        ended_at=None,
        duration_seconds=None,
        checkpoint_every=every,
        plots=draw,
        resumes=[*manifest.get("resumes", []), record],
    )
    writer.manifest = resumed
    try:
        writer.started = datetime.fromisoformat(manifest["started_at"])
    except (KeyError, TypeError, ValueError):
        pass
    writer.checkpoint(model.metrics, _panel_frames(model))
    rundir.write_json(writer.manifest_path, writer.manifest)
    return ResumePlan(writer, model, from_tick, str(previous), every, draw)


def resumable(directory: str | Path, scenario: Scenario) -> AttentionMarket | None:
    """The model in `directory/checkpoint.pkl` if it is a usable checkpoint of exactly `scenario`,
    else None (no checkpoint, a damaged one, another scenario's); never raises.

    The hook for code that writes its own run directories (sweeps): call it before clearing the
    directory, and continue the returned model (`runner.run(scenario, model=...)`) instead of a
    fresh one; `checkpointer` saves new checkpoints as the run goes on."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        model = load_checkpoint(path, expect_digest=scenario_digest(scenario))
    except CheckpointError:
        return None
    return model if model.running else None


def checkpointer(directory: str | Path, every: int, warnings: list[str] | None = None) -> Callable[[AttentionMarket], None]:
    """An `on_tick` callback that saves the model to `directory/checkpoint.pkl` after every
    `every`-th tick (0: never) while the run goes on. A save that fails stops further saves and
    appends a line to `warnings` (the run itself goes on)."""
    path = Path(directory) / CHECKPOINT
    state = {"on": every > 0}

    def on_tick(model: AttentionMarket) -> None:
        if not state["on"] or model.market.tick % every or not model.running:
            return
        try:
            save_checkpoint(model, path)
        except CheckpointError as exc:
            state["on"] = False
            if warnings is not None:
                warnings.append(f"checkpoints stopped at tick {model.market.tick}: {exc.message}")

    return on_tick


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
                summary = rundir.read_json(summary_path) if summary_path.is_file() else None
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
    writer.manifest["checkpoint_every"] = checkpoint_every
    writer.manifest["plots"] = plots
    writer.start()
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
