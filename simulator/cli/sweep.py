"""`attnsim sweep` and `attnsim compare`: registered on `simulator.cli.app` when cli.py imports this.

Exit codes, as for `attnsim run`: 0 done, 1 a failure while running (`sweep`: at least one run
failed; the others went on), 2 bad input (every problem on stderr as `FILE:LINE:COL: key: message`),
130 / 143 interrupted by SIGINT / SIGTERM (finished runs kept; running the sweep again resumes it).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from simulator.analysis.comparison import (
    CompareError,
    comparison,
    rich_table,
    write_comparison,
)
from simulator.cli.main import (
    DEFAULT_RUNS_DIR,
    EXIT_FAILED,
    EXIT_OK,
    ScenarioArg,
    SeedOpt,
    SetOpt,
    StopRequest,
    TicksOpt,
    _exit_bad_input,
    _memory_problems,
    _stderr,
    _stdout,
    app,
    resolve_scenario,
)
from simulator.runs.sweep import SWEEP_TABLE, SweepError, default_sweep_dir, run_sweep
from simulator.runs.threads import WORKER_THREADS_ENV
from simulator.scenario.schema import ScenarioError


@app.command()
def sweep(
    scenario: ScenarioArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="DIR", help="Sweep directory; default runs/NAME-sweep. Running again into it resumes.", show_default=False),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", metavar="N", min=1, help="Worker processes (local backend); default: the number of CPUs. 1 runs in this process.", show_default=False),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", metavar="local|dask", help="local: a process pool; dask: a Dask distributed cluster at --address.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", metavar="tcp://HOST:PORT", help="The Dask scheduler (with --backend dask).", show_default=False)
    ] = None,
    sets: SetOpt = None,
    seed: SeedOpt = None,
    ticks: TicksOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Use a directory that holds another sweep (or other files; runs that match exactly are kept), and skip the memory check."),
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw each run's plots/*.png (off by default for sweeps).")] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="N", min=1, help="Runs per task sent to a worker; default: automatic.", show_default=False)
    ] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option("--checkpoint-every", metavar="N", min=0, help="Save each run's model every N ticks, so running the sweep again resumes half-done runs from there (0: never)."),
    ] = 0,
    worker_threads: Annotated[
        int | None,
        typer.Option("--worker-threads", metavar="N", min=0, help="BLAS and numba threads per worker; default 1 (or ATTNSIM_WORKER_THREADS), 0: the libraries' defaults.", show_default=False),
    ] = None,
) -> None:
    """Run the scenario's sweep: grid × replications, one run directory each, plus sweep.parquet and sweep.json.

    Completed runs already in --out are kept and the rest run (resume). Exit 0 all runs complete, 1 some run failed (the others went on), 2 bad input, 130/143 interrupted.
    """

    err = _stderr()
    if worker_threads is not None:  # read by each worker (spawned processes inherit the environment)
        os.environ[WORKER_THREADS_ENV] = str(worker_threads)
    resolved = resolve_scenario(scenario, sets, seed, ticks)
    if resolved.problems:
        raise _exit_bad_input(resolved.problems)
    config = resolved.scenario
    assert config is not None
    if not force:
        # Every worker holds a run at once (Dask workers live elsewhere: one run is checked).
        concurrent = 1 if backend == "dask" else (workers or os.cpu_count() or 1)
        memory = _memory_problems(config, scenario, sets, ticks, workers=concurrent)
        if memory:
            raise _exit_bad_input(memory)
    directory = out if out is not None else default_sweep_dir(config.name, DEFAULT_RUNS_DIR)
    if config.sweep is None:
        err.print(f"note: {scenario} has no sweep: block; running it as one grid point with 1 replication", markup=False, soft_wrap=True)

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("runs  {task.fields[failed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task(config.name, total=None, failed="")
    counts = {"failed": 0, "todo": 0, "total": 0}

    def on_start(total: int, todo: int) -> None:
        counts.update(total=total, todo=todo)
        kept = total - todo
        progress.console.print(
            f"sweep directory: {directory} ({total} run{'s' if total != 1 else ''}"
            + (f", {kept} complete kept, {todo} to run" if kept else "")
            + ")",
            markup=False,
            soft_wrap=True,
        )
        progress.update(task, total=todo)
        progress.start()  # only now: bad input is reported before any progress bar

    def on_run(record: dict[str, Any]) -> None:
        if record.get("status") != "complete":
            counts["failed"] += 1
            progress.console.print(f"run {record['run_id']} failed: {record.get('error')}", markup=False, soft_wrap=True)
        progress.update(task, advance=1, failed=f"[red]{counts['failed']} failed[/red]" if counts["failed"] else "")

    # A signal only records itself: the sweep polls it between results. Raising from a handler could land
    # inside the process pool's locks (a SIGTERM during its shutdown deadlocked the sweep).
    stop = StopRequest(hard=False)
    stop.install()
    started = time.monotonic()
    result = None
    exit_code = EXIT_OK
    try:
        try:
            result = run_sweep(
                config,
                out=directory,
                workers=workers,
                backend=backend,
                address=address,
                overrides=resolved.overrides,
                force=force,
                plots=plots,
                batch_size=batch_size,
                on_start=on_start,
                on_run=on_run,
                scenario_file=scenario,
                checkpoint_every=checkpoint_every,
                should_stop=stop.requested,
            )
        finally:
            progress.stop()
    except (SweepError, ScenarioError) as exc:
        lines = exc.lines if isinstance(exc, SweepError) else [str(issue) for issue in exc.issues]
        raise _exit_bad_input(lines) from None
    except KeyboardInterrupt as exc:  # raised by a library caller's code; the CLI's own signals set `stop`
        result = exc.args[0] if exc.args else None
        exit_code = 128 + signal.SIGINT
    except Exception as exc:  # noqa: BLE001 - the backend broke down (lost scheduler, ...)
        err.print(f"error: the sweep stopped: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        err.print(f"{directory} keeps the finished runs; run the same command again to resume", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        stop.restore()
    if result is not None and result.manifest["status"] == "interrupted":
        name = signal.Signals(stop.signum).name if stop.signum is not None else "SIGINT"
        exit_code = 128 + (stop.signum or signal.SIGINT)
        err.print(f"interrupted ({name}); finished runs are kept: run the same command again to resume", markup=False, soft_wrap=True)
    seconds = time.monotonic() - started
    if result is None:
        raise typer.Exit(exit_code or EXIT_FAILED)

    manifest = result.manifest
    table = Table(title=f"{config.name} sweep: {manifest['status']}", title_justify="left", header_style="bold")
    table.add_column("", style="dim", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("sweep directory", str(result.directory))
    table.add_row("grid", f"{manifest['points']} point{'s' if manifest['points'] != 1 else ''} × {manifest['replications']} replication{'s' if manifest['replications'] != 1 else ''}")
    table.add_row("runs", f"{manifest['runs_total']:,}")
    table.add_row("ran now", f"{len(result.ran):,}")
    table.add_row("kept from before", f"{len(result.reused):,}")
    table.add_row("not complete", f"{len(result.failed):,}")
    table.add_row("wall time", f"{seconds:,.1f} s")
    table.add_row("combined table", str(result.directory / SWEEP_TABLE))
    _stdout().print(table)
    failed = [run for run in manifest["runs"] if run["status"] == "failed"]
    for run in failed[:20]:
        err.print(f"failed: {run['run_id']} ({run['point']}, seed {run['seed']}): {run.get('error')}", markup=False, soft_wrap=True)
    if len(failed) > 20:
        err.print(f"... and {len(failed) - 20} more failed runs (see sweep.json)", markup=False)
    for warning in manifest.get("warnings", []):
        err.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if exit_code:
        raise typer.Exit(exit_code)
    raise typer.Exit(EXIT_FAILED if result.failed else EXIT_OK)


@app.command()
def compare(
    dirs: Annotated[list[Path], typer.Argument(metavar="DIR...", help="Sweep directories, run directories, or directories of run directories.", show_default=False)],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="DIR", help="Where to write compare.csv, differences.csv, compare.md, pairs.csv and plots/; default FIRST_DIR/compare.", show_default=False)
    ] = None,
    metrics: Annotated[
        list[str] | None, typer.Option("--metric", "-m", metavar="NAME", help="A summary metric to show (repeatable); default: the headline metrics.", show_default=False)
    ] = None,
    all_metrics: Annotated[bool, typer.Option("--all", help="Show every summary metric.")] = False,
    level: Annotated[float, typer.Option("--level", metavar="LEVEL", help="Confidence level of the intervals; tests use α = 1 − LEVEL.")] = 0.95,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw plots/summary.png and plots/timeseries.png.")] = True,
    reference: Annotated[
        str | None, typer.Option("--reference", metavar="GROUP", help="The group the others are compared with: a group label, KEY=VALUE or a grid value; default the first group.", show_default=False)
    ] = None,
    allow_duplicates: Annotated[
        bool, typer.Option("--allow-duplicates", help="Keep one of each set of identical runs (same seed and scenario) in a group instead of refusing them.")
    ] = False,
) -> None:
    """Compare groups of runs: each summary metric's mean and confidence interval across replications, per grid point (sweeps) or per differing scenario keys (run directories).

    Prints the table and each group's difference from the reference group (paired t when the runs share seeds, as a sweep's common random numbers do; Welch otherwise), writes compare.csv, differences.csv, compare.md, pairs.csv and plots. Letters mark which groups differ beyond noise (Holm-corrected per metric). Exit 0 done, 2 bad input.
    """

    err = _stderr()
    if not 0 < level < 1:
        raise _exit_bad_input([f"--level:1:1: level: must be between 0 and 1, e.g. 0.95 (got {level})"])
    try:
        result = comparison(dirs, metrics=metrics, all_metrics=all_metrics, level=level, reference=reference, allow_duplicates=allow_duplicates)
    except CompareError as exc:
        raise _exit_bad_input(exc.lines) from None
    _stdout().print(rich_table(result))
    for note in result.notes:
        err.print(f"note: {note}", markup=False, soft_wrap=True)
    target = out if out is not None else Path(dirs[0]) / "compare"
    try:
        written = write_comparison(result, target, plots=plots)
    except OSError as exc:
        err.print(f"error: cannot write {target}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    err.print(f"wrote {', '.join(str(path) for path in written)}", markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK)


__all__ = ["compare", "sweep"]
