"""Bad input never gets far: every row of the table in docs/reliability.md, through the CLI.

Each case writes a file (or a run directory), invokes `attnsim` in process (typer's CliRunner),
and checks exit code 2, every stderr line in the `FILE:LINE:COL: key: message` form, the
expected location and message, no traceback, and nothing created. The docs table lists the
same case ids (a test keeps them in step).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TINY_YAML
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator.cli.main import app
from simulator.runs import checkpoint as ckpt
from simulator.runs.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ISSUE_LINE = re.compile(r"^[^:\s][^:]*:\d+:\d+: \S+: .+$")



@dataclass(frozen=True)
class Case:
    """A scenario file's content and what `validate` and `run` must say about it.

    `expect` holds (location, key, message fragment) triples: location is `LINE:COL` in the file
    (or a full `SOURCE:LINE:COL` for option problems); each must appear on some stderr line.
    """

    content: bytes
    expect: tuple[tuple[str, str, str], ...]
    args: tuple[str, ...] = ()
    validate_ok: bool = False  # valid as a file (validate exits 0); only `run` refuses it
    env: dict[str, str] = field(default_factory=dict)


def _yaml(text: str) -> bytes:
    return text.encode("utf-8")


CASES: dict[str, Case] = {
    "malformed-yaml": Case(
        _yaml("name: x\nticks: [1, 2\n"), (("3:1", "<yaml>", "malformed YAML"),)
    ),
    "malformed-yaml-indentation": Case(
        _yaml("name: x\npopulation:\n  users:\n    count: 5\n   creators: 3\n"), (("5:4", "<yaml>", "malformed YAML"),)
    ),
    "wrong-types": Case(
        _yaml('name: x\nticks: "ten"\npopulation:\n  users: {count: 1.5}\nallocation:\n  mask_consumed: "yes"\n'),
        (
            ("2:1", "ticks", "valid integer (got 'ten')"),
            ("4:11", "population.users.count", "valid integer (got 1.5)"),
            ("6:3", "allocation.mask_consumed", "valid boolean"),
        ),
    ),
    "bool-for-int": Case(_yaml("name: x\nticks: true\n"), (("2:1", "ticks", "valid integer (got True)"),)),
    "section-as-scalar": Case(_yaml("name: x\npopulation: 5\n"), (("2:1", "population", "valid dictionary"),)),
    "nan-and-inf": Case(
        _yaml("name: x\nallocation:\n  temperature: .nan\ncirculation:\n  platform_take_rate: .inf\n"),
        (
            ("3:3", "allocation.temperature", "finite number (got nan)"),
            ("5:3", "circulation.platform_take_rate", "finite number (got inf)"),
        ),
    ),
    "float-overflow": Case(
        _yaml("name: x\nallocation:\n  temperature: 1.0e+400\n"), (("3:3", "allocation.temperature", "finite number (got inf)"),)
    ),
    "negative-and-zero-sizes": Case(
        _yaml("name: x\nticks: 0\npopulation:\n  users: {count: -5}\n  creators: {count: 0}\n  goods: {initial: -1}\n"),
        (
            ("2:1", "ticks", "greater than or equal to 1"),
            ("4:11", "population.users.count", "greater than or equal to 1 (got -5)"),
            ("5:14", "population.creators.count", "greater than or equal to 1 (got 0)"),
            ("6:11", "population.goods.initial", "greater than or equal to 0 (got -1)"),
        ),
    ),
    "absurd-size-schema-limit": Case(
        _yaml("name: x\npopulation:\n  users: {count: 1000000000000}\n"),
        (("3:11", "population.users.count", "less than or equal to 50000000"),),
    ),
    "absurd-size-memory-check": Case(
        _yaml("name: x\nembedding_dim: 1024\npopulation:\n  users: {count: 50000000}\n"),
        (
            ("4:11", "population.users.count", "of memory, more than the 1.0 GiB available"),
            ("4:11", "population.users.count", "user rows"),
        ),
        validate_ok=True,
        env={"ATTNSIM_AVAILABLE_MEMORY": str(1024**3)},
    ),
    "memory-check-blames-set-option": Case(
        _yaml(TINY_YAML.format(ticks=3)),
        (("--set:1:1", "population.users.count", "more than the 1.0 GiB available"),),
        args=("--set", "population.users.count=40000000"),
        validate_ok=True,
        env={"ATTNSIM_AVAILABLE_MEMORY": str(1024**3)},
    ),
    "unknown-rule-name": Case(
        _yaml("name: x\nallocation:\n  rule: magic\ncirculation:\n  creator_payout: {rule: bribes}\n"),
        (
            ("3:3", "allocation.rule", "unknown allocation rule 'magic'"),
            ("5:20", "circulation.creator_payout.rule", "unknown payout rule 'bribes'"),
        ),
    ),
    "unknown-keys": Case(
        _yaml("name: x\nallocaton:\n  rule: top_k\npopulation:\n  users: {count: 10, cuont: 5}\n"),
        (("2:1", "allocaton", "unknown key"), ("5:22", "population.users.cuont", "unknown key")),
    ),
    "duplicate-keys": Case(_yaml("name: x\nticks: 5\nticks: 6\n"), (("3:1", "ticks", "duplicate key"),)),
    "yaml-tag-os-system": Case(
        _yaml('name: x\nseed: !!python/object/apply:os.system ["touch MARKER"]\n'),
        (("2:7", "<yaml>", "the YAML tag !!python/object/apply:os.system is not allowed"),),
    ),
    "yaml-tag-python-name": Case(
        _yaml("name: x\nseed: !!python/name:os.system\n"), (("2:7", "<yaml>", "!!python/name:os.system is not allowed"),)
    ),
    "yaml-tag-local": Case(_yaml("name: !shell x\n"), (("1:7", "<yaml>", "the YAML tag !shell is not allowed"),)),
    "yaml-tag-binary": Case(_yaml("name: !!binary eA==\n"), (("1:1", "name", "valid string"),)),
    "anchors-and-aliases": Case(
        _yaml("name: x\na: &a [1, 2, 3]\nb: [*a, *a, *a]\n"), (("3:1", "b", "anchors and aliases are not allowed"),)
    ),
    "deeply-nested-yaml": Case(
        _yaml("name: x\nsweep: " + "[" * 50_000 + "]" * 50_000 + "\n"), (("2:39", "<yaml>", "nested more than 32 levels"),)
    ),
    "path-escaping-name": Case(_yaml("name: ../../etc\n"), (("1:1", "name", "should match pattern"),)),
    "absolute-path-name": Case(_yaml("name: /etc/passwd\n"), (("1:1", "name", "should match pattern"),)),
    "hidden-name": Case(_yaml("name: .ssh\n"), (("1:1", "name", "should match pattern"),)),
    "empty-file": Case(b"", (("1:1", "<root>", "the file is empty"),)),
    "comments-only-file": Case(_yaml("# nothing here\n\n"), (("1:1", "<root>", "the file is empty"),)),
    "not-a-mapping": Case(_yaml("- just\n- a list\n"), (("1:1", "<root>", "must be a YAML mapping"),)),
    "binary-file": Case(bytes(range(256)) * 8, (("1:1", "<file>", "not a text file (it is not UTF-8)"),)),
    "nul-bytes": Case(b"name: x\x00\nticks: 3\n", (("1:1", "<file>", "not a text file (it contains NUL bytes)"),)),
    "ten-megabyte-file": Case(
        b"name: x\n# " + b"a" * (10 * 1024 * 1024) + b"\n", (("1:1", "<file>", "a scenario is at most 1000000"),)
    ),
    "bad-set-option": Case(
        _yaml(TINY_YAML.format(ticks=3)),
        (
            ("--set:1:1", "oops", "expected KEY=VALUE"),
            ("--set:2:1", "population.users.count", "valid integer"),
            ("--set:3:1", "allocation.temprature", "unknown key"),
        ),
        args=("--set", "oops", "--set", "population.users.count=" + "[" * 20_000, "--set", "allocation.temprature=2"),
    ),
    "set-option-yaml-tag": Case(
        _yaml(TINY_YAML.format(ticks=3)),
        (("--set:1:1", "seed", "valid integer (got '!!python/object/apply:os.system"),),
        args=("--set", 'seed=!!python/object/apply:os.system ["touch MARKER"]'),
    ),
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def check_refusal(result, source: str, expect: tuple[tuple[str, str, str], ...]) -> None:
    explain = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\nexception: {result.exception!r}"
    assert result.exit_code == 2, explain
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, explain
    assert result.exception is None or isinstance(result.exception, SystemExit), explain
    lines = result.stderr.strip().splitlines()
    assert lines, explain
    for line in lines:
        assert ISSUE_LINE.match(line), f"not FILE:LINE:COL: key: message: {line!r}"
    for where, key, fragment in expect:
        location = where if where.startswith("--") else f"{source}:{where}"
        assert any(line.startswith(f"{location}: {key}: ") and fragment in line for line in lines), (
            f"no line '{location}: {key}: ...{fragment}...' in\n{result.stderr}"
        )


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_scenario_is_refused_with_a_located_message(runner, tmp_path, monkeypatch, command, case_id):
    case = CASES[case_id]
    monkeypatch.chdir(tmp_path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "scenario.yaml"
    path.write_bytes(case.content)
    out = tmp_path / "out"
    args = [command, str(path), *case.args]
    if command == "run":
        args += ["--out", str(out)]
    result = runner.invoke(app, args)
    if command == "validate" and case.validate_ok:
        assert result.exit_code == 0, result.stderr
        assert "memory" in result.stdout and "refuses it without --force" in result.stdout
    else:
        check_refusal(result, str(path), case.expect)
        assert result.stdout == ""
    assert not out.exists(), "bad input must not create the run directory"
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "MARKER").exists(), "a YAML tag ran a command"


def test_force_skips_the_memory_check(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIM_AVAILABLE_MEMORY", "1000")
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML.format(ticks=2))
    refused = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "a"), "--no-plots"])
    check_refusal(refused, str(path), ())
    assert "the run needs about" in refused.stderr and "more than the 1000 B available" in refused.stderr
    done = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "b"), "--no-plots", "--force"])
    assert done.exit_code == 0, done.stderr


@pytest.mark.parametrize(
    ("case_id", "option", "expect"),
    [
        ("out-is-a-file", "file", "exists and is not a directory"),
        ("out-not-empty", "nonempty", "exists and is not empty"),
        ("out-has-symlinked-plots", "symlink", "plots is a symbolic link"),
    ],
)
def test_unusable_out_is_refused(runner, tmp_path, case_id, option, expect):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML.format(ticks=2))
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_bytes(b"not yours")
    args = []
    if option == "file":
        out.write_text("x")
    elif option == "nonempty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.mkdir()
        (out / "plots").symlink_to(elsewhere, target_is_directory=True)
        args = ["--force"]
    result = runner.invoke(app, ["run", str(path), "--out", str(out), *args])
    check_refusal(result, "--out", (("--out:1:1", "out", expect),))
    assert (elsewhere / "precious.png").read_bytes() == b"not yours"


# --- resume: bad run directories and checkpoints ---------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run directory stopped at tick 4 of 6 with a checkpoint there (as after Ctrl-C)."""
    from simulator.model import AttentionMarket
    from simulator.runs import rundir
    from simulator.runs.driver import RunOutcome, finish_run
    from simulator.scenario.schema import load_scenario

    base = tmp_path_factory.mktemp("interrupted")
    path = base / "tiny.yaml"
    path.write_text(TINY_YAML.format(ticks=6))
    scenario = load_scenario(path)
    directory = base / "run"
    directory.mkdir()
    writer = rundir.RunWriter(directory, scenario, scenario_file=path, plots=False)
    writer.manifest.update(checkpoint_every=2, plots=False)
    writer.start()
    model = AttentionMarket(scenario)
    for _ in range(4):
        model.step()
    save_checkpoint(model, directory / ckpt.CHECKPOINT)
    finish_run(writer, RunOutcome("interrupted", model.metrics))
    return directory


