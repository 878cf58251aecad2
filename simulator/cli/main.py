"""`attnsim`, the command line: `run` one scenario into a run directory, `validate` a scenario file.

Exit codes (see docs/cli.md):
    0    done
    1    a failure while running; the run directory keeps what was written (status `failed`)
    2    bad input: every problem on stderr as `FILE:LINE:COL: dotted.key: message`
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM; the run directory holds the ticks done
         (status `interrupted`)
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from simulator.cli.helptext import CleanHelpGroup
from simulator.metrics.table import RUN_SUMMARY, summary_label
from simulator.model import AttentionMarket
from simulator.runs import rundir
from simulator.runs.checkpoint import (
    CHECKPOINT,
    ResumeError,
    open_resume,
    read_run_scenario,
)
from simulator.runs.driver import RunOutcome, execute, finish_run, start_writer
from simulator.runs.lock import DirectoryLock, DirectoryLocked
from simulator.runs.memory import (
    available_memory,
    check_memory,
    estimate_memory,
    human,
    scenario_locator,
)
from simulator.runs.threads import use_threads
from simulator.scenario.schema import (
    MAX_ECHO,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_override_value,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

DEFAULT_RUNS_DIR = "runs"
DEFAULT_CHECKPOINT_SECONDS = 5.0

app = typer.Typer(
    name="attnsim",
    cls=CleanHelpGroup,
    help="attention-market: simulate attention-economy marketplaces and compare incentive rules.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ScenarioArg = Annotated[str, typer.Argument(metavar="SCENARIO.yaml", help="The scenario file (YAML).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set a scenario key, e.g. allocation.rule=top_k (repeatable).",
        show_default=False,
    ),
]
# --seed and --ticks are checked by the scenario schema, so their errors read like every other one.
SeedOpt = Annotated[str | None, typer.Option("--seed", metavar="N", help="Override the seed.", show_default=False)]
TicksOpt = Annotated[str | None, typer.Option("--ticks", metavar="N", help="Override the number of ticks.", show_default=False)]
CheckpointEveryOpt = Annotated[
    int,
    typer.Option(
        "--checkpoint-every",
        metavar="N",
        min=0,
        help="Save the whole model to checkpoint.pkl every N ticks (0: never), so `attnsim resume DIR` can continue the run.",
    ),
]


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    return Console(highlight=False)


def _exit_bad_input(lines: list[str]) -> typer.Exit:
    console = _stderr()
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


# --- scenario resolution (shared by run and validate) --------------------------------------------


@dataclasses.dataclass
class Resolved:
    scenario: Scenario | None
    overrides: dict[str, Any]
    problems: list[str]


def resolve_scenario(path: str, sets: list[str] | None, seed: int | str | None = None, ticks: int | str | None = None) -> Resolved:
    """Load `path` with the --set, --seed and --ticks overrides; collect every problem, never stop at one.

    Problems in options are located like file problems: `--set:N:1` is the N-th --set option,
    `--seed:1:1` and `--ticks:1:1` those options.
    """
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    origins: dict[str, tuple[str, int]] = {}
    for index, text in enumerate(sets or [], start=1):
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(
                f"--set:{index}:1: {text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + '...'}: expected KEY=VALUE with a dotted scenario key, e.g. --set allocation.temperature=0.5"
            )
            continue
        overrides.pop(key, None)  # the last --set of a key wins
        overrides[key] = parse_override_value(value)
        origins[key] = ("--set", index)
    for key, value in (("seed", seed), ("ticks", ticks)):
        if value is not None:
            overrides.pop(key, None)
            overrides[key] = parse_override_value(value) if isinstance(value, str) else value
            origins[key] = (f"--{key}", 1)

    scenario = None
    try:
        scenario = load_scenario(path, overrides=overrides, overrides_from="--set")
    except ScenarioError as exc:
        order = list(overrides)
        for issue in exc.issues:
            if issue.source == "--set" and 1 <= issue.line <= len(order):
                label, number = origins[order[issue.line - 1]]
                issue = dataclasses.replace(issue, source=label, line=number)
            problems.append(str(issue))
    if problems:
        scenario = None
    return Resolved(scenario, overrides, problems)


def describe_scenario(scenario: Scenario) -> list[tuple[str, str]]:
    """A short digest of a resolved scenario: sizes, rules and ticks."""
    pop = scenario.population
    alloc = scenario.allocation
    circ = scenario.circulation
    rows = [
        ("name", scenario.name),
        ("seed", str(scenario.seed)),
        ("ticks", str(scenario.ticks)),
        (
            "population",
            f"{pop.users.count:,} users, {pop.creators.count:,} creators, "
            f"{pop.goods.initial:,} goods, {pop.advertisers.count:,} advertisers",
        ),
        ("embedding", f"{scenario.embedding_dim} dimensions, {scenario.topics.clusters} topic clusters"),
        (
            "allocation",
            f"{alloc.rule} (temperature {alloc.temperature:g}, {alloc.ad_slots} ad slot{'s' if alloc.ad_slots != 1 else ''})",
        ),
        (
            "circulation",
            f"{circ.creator_payout.rule} payout, {circ.auction.format} auction, platform take rate {circ.platform_take_rate:g}",
        ),
    ]
    if scenario.sweep is not None:
        points = math.prod(len(values) for values in scenario.sweep.grid.values()) if scenario.sweep.grid else 1
        axes = ", ".join(f"{key} ({len(values)})" for key, values in scenario.sweep.grid.items()) or "no grid"
        reps = scenario.sweep.replications
        rows.append(("sweep", f"{axes}: {points} point{'s' if points != 1 else ''} × {reps} replication{'s' if reps != 1 else ''} = {points * reps} runs"))
    return rows


# --- validate ------------------------------------------------------------------------------------


@app.command()
def validate(scenario: ScenarioArg, sets: SetOpt = None, seed: SeedOpt = None, ticks: TicksOpt = None) -> None:
    """Check a scenario file and print every problem at once; runs nothing.

    Prints "ok" and a digest of the resolved scenario (exit 0), or every problem on stderr as FILE:LINE:COL: dotted.key: message (exit 2).
    """
    resolved = resolve_scenario(scenario, sets, seed, ticks)
    if resolved.problems:
        raise _exit_bad_input(resolved.problems)
    assert resolved.scenario is not None
    console = _stdout()
    console.print(f"ok: {scenario}", markup=False)
    for label, text in describe_scenario(resolved.scenario):
        console.print(f"  {label:<12} {text}", markup=False, soft_wrap=True)
    console.print(f"  {'memory':<12} {_memory_digest(resolved.scenario)}", markup=False, soft_wrap=True)


def _memory_digest(scenario: Scenario) -> str:
    """The memory check in one line: the estimate, what is available, and whether `run` would go."""

    need = estimate_memory(scenario).total
    available, _origin = available_memory()
    if available is None:
        return f"about {human(need)} at peak"
    if need <= available:
        return f"about {human(need)} at peak, of {human(available)} available"
    return f"about {human(need)} at peak, more than the {human(available)} available: `attnsim run` refuses it without --force"


# --- run -----------------------------------------------------------------------------------------


class StopRequest:
    """SIGINT / SIGTERM handler: the first signal asks the run to stop at the next tick boundary,
    a second one (while `hard` is allowed) stops at once with KeyboardInterrupt; with hard=False
    every signal only records itself (sweeps, whose pool must never see an exception raised)."""

    def __init__(self, hard: bool = True) -> None:
        self.signum: int | None = None
        self.hard = hard
        self.announced = False
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and self.hard:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the default stays
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "KeyboardInterrupt"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("– ticks/s" if speed is None else f"{speed:,.1f} ticks/s", style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("utility {task.fields[utility]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def summary_table(
    scenario: Scenario, directory: Path, status: str, ticks_done: int, summary: dict[str, Any] | None, seconds: float
) -> Table:
    """The one-screen table printed at the end of a run."""
    table = Table(title=f"{scenario.name}: {status}", title_justify="left", show_header=True, header_style="bold")
    table.add_column("", style="dim", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("run directory", str(directory))
    table.add_row("ticks", f"{ticks_done:,} of {scenario.ticks:,}")
    table.add_row("seed", str(scenario.seed))
    rate = ticks_done / seconds if seconds > 0 else None
    table.add_row("wall time", f"{seconds:,.1f} s" + (f" ({rate:,.1f} ticks/s)" if rate else ""))
    if summary:
        table.add_section()
        for key in RUN_SUMMARY:
            if key in summary:
                table.add_row(summary_label(key), _fmt(summary[key]))
        tail = max(1, math.ceil(scenario.metrics.summary_fraction * ticks_done)) if ticks_done else 0
        table.caption = f"means over the last {tail} tick{'s' if tail != 1 else ''}; totals over the run"
    return table


def _command_line(scenario: str, out: Path, sets: list[str] | None, seed: str | None, ticks: str | None) -> list[str]:
    command = ["attnsim", "run", scenario, "--out", str(out)]
    for text in sets or []:
        command += ["--set", text]
    if seed is not None:
        command += ["--seed", str(seed)]
    if ticks is not None:
        command += ["--ticks", str(ticks)]
    return command


@app.command()
def run(
    scenario: ScenarioArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="DIR", help="Run directory to write, created with its parents; default runs/NAME-TIMESTAMP.", show_default=False),
    ] = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    ticks: TicksOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Use a non-empty --out, replacing its run files; and run even if the memory check says the run will not fit.")
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw plots/*.png.")] = True,
    checkpoint_seconds: Annotated[
        float,
        typer.Option("--checkpoint", metavar="SECONDS", min=0.0, help="Rewrite metrics.parquet this often while running."),
    ] = DEFAULT_CHECKPOINT_SECONDS,
    checkpoint_every: CheckpointEveryOpt = 0,
    threads: Annotated[
        int | None,
        typer.Option("--threads", metavar="N", min=1, help="Cores for this run: numba kernels get N threads, BLAS products one; default: every core this process may use.", show_default=False),
    ] = None,
) -> None:
    """Run one scenario and write its run directory (manifest.json, metrics.parquet, summary.json, plots/).

    Exit 0 done, 1 failed while running, 2 bad input. Ctrl-C or SIGTERM stops at the end of the current tick and keeps the ticks done (status interrupted, exit 130 or 143); a second Ctrl-C stops at once. With --checkpoint-every N the whole model is saved every N ticks, and `attnsim resume DIR` continues an interrupted or killed run.
    """

    err = _stderr()
    use_threads(threads)  # BLAS and numba chosen together (simulator/runs/threads.py)
    resolved = resolve_scenario(scenario, sets, seed, ticks)
    problems = list(resolved.problems)
    if out is None and resolved.scenario is not None:
        out = rundir.default_run_dir(resolved.scenario.name, DEFAULT_RUNS_DIR)
    if out is not None:
        problems += [f"--out:1:1: out: {problem}" for problem in rundir.check_output_dir(out, force=force)]
    if problems:
        raise _exit_bad_input(problems)
    config = resolved.scenario
    assert config is not None and out is not None
    if config.sweep is not None:
        err.print(
            f"note: {scenario} has a sweep: block; `attnsim run` runs its base scenario once and ignores the block "
            f"(`attnsim sweep {scenario}` runs the grid)",
            markup=False,
            soft_wrap=True,
        )
    if not force:
        memory = _memory_problems(config, scenario, sets, ticks)
        if memory:
            raise _exit_bad_input(memory)
    lock = _lock_run_dir(out, "attnsim run", where="--out:1:1: out")
    try:
        directory = rundir.prepare_output_dir(out, force=force)
    except rundir.RunDirError as exc:
        lock.release()
        raise _exit_bad_input([f"--out:1:1: out: {exc}"]) from None
    try:
        _run_locked(scenario, out, sets, seed, ticks, config, resolved, directory, plots, checkpoint_every, checkpoint_seconds)
    finally:
        lock.release()


def _lock_run_dir(directory: Path, command: str, *, where: str) -> DirectoryLock:
    """Create `directory` and take its lock, or exit 2 naming the process that holds it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return DirectoryLock(directory, command).acquire()
    except DirectoryLocked as exc:
        raise _exit_bad_input([f"{where}: {exc}"]) from None
    except OSError as exc:
        raise _exit_bad_input([f"{where}: {directory} cannot be used: {exc.strerror or exc}"]) from None


