"""The checkpoint format holds no code and loading one runs none; restores are exact.

A crafted checkpoint used to run commands (the pickle allow-list accepted any type reached
through a dotted name under `simulator.*`). The format is now data only: .npz arrays read
without pickle, JSON for the rest (simulator/runs/snapshot.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_YAML, tiny
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import simulator
from simulator.cli.main import app
from simulator.model import AttentionMarket
from simulator.rules.allocation.query_key import Uniform
from simulator.runs import checkpoint as ckpt
from simulator.runs import rundir
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.runs.snapshot import Decoder, SnapshotError
from simulator.scenario.schema import load_scenario


def frame(path: Path, payload: bytes, header_update: dict | None = None) -> None:
    """Rewrite `path`'s payload inside a valid frame (magic, header, trailer, digest)."""
    data = path.read_bytes()
    header = json.loads(data[len(ckpt.MAGIC) :].split(b"\n", 1)[0])
    header.update(header_update or {})
    body = ckpt.MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload
    path.write_bytes(body + ckpt._TRAILER_TAG + f"{len(payload):016x} {hashlib.sha256(body).hexdigest()}\n".encode())


def archive(state: object, arrays: dict[str, np.ndarray] | None = None, *, raw: dict[str, bytes] | None = None) -> bytes:
    """A payload archive holding `state` as JSON and `arrays`, plus `raw` members as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as handle:
        members = {ckpt.STATE_MEMBER: np.frombuffer(json.dumps(state).encode(), dtype=np.uint8), **(arrays or {})}
        for name, values in members.items():
            with handle.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, values, allow_pickle=False)
        for name, data in (raw or {}).items():
            handle.writestr(name, data)
    return buffer.getvalue()


def popen_pickle(marker: Path) -> bytes:
    """The red team's payload: `simulator.runs.sweep` + `np.f2py.subprocess.Popen`, called with `touch marker`."""
    module, name = b"simulator.runs.sweep", b"np.f2py.subprocess.Popen"
    arguments = pickle.dumps((["touch", str(marker)],), protocol=2)[2:-1]  # a tuple, no frame, no STOP
    return (
        b"\x80\x04" + b"\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name + b"\x93" + arguments + b"R."
    )


def crafted_payloads(marker: Path) -> dict[str, bytes]:
    valid = {"attributes": {}, "rule": {}, "running": True, "steps": 1, "time": 1.0, "rng": {}, "random": None, "model_vars": None}
    popen = {"$": "object", "class": "Popen", "fields": {"args": {"$": "list", "items": ["touch", str(marker)]}}}
    return {
        "pickle-popen": popen_pickle(marker),
        "json-names-popen": archive({**valid, "attributes": {"market": popen}}),
        "json-names-a-dotted-class": archive({**valid, "attributes": {"market": {**popen, "class": "subprocess.Popen"}}}),
        "json-unknown-tag": archive({**valid, "attributes": {"market": {"$": "reduce", "callable": "os.system", "args": [f"touch {marker}"]}}}),
        "object-array-member": archive(valid, raw={"a0.npy": _object_npy(marker)}),
        "pickled-member": archive(valid, raw={"a0.npy": popen_pickle(marker)}),
        "compressed-bomb": _compressed_bomb(valid),
    }