def _copy(directory: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(directory, target)
    return target


def _rewrite_payload(path: Path, payload: bytes, *, header_update: dict | None = None) -> None:
    """Replace a checkpoint's payload, keeping a valid frame (magic, header, trailer, digest)."""
    data = path.read_bytes()
    header_line = data[len(ckpt.MAGIC) :].split(b"\n", 1)[0]
    header = json.loads(header_line)
    header.update(header_update or {})
    head = ckpt.MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n"
    body = head + payload
    digest = hashlib.sha256(body).hexdigest()
    path.write_bytes(body + ckpt._TRAILER_TAG + f"{len(payload):016x} {digest}\n".encode())


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('ATTNSIM_TEST_MARKER', 'MARKER')}",))


def _damage(run: Path, how: str, tmp_path: Path) -> tuple[str, str, str]:
    """Damage `run` one way; returns the (file, key, message fragment) expected."""
    checkpoint = run / ckpt.CHECKPOINT
    manifest = run / "manifest.json"
    if how == "not-a-directory":
        import shutil

        shutil.rmtree(run)
        return str(run), "<dir>", "not a run directory"
    if how == "no-manifest":
        manifest.unlink()
        return str(manifest), "<file>", "cannot read the manifest"
    if how == "manifest-not-json":
        manifest.write_text("{ this is not json")
        return str(manifest), "<file>", "not valid JSON"
    if how == "manifest-bad-scenario":
        data = json.loads(manifest.read_text())
        data["scenario"]["population"]["users"]["count"] = -1
        manifest.write_text(json.dumps(data))
        return str(manifest), "scenario.population.users.count", "greater than or equal to 1"
    if how == "checkpoint-bit-flip":
        data = bytearray(checkpoint.read_bytes())
        data[len(data) // 2] ^= 0x40
        checkpoint.write_bytes(bytes(data))
        return str(checkpoint), "<checkpoint>", "SHA-256 does not match"
    if how == "checkpoint-truncated":
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) // 3])
        return str(checkpoint), "<checkpoint>", "truncated"
    if how == "checkpoint-empty":
        checkpoint.write_bytes(b"")
        return str(checkpoint), "<checkpoint>", "not an attnsim checkpoint"
    if how == "checkpoint-foreign-file":
        checkpoint.write_bytes(pickle.dumps({"some": "other pickle"}))
        return str(checkpoint), "<checkpoint>", "not an attnsim checkpoint"
    if how == "checkpoint-future-version":
        _rewrite_payload(checkpoint, b"", header_update={"version": 99})
        return str(checkpoint), "<checkpoint>", "format version 99"
    if how == "checkpoint-of-another-scenario":
        data = json.loads(manifest.read_text())
        data["scenario"]["seed"] = 8
        manifest.write_text(json.dumps(data))
        return str(checkpoint), "<checkpoint>", "does not match the run's manifest"
    if how == "checkpoint-crafted-pickle":
        _rewrite_payload(checkpoint, pickle.dumps(_Evil(), protocol=5))
        return str(checkpoint), "<checkpoint>", "cannot read its payload"
    if how == "checkpoint-garbage-payload":
        _rewrite_payload(checkpoint, random.Random(3).randbytes(4096))
        return str(checkpoint), "<checkpoint>", "cannot read its payload"
    raise AssertionError(how)


