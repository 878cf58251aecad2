"""Checkpoints: the whole state of a running model in one file, so a long run survives faults.

`save_checkpoint(model, path)` writes everything the next tick depends on: every attribute the
model holds beyond mesa's own bookkeeping (the `MarketState` dataclass tree, the allocation rule
with whatever it learned, agent panels, and anything added later, found generically), the
state of the model's random generators, mesa's step count and the metrics recorded so far.
`load_checkpoint(path)` rebuilds an `AttentionMarket` that continues exactly where the saved one
stood: a run interrupted, resumed and finished gives the same metrics, byte for byte, as the
same run done in one go.

The file (`checkpoint.pkl` in a run directory; the name is historical, it holds no pickle) is
written atomically (a temporary file in the same directory, fsynced, then renamed over the old
one), so a process killed while writing leaves the previous checkpoint whole. Layout:

    ATTNSIM-CHECKPOINT\\n
    one line of JSON: format, version, tick, the resolved scenario and its SHA-256, versions
    the payload: an uncompressed .npz archive of the state's arrays, plus its structure as JSON
        (member `state`; see simulator/runs/snapshot.py)
    a fixed-size trailer: payload length and the SHA-256 of everything before the trailer

Nothing in the file is code, and loading runs none: the magic, the version, the length and the
digest are checked first, then only .npy arrays of plain dtypes are read (never with pickle) and
only the simulator's own state classes, by an explicit table, are rebuilt; the allocation rule
is rebuilt from the scenario by its registered name. A damaged or foreign file is refused with a
clear `CheckpointError`, never half loaded. Resume also refuses a checkpoint that is a symlink
leading outside its run directory (`checkpoint_in`).

Run directories: `open_resume` prepares an interrupted run directory for resuming and
`resumable` finds a usable checkpoint of a given scenario; the driver (runs/driver.py) runs them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import mesa
import numpy as np

from simulator.files import TMP_PREFIX, atomic_file, write_json
from simulator.market.state import MarketState
from simulator.model import AttentionMarket
from simulator.rules.ruleset import RuleSet
from simulator.runs import rundir
from simulator.runs.rundir import MANIFEST, RunWriter, package_versions
from simulator.runs.snapshot import Decoder, Encoder, SnapshotError
from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    ScenarioIssue,
    load_scenario,
)

CHECKPOINT = "checkpoint.pkl"
FORMAT = "attnsim-checkpoint"
FORMAT_VERSION = 2  # 1 was a pickle, which a crafted file could make run commands; never read again
STATE_MEMBER = "state"  # the payload member holding the state's JSON
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


# --- the model's state -------------------------------------------------------------------------------

_MESA_ATTRIBUTES: frozenset[str] | None = None
_REBUILT = frozenset({"config", "datacollector", "rules", "_agent_views"})  # the agent views are rebuilt on the next read
_STATE_KEYS = frozenset({"attributes", "rule", "running", "steps", "time", "rng", "random", "model_vars"})


def _mesa_attributes() -> frozenset[str]:
    """Attributes every bare `mesa.Model` has: mesa's bookkeeping, rebuilt rather than saved."""
    global _MESA_ATTRIBUTES
    if _MESA_ATTRIBUTES is None:
        _MESA_ATTRIBUTES = frozenset(vars(mesa.Model(rng=0)))
    return _MESA_ATTRIBUTES


def _rule_state(model: AttentionMarket, encoder: Encoder) -> dict[str, Any]:
    """The rules by their registered classes, and each rule's `state_dict()` (rules are rebuilt
    from the scenario through the registries on load: a rule set on the model by hand cannot be
    checkpointed)."""
    expected = RuleSet.of(model.config)
    classes = {}
    for spec in fields(RuleSet):
        rule, wanted = getattr(model.rules, spec.name), getattr(expected, spec.name)
        if type(rule) is not type(wanted):
            raise SnapshotError(
                f"the model's {spec.name} rule is a {type(rule).__qualname__}, not the scenario's registered "
                f"{type(wanted).__qualname__}; a checkpoint rebuilds the rule from the scenario"
            )
        classes[spec.name] = type(rule).__name__
    state = {spec.name: getattr(model.rules, spec.name).state_dict() for spec in fields(RuleSet) if hasattr(getattr(model.rules, spec.name), "state_dict")}
    return {"classes": classes, "state": encoder.attributes(state, "model.rules")}