def _run_locked(
    scenario: str, out: Path, sets: list[str] | None, seed: str | None, ticks: str | None, config: Scenario,
    resolved: Resolved, directory: Path, plots: bool, checkpoint_every: int, checkpoint_seconds: float,
) -> None:
    """The rest of `attnsim run`, in its locked run directory."""
    err = _stderr()

    writer = rundir.RunWriter(
        directory,
        config,
        scenario_file=scenario,
        overrides=resolved.overrides,
        command=_command_line(scenario, out, sets, seed, ticks),
        plots=plots,
    )
    try:
        start_writer(writer, checkpoint_every=checkpoint_every, plots=plots)
    except OSError as exc:
        err.print(f"error: cannot write the run directory {directory}: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    err.print(f"run directory: {directory}", markup=False, soft_wrap=True)


    _drive(config, writer, lambda: AttentionMarket(config), checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)


def _drive(
    config: Scenario,
    writer: Any,
    make_model: Any,
    *,
    checkpoint_every: int,
    checkpoint_seconds: float,
    done_before: int = 0,
) -> None:
    """Run a model (from `make_model()`) to its last tick inside `writer`'s directory, with the
    progress bar and signal handling of `run` and `resume`; ends with `typer.Exit`."""

    err = _stderr()
    directory = writer.directory
    stop = StopRequest()
    started = time.monotonic()

    progress = _progress(err)
    task = progress.add_task(config.name, total=config.ticks, completed=done_before, utility="–")

    def should_stop() -> bool:
        if stop.requested() and not stop.announced:
            stop.announced = True
            progress.console.print(f"{stop.name}: stopping at the end of this tick (again to stop at once)", markup=False)
        return stop.requested()

    def on_tick(model: Any) -> None:
        progress.update(task, advance=1, utility=_fmt(model.latest_metrics.get("user_utility_mean")))

    stop.install()
    try:
        with progress:
            try:
                model = make_model()
            except KeyboardInterrupt:
                outcome = RunOutcome(rundir.INTERRUPTED, None, hard_interrupt=True)
            except Exception as exc:  # noqa: BLE001 - reported like any failure while running
                outcome = RunOutcome(rundir.FAILED, None, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            else:
                outcome = execute(
                    writer,
                    model,
                    checkpoint_every=checkpoint_every,
                    checkpoint_seconds=checkpoint_seconds,
                    on_tick=on_tick,
                    should_stop=should_stop,
                )
        stop.hard = False  # from here on a signal no longer interrupts writing the final files
        seconds = time.monotonic() - started
        try:
            summary = finish_run(writer, outcome)
        except Exception as exc:  # noqa: BLE001
            err.print(f"error: could not finish writing {directory}: {type(exc).__name__}: {exc}", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
    finally:
        stop.restore()

    status = outcome.status
    exit_code = {rundir.COMPLETE: EXIT_OK, rundir.INTERRUPTED: stop.exit_code}.get(status, EXIT_FAILED)
    ticks_done = writer.manifest["ticks_done"]
    if status == rundir.FAILED:
        err.print(f"error: the run failed after {ticks_done} of {config.ticks} ticks: {outcome.error}", markup=False, soft_wrap=True)
        if outcome.violation is not None:
            agents = "; ".join(f"{name} {rows}" for name, rows in outcome.violation["agents"].items()) or "none in particular"
            err.print(
                f"invariant {outcome.violation['invariant']} broken at tick {outcome.violation['tick']}; offending agents: {agents}",
                markup=False,
                soft_wrap=True,
            )
        err.print(f"{directory} holds what was done (status failed; traceback in manifest.json)", markup=False, soft_wrap=True)
    elif status == rundir.INTERRUPTED:
        resumable = " (resume with: attnsim resume " + str(directory) + ")" if (directory / CHECKPOINT).exists() else ""
        err.print(
            f"interrupted ({stop.name}) after {ticks_done} of {config.ticks} ticks; {directory} holds them (status interrupted){resumable}",
            markup=False,
            soft_wrap=True,
        )
    for warning in writer.manifest.get("warnings", []):
        err.print(f"warning: {warning}", markup=False, soft_wrap=True)
    _stdout().print(summary_table(config, directory, status, ticks_done, summary, seconds))
    raise typer.Exit(exit_code)


def _memory_problems(
    config: Scenario, scenario_file: str | Path, sets: list[str] | None, ticks: str | None, *, prefix: str = "", workers: int = 1
) -> list[str]:
    """The memory check's problems (empty when `workers` runs at once fit), located in the file or the options."""

    origins: dict[str, tuple[str, int]] = {}
    for index, text in enumerate(sets or [], start=1):
        key, sep, _ = text.partition("=")
        if sep and key.strip():
            origins[key.strip()] = ("--set", index)
    if ticks is not None:
        origins["ticks"] = ("--ticks", 1)
    issues = check_memory(config, scenario_locator(scenario_file, origins, prefix=prefix), workers=workers)
    return [str(issue) for issue in issues]


# --- resume --------------------------------------------------------------------------------------


@app.command()
def resume(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The run directory to continue.", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Resume even if the memory check says the run will not fit, or the manifest says it is still running.")
    ] = False,
    plots: Annotated[
        bool | None, typer.Option("--plots/--no-plots", help="Draw plots/*.png (default: as the run was started).", show_default=False)
    ] = None,
    checkpoint_seconds: Annotated[
        float,
        typer.Option("--checkpoint", metavar="SECONDS", min=0.0, help="Rewrite metrics.parquet this often while running."),
    ] = DEFAULT_CHECKPOINT_SECONDS,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-every",
            metavar="N",
            min=0,
            help="Save the whole model every N ticks (default: as the run was started).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Continue an interrupted, failed or killed run from its last checkpoint, in the same run directory.

    The run goes on to the scenario's tick count; the manifest goes back to `running`, records the resume under `resumes`, and ends `complete` (or `interrupted` / `failed` again). Without a checkpoint the run starts again from tick 0 (same scenario and seed, same result). Exit codes as for `run`; 2 when the directory, its manifest or its checkpoint cannot be used.
    """

    try:
        manifest, config = read_run_scenario(directory)
    except ResumeError as exc:
        raise _exit_bad_input([str(issue) for issue in exc.issues]) from None
    manifest_path = directory / rundir.MANIFEST
    if manifest.get("status") == rundir.COMPLETE:
        _stdout().print(
            f"{directory}: the run is already complete ({manifest.get('ticks_done')} of {config.ticks} ticks); nothing to resume",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_OK)
    if not force:
        problems = []
        pid, host = manifest.get("pid"), manifest.get("host")
        if manifest.get("status") == rundir.RUNNING and host == platform.node() and isinstance(pid, int) and _alive(pid):
            problems.append(
                f"{manifest_path}:1:1: status: the run is still running (process {pid} on this host); stop it first, or pass --force"
            )
        problems += _memory_problems(config, manifest_path, None, None, prefix="scenario.")
        if problems:
            raise _exit_bad_input(problems)
    lock = _lock_run_dir(directory, "attnsim resume", where=f"{directory}:1:1: <dir>")
    try:
        _resume_locked(directory, config, plots, checkpoint_every, checkpoint_seconds)
    finally:
        lock.release()


def _resume_locked(directory: Path, config: Scenario, plots: bool | None, checkpoint_every: int | None, checkpoint_seconds: float) -> None:
    """The rest of `attnsim resume`, in its locked run directory."""
    err = _stderr()
    try:
        plan = open_resume(directory, checkpoint_every=checkpoint_every, plots=plots)
    except ResumeError as exc:
        raise _exit_bad_input([str(issue) for issue in exc.issues]) from None
    except OSError as exc:
        err.print(f"error: cannot write the run directory {directory}: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    plan.writer.manifest.update(pid=os.getpid(), host=platform.node())
    where = f"from the checkpoint at tick {plan.from_tick}" if plan.from_tick else "from tick 0 (no checkpoint)"
    err.print(f"resuming {directory} {where} of {config.ticks} (was {plan.previous_status})", markup=False, soft_wrap=True)
    _drive(
        plan.model.config,
        plan.writer,
        lambda: plan.model,
        checkpoint_every=plan.checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
        done_before=plan.from_tick,
    )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True



def main() -> None:
    app(prog_name="attnsim")