RESUME_CASES = [
    "not-a-directory",
    "no-manifest",
    "manifest-not-json",
    "manifest-bad-scenario",
    "checkpoint-bit-flip",
    "checkpoint-truncated",
    "checkpoint-empty",
    "checkpoint-foreign-file",
    "checkpoint-future-version",
    "checkpoint-of-another-scenario",
    "checkpoint-crafted-pickle",
    "checkpoint-garbage-payload",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=512))
@example(payload=pickle.BINBYTES8 + b"\xff" * 8)  # asks for 2**64 bytes: OverflowError
@example(payload=pickle.BINBYTES8 + b"\xff" * 7 + b"\x0f")  # asks for a petabyte
def test_any_garbage_payload_is_a_checkpoint_error(tmp_path_factory, interrupted_run, payload):
    """Whatever bytes sit inside a well-framed checkpoint, loading ends in CheckpointError."""
    target = tmp_path_factory.mktemp("garbage") / ckpt.CHECKPOINT
    target.write_bytes((interrupted_run / ckpt.CHECKPOINT).read_bytes())
    _rewrite_payload(target, payload)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(target)


@pytest.mark.parametrize("how", RESUME_CASES)
def test_resume_refuses_an_unusable_run_directory(runner, tmp_path, monkeypatch, interrupted_run, how):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNSIM_TEST_MARKER", str(tmp_path / "MARKER"))
    run = _copy(interrupted_run, tmp_path)
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    source, key, fragment = _damage(run, how, tmp_path)
    damaged = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} if run.is_dir() else {}
    result = runner.invoke(app, ["resume", str(run)])
    check_refusal(result, source, (("1:1", key, fragment),))
    assert not (tmp_path / "MARKER").exists(), "a crafted checkpoint ran a command"
    after = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} if run.is_dir() else {}
    assert after == damaged, "a refused resume must leave the run directory as it was"
    assert before  # the fixture run had files


def test_table_in_docs_lists_every_case():
    page = (ROOT / "docs" / "reliability.md").read_text()
    missing = [case for case in [*CASES, *RESUME_CASES, "out-is-a-file", "out-not-empty", "out-has-symlinked-plots"] if f"`{case}`" not in page]
    assert not missing, f"docs/reliability.md does not list {missing}"


@pytest.mark.parametrize("name", ["../escaped.txt", "/tmp/absolute.txt", "plots/../../escaped.txt"])
def test_a_sweep_worker_cannot_write_outside_its_run_directory(tmp_path, name):
    from simulator.runs.sweep import _write_files

    directory = tmp_path / "sweep" / "runs" / "g000-r00"
    with pytest.raises(ValueError, match="outside its run directory"):
        _write_files(directory, {name: b"x", "manifest.json": b"{}"})
    assert not (tmp_path / "sweep" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