def model_state(model: AttentionMarket) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Everything of `model` that the next tick depends on, as JSON data and named arrays.

    Every attribute the model holds beyond mesa's own bookkeeping is saved (found generically,
    so state added later is saved too); raises SnapshotError for one a checkpoint may not hold."""
    skip = _mesa_attributes() | _REBUILT
    encoder = Encoder()
    state = {
        "attributes": encoder.attributes({name: value for name, value in vars(model).items() if name not in skip}, "model"),
        "rule": _rule_state(model, encoder),
        "running": bool(model.running),
        "steps": int(model.steps),
        "time": float(model.time),
        "rng": encoder.bit_generator(model.rng.bit_generator, "model.rng"),
        "random": encoder.encode(model.random.getstate(), "model.random"),
        "model_vars": encoder.encode({name: list(values) for name, values in model.datacollector.model_vars.items()}, "model.datacollector"),
    }
    return state, encoder.arrays


def restore_model(scenario: Scenario, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> AttentionMarket:
    """An `AttentionMarket` for `scenario` in the saved `state`, without drawing a fresh market.

    Mesa's clock is brought to the saved step through its public `run_for`, with the model's
    step switched off meanwhile (`replaying_clock`). Raises SnapshotError for a malformed state."""
    steps, saved_time = state["steps"], state["time"]
    if type(steps) is not int or not 0 <= steps <= scenario.ticks:
        raise SnapshotError(f"step count {steps!r} outside 0..{scenario.ticks}")
    decoder = Decoder(arrays)
    model = AttentionMarket.__new__(AttentionMarket)
    model.replaying_clock = True
    mesa.Model.__init__(model, rng=scenario.seed)
    if steps:
        model.run_for(steps)
    del model.replaying_clock
    if model.steps != steps or model.time != saved_time:
        raise SnapshotError(f"mesa's clock reads step {model.steps} at time {model.time}, the checkpoint step {steps} at time {saved_time!r}")
    model.config = scenario
    model.datacollector = model.new_datacollector()
    for name, value in decoder.attributes(state["attributes"]).items():
        setattr(model, name, value)
    model.rules = _restored_rules(scenario, state["rule"], decoder)
    model.running = bool(state["running"])
    model.rng.bit_generator.state = decoder.bit_generator(state["rng"]).state
    random_state = decoder.decode(state["random"])
    try:
        model.random.setstate(random_state)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"bad state of the stdlib generator: {exc}") from None
    model_vars = decoder.decode(state["model_vars"])
    if type(model_vars) is not dict or not all(type(name) is str and type(rows) is list for name, rows in model_vars.items()):
        raise SnapshotError("the recorded metrics are not columns of rows")
    model.datacollector.model_vars = model_vars
    return model


def _restored_rules(scenario: Scenario, saved: Any, decoder: Decoder) -> RuleSet:
    """The scenario's rules, rebuilt through the registries, with their saved states loaded."""
    rules = RuleSet.of(scenario)
    classes = {spec.name: type(getattr(rules, spec.name)).__name__ for spec in fields(RuleSet)}
    if type(saved) is not dict or saved.get("classes") != classes:
        raise SnapshotError("the saved rules are not the scenario's registered rules")
    for kind, state in decoder.attributes(saved.get("state")).items():
        rule = getattr(rules, kind, None)
        if not hasattr(rule, "load_state_dict") or type(state) is not dict:
            raise SnapshotError(f"a saved state for the {kind} rule, which keeps none")
        try:
            rule.load_state_dict(state)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise SnapshotError(f"the {kind} rule's saved state does not fit it: {exc}") from None
    return rules