class _Marker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _object_npy(marker: Path) -> bytes:
    """A real .npy of dtype object (its data a pickle that would run `touch marker`)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _compressed_bomb(state: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr(f"{ckpt.STATE_MEMBER}.npy", b"\0" * (16 << 20))
    return buffer.getvalue()


AUDITED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn", "ctypes.dlopen")

LOADER = textwrap.dedent(
    """
    import json, sys
    events = []
    watched = tuple(json.loads(sys.argv[2]))

    def hook(event, args):
        if event.startswith(watched) or (event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax+")):
            events.append(event)

    from simulator.runs import checkpoint as ckpt
    sys.addaudithook(hook)
    outcomes = {}
    for name, path in json.loads(sys.argv[1]).items():
        try:
            ckpt.load_checkpoint(path)
            outcomes[name] = "loaded"
        except ckpt.CheckpointError as exc:
            outcomes[name] = exc.message
    print(json.dumps({"outcomes": outcomes, "events": sorted(set(events))}))
    """
)


def test_a_crafted_checkpoint_creates_no_file_and_starts_no_process(tmp_path):
    """Each crafted payload (the red team's Popen pickle among them) is refused with a
    CheckpointError, and loading it starts no process and creates no file (audit hooks watch)."""
    model = AttentionMarket(tiny())
    model.step()
    marker = tmp_path / "MARKER"
    paths = {}
    for name, payload in crafted_payloads(marker).items():
        path = save_checkpoint(model, tmp_path / f"{name}.ckpt")
        frame(path, payload)
        paths[name] = str(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(paths), json.dumps(AUDITED)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["events"] == [], f"loading crafted checkpoints did {report['events']}"
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a crafted checkpoint created a file"
    assert all(outcome != "loaded" for outcome in report["outcomes"].values()), report["outcomes"]
    assert "corrupt checkpoint" in report["outcomes"]["pickle-popen"]
    assert "class 'Popen' may not be loaded" in report["outcomes"]["json-names-popen"]
    assert "unknown tag 'reduce'" in report["outcomes"]["json-unknown-tag"]
    assert "unpacks to more bytes than it holds" in report["outcomes"]["compressed-bomb"]
    assert "the magic string is not correct" in report["outcomes"]["pickled-member"]
    assert "an array of dtype object" in report["outcomes"]["object-array-member"]


def test_a_version_1_pickle_checkpoint_is_refused_by_its_version(tmp_path):
    path = save_checkpoint(AttentionMarket(tiny()), tmp_path / "checkpoint.pkl")
    frame(path, pickle.dumps({"attributes": {}}), header_update={"version": 1})
    with pytest.raises(ckpt.CheckpointError, match=r"format version 1 \(a pickle, which this attnsim never loads"):
        load_checkpoint(path)


def test_the_payload_holds_no_pickle_and_arrays_load_with_allow_pickle_off(tmp_path):
    model = AttentionMarket(tiny({"metrics": {"agent_panels": {"sample": 5, "every": 1}}}))
    for _ in range(3):
        model.step()
    path = save_checkpoint(model, tmp_path / "checkpoint.pkl")
    data = path.read_bytes()
    start = len(ckpt.MAGIC) + len(data[len(ckpt.MAGIC) :].split(b"\n", 1)[0]) + 1
    payload = data[start : len(data) - ckpt._TRAILER_SIZE]
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:  # raises on any object array
        arrays = {name: npz[name] for name in npz.files}
    state = json.loads(arrays.pop(ckpt.STATE_MEMBER).tobytes())
    assert state["rule"]["classes"]["allocation"] == "AttentionSoftmax"
    assert state["steps"] == 3 and state["time"] == 3.0
    assert len(arrays) > 50


def _exact_resume(overrides: dict, tmp_path: Path, at: int = 3) -> None:
    scenario = tiny(overrides)
    whole = simulator.run(scenario)
    part = AttentionMarket(scenario)
    for _ in range(at):
        part.step()
    first = save_checkpoint(part, tmp_path / "first.ckpt")
    restored = load_checkpoint(first)
    assert (restored.steps, restored.time, restored.market.tick) == (at, float(at), at)
    again = save_checkpoint(restored, tmp_path / "again.ckpt")
    strip = lambda data: data.split(b"\n", 2)[2][:-ckpt._TRAILER_SIZE]  # noqa: E731 - payload only
    assert strip(first.read_bytes()) == strip(again.read_bytes()), "a restored model saves to the same bytes"
    result = simulator.run(restored.config, model=restored)
    pd.testing.assert_frame_equal(result.metrics, whole.metrics)
    if whole.model.panels is not None:
        for name, expected in whole.model.panels.frames().items():
            pd.testing.assert_frame_equal(restored.panels.frames()[name], expected)


@pytest.mark.parametrize(
    "overrides",
    [
        {"metrics": {"agent_panels": {"sample": 8, "every": 1}}},
        {"allocation": {"rule": "popularity"}},
        {"allocation": {"rule": "learned", "learned": {"retrain_every": 2}}},
        {"allocation": {"rule": "shapley"}},
        {"allocation": {"candidates": {"mode": "ivf"}}},
    ],
    ids=["panels", "popularity", "learned", "shapley", "ivf"],
)
def test_a_restored_model_continues_byte_for_byte(tmp_path, overrides):
    _exact_resume(overrides, tmp_path)


def test_a_rule_set_by_hand_is_refused_when_saving(tmp_path):

    model = AttentionMarket(tiny())
    model.rules.allocation = Uniform()
    with pytest.raises(ckpt.CheckpointError, match="rebuilds the rule from the scenario"):
        save_checkpoint(model, tmp_path / "checkpoint.pkl")


def _interrupted_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_YAML.format(ticks=6))
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--no-plots", "--checkpoint-every", "1", "--ticks", "3"])
    assert result.exit_code == 0, result.output
    model = AttentionMarket(load_scenario(json.loads((out / rundir.MANIFEST).read_text())["scenario"]))
    model.step()
    save_checkpoint(model, out / ckpt.CHECKPOINT)
    manifest = json.loads((out / rundir.MANIFEST).read_text())
    manifest["status"] = "interrupted"
    (out / rundir.MANIFEST).write_text(json.dumps(manifest))
    return out


def test_resume_refuses_a_checkpoint_symlink_leading_outside_the_run(tmp_path):
    out = _interrupted_run(tmp_path)
    outside = tmp_path / "elsewhere.ckpt"
    os.replace(out / ckpt.CHECKPOINT, outside)
    (out / ckpt.CHECKPOINT).symlink_to(outside)
    result = CliRunner().invoke(app, ["resume", str(out)])
    assert result.exit_code == 2, result.output
    assert "symlink leading outside the run directory" in result.output
    assert json.loads((out / rundir.MANIFEST).read_text())["status"] == "interrupted"


def test_resume_follows_a_checkpoint_symlink_inside_the_run(tmp_path):
    out = _interrupted_run(tmp_path)
    os.replace(out / ckpt.CHECKPOINT, out / "saved.ckpt")
    (out / ckpt.CHECKPOINT).symlink_to("saved.ckpt")
    result = CliRunner().invoke(app, ["resume", str(out)])
    assert result.exit_code == 0, result.output


TAGS = ["float", "scalar", "ref", "array", "floats", "ints", "tuple", "list", "set", "frozenset", "deque", "dict", "defaultdict", "generator", "object"]
KEYS = ["$", "id", "name", "items", "class", "fields", "value", "dtype", "maxlen", "factory", "state", "bit_generator", "object"]
_leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6) | st.sampled_from(TAGS + ["a0", "a1", "PCG64", "Users", "int", "<f8", "O", "S-1"])
_json = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(data=_json)
def test_the_state_decoder_refuses_anything_malformed_with_a_snapshot_error(data):
    """Fuzz: whatever JSON a checkpoint's state holds, decoding builds it or raises SnapshotError."""
    decoder = Decoder({"a0": np.arange(4, dtype=np.int64), "a1": np.zeros(3)})
    try:
        decoder.decode(data)
    except SnapshotError:
        pass