# --- writing -------------------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only stream that hashes what it writes (zipfile counts positions itself)."""

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

    def flush(self) -> None:
        self.handle.flush()


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
    try:
        state, arrays = model_state(model)  # before the file is opened: a refusal leaves the old one
    except SnapshotError as exc:
        raise CheckpointError(path, f"cannot checkpoint this model: {exc}") from None
    header_bytes = json.dumps(header, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii") + b"\n"
    digest = hashlib.sha256()
    with atomic_file(path, buffering=_CHUNK) as handle:
        writer = _HashingWriter(handle, digest)
        writer.write(MAGIC)
        writer.write(header_bytes)
        start = writer.count
        _write_payload(writer, state, arrays)
        length = writer.count - start
        handle.write(_TRAILER_TAG + f"{length:016x} {digest.hexdigest()}\n".encode("ascii"))
    return path


def _write_payload(writer: _HashingWriter, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The payload: an uncompressed .npz of the state's arrays and its JSON (as bytes, `STATE_MEMBER`)."""
    text = json.dumps(state, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    members = {STATE_MEMBER: np.frombuffer(text, dtype=np.uint8), **arrays}
    with zipfile.ZipFile(writer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # what np.savez writes
        for name, values in members.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # same state, same bytes
            with archive.open(entry, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(values), allow_pickle=False)


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
        old = " (a pickle, which this attnsim never loads: it could run code)" if header.get("version") == 1 else ""
        raise CheckpointError(
            path, f"checkpoint format version {header.get('version')!r}{old}; this attnsim reads version {FORMAT_VERSION}"
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
        state, arrays = _read_payload(handle, path, payload_start, length)
    if not isinstance(state, dict) or not _STATE_KEYS <= set(state):
        raise CheckpointError(path, "corrupt checkpoint: its payload is not a model state")
    try:
        model = restore_model(scenario, state, arrays)
    except SnapshotError as exc:
        raise CheckpointError(path, f"corrupt checkpoint: cannot restore the model: {exc}") from None
    except RecursionError:
        raise CheckpointError(path, "corrupt checkpoint: cannot restore the model: its state nests too deeply") from None
    market = getattr(model, "market", None)
    if not isinstance(market, MarketState) or market.tick != header["tick"]:
        raise CheckpointError(path, "corrupt checkpoint: its state does not match its header")
    return model


# What reading a damaged archive can raise (zipfile and numpy's .npy reader report damage in many ways).
ARCHIVE_FAILURES = (
    zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, TypeError, KeyError, IndexError, EOFError, OSError,
    OverflowError, MemoryError, RecursionError, NotImplementedError, struct.error, UnicodeDecodeError,
)


def _read_payload(handle: Any, path: Path, start: int, length: int) -> tuple[Any, dict[str, np.ndarray]]:
    """The payload's state (JSON) and arrays; only uncompressed .npy members of plain dtypes are
    read (sizes are checked against the file before anything is allocated), never a pickle."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(_Window(handle, start, length)) as archive:
            members = archive.infolist()
            names = [member.filename for member in members]
            if len(set(names)) != len(names):
                raise ValueError("its archive lists a member twice")
            if sum(member.file_size for member in members) > length:
                raise ValueError("its archive unpacks to more bytes than it holds")
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED or not member.filename.endswith(".npy"):
                    raise ValueError(f"its archive holds {member.filename[:60]!r}, which is not a stored .npy array")
                with archive.open(member) as stream:
                    arrays[member.filename[: -len(".npy")]] = _read_array(stream, member.file_size)
        text = arrays.pop(STATE_MEMBER)
        if text.dtype != np.uint8 or text.ndim != 1:
            raise ValueError("its state is not a byte string")
        state = json.loads(text.tobytes().decode("ascii"))
    except ARCHIVE_FAILURES as exc:
        reason = "it holds no state" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc)[:200]}"
        raise CheckpointError(path, f"corrupt checkpoint: cannot read its payload ({reason})") from None
    return state, arrays


def _read_array(stream: Any, size: int) -> np.ndarray:
    """One .npy member: its header checked (a plain dtype, no more data than the member holds) first."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"an .npy array of format version {version}")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = reader(stream)
    if dtype.hasobject or dtype.kind not in "biufcUSmM":
        raise ValueError(f"an array of dtype {dtype}")
    count = math.prod(shape)
    if count * dtype.itemsize > size:
        raise ValueError(f"an array of shape {shape} larger than its {size} bytes")
    data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError("an array cut short")
    values = np.frombuffer(data, dtype=dtype).copy()
    return values.reshape(shape[::-1]).transpose() if fortran_order else values.reshape(shape)


class _Window(io.RawIOBase):
    """A read-only, seekable view of `length` bytes of `handle` from `start` (the payload)."""

    def __init__(self, handle: Any, start: int, length: int):
        self.handle, self.start, self.length, self.position = handle, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the payload")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: max(0, self.length - self.position)]
        if not len(view):
            return 0
        self.handle.seek(self.start + self.position)
        got = self.handle.readinto(view) or 0
        self.position += got
        return got


def panel_frames(model: Any) -> dict[str, Any] | None:
    """The model's agent panels as frames (None when off, or when a failed tick left them unreadable)."""
    recorder = getattr(model, "panels", None)
    if recorder is None:
        return None
    try:
        return recorder.frames()
    except Exception:  # noqa: BLE001 - a half-updated model after a failure: keep the last checkpoint
        return None



# --- resuming ----------------------------------------------------------------------------------------


def checkpoint_in(directory: str | Path) -> Path:
    """`directory`'s checkpoint path; CheckpointError when it is a symlink leading outside the
    directory (a run directory shared or downloaded must not make resume read other files)."""
    directory = Path(directory)
    path = directory / CHECKPOINT
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(directory.resolve()):
            raise CheckpointError(path, f"the checkpoint is a symlink leading outside the run directory (to {target}); refused")
    return path


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
    if checkpoint_path.is_symlink() or checkpoint_path.exists():
        try:
            model = load_checkpoint(checkpoint_in(directory), expect_digest=expected)
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
    writer.checkpoint(model.metrics, panel_frames(model))
    write_json(writer.manifest_path, writer.manifest)
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
        model = load_checkpoint(checkpoint_in(directory), expect_digest=scenario_digest(scenario))
    except CheckpointError:
        return None
    return model if model.running else None
