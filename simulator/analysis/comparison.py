"""Comparing groups of runs: each summary metric's mean and confidence interval across replications,
and which differences stand out from the noise.

    import simulator
    table = simulator.compare("runs/payout_rules")          # a sweep directory (or several, or run directories)
    table[table.metric == "creator_income_gini"]

    from simulator.analysis.comparison import comparison, write_comparison
    result = comparison(["runs/payout_rules"], level=0.95)  # the table, the pairwise tests, the runs
    write_comparison(result, "runs/payout_rules/compare")   # compare.csv, differences.csv, compare.md, pairs.csv, plots/
    result.differences                                      # each rule − the reference rule, paired

(`simulator.compare` is the `compare` function of this module.)

Groups. A sweep directory contributes one group per grid point, its replications being the runs
of that point. Plain run directories (`attnsim run` outputs; a directory holding run directories
counts as all of them) are grouped by the scenario keys that differ between them, the seed and the
recording-only keys (`RECORDING_ONLY`: name, metrics.agent_panels, sweep) aside: runs that differ
only in those are replications of one group. With several sources (sweep directories, or sweep
directories and run directories), each group is prefixed by its source. Only runs with status
`complete` are used. Runs of one group with the same seed and the same scenario are copies of one
run, not replications: they are refused (`allow_duplicates=True` keeps the first).

Paired or not. When every group's runs have the same seeds (a sweep with `sweep.seeding: common`,
the default: common random numbers), run r of one group and run r of another saw the same users,
creators and shocks, and the groups are compared in pairs; otherwise they are independent samples.

Statistics, for each group and summary metric (see `simulator.metrics.summary.summarize`; runs
where the metric is undefined, null in summary.json, are left out of its n):

- the mean across the group's runs, the sample standard deviation, and the confidence interval of
  the mean: Student t, `mean ± t_{(1+level)/2, n−1} · sd / √n`, for unbounded metrics, built on the
  logit or log scale for metrics the metric table bounds (shares, Gini, counts, money) so that it
  stays inside their range (`simulator.metrics.intervals`; n = 1 gives no interval);
- each group's difference from a reference group (`reference`, default the first): paired
  designs get the paired t interval and test of the run-by-run differences (scipy.stats.ttest_rel),
  unpaired ones Welch's interval and test (scipy.stats.ttest_ind, unequal variances); the
  p-values of one metric are Holm-corrected over the groups;
- between every pair of groups the same test (paired t or Welch); the p-values of one metric
  are Holm-corrected over its pairs (the family is one metric's pairs, not every metric), and a
  pair is distinguishable from noise when its corrected p-value is below α = 1 − level. A pair
  with a group of fewer than two runs is not tested. Two groups without any spread are
  distinguishable exactly when their means differ;
- the compact letter display: groups that share a letter are not distinguishable from each other
  (letters are given in order of the means, `a` to the highest).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from scipy.stats import t, ttest_ind, ttest_rel

from simulator.figures.compare import save_compare_plots
from simulator.files import atomic_write_bytes
from simulator.metrics.intervals import mean_interval as bounded_mean_interval
from simulator.metrics.summary import summarize
from simulator.metrics.table import HEADLINE, summary_figure, summary_label
from simulator.runs import rundir
from simulator.runs.sweep import SweepError, load_sweep, read_sweep_manifest

DEFAULT_LEVEL = 0.95

METHOD = (
    "Welch t-tests between every pair of groups, Holm-corrected within each metric; "
    "groups sharing a letter are not distinguishable from noise"
)


PAIRED_METHOD = (
    "paired t-tests (runs paired by seed: common random numbers) between every pair of groups, "
    "Holm-corrected within each metric; groups sharing a letter are not distinguishable from noise"
)


class CompareError(ValueError):
    """Nothing to compare, or an unknown metric; `lines` are the problems."""

    def __init__(self, lines: str | list[str]):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


# --- statistics ----------------------------------------------------------------------------------


def t_quantile(probability: float, df: float) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom."""

    return float(t.ppf(probability, df))


def metric_bounds(metric: str) -> tuple[float | None, float | None]:
    """The range a summary figure can take (the metric table's `bounds`; unbounded if unknown)."""
    try:
        return summary_figure(metric).bounds
    except KeyError:
        return (None, None)


def mean_interval(values: Iterable[Any], level: float = DEFAULT_LEVEL, bounds: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """n, mean, sd and the interval of the mean of the finite values, inside `bounds` (NaN when
    n < 2): Student t when unbounded, on the log or logit scale otherwise (simulator.metrics.intervals)."""
    return bounded_mean_interval(values, level, bounds)


def _finite_array(values: Sequence[float | None]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return x


def welch_test(a: Sequence[float], b: Sequence[float], level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """Welch's two-sided t-test of equal means (scipy.stats.ttest_ind, unequal variances): t, df,
    p and the `level` interval of mean(a) − mean(b) (NaN when either group has n < 2)."""

    x, y = _finite_array(a), _finite_array(b)
    nan = float("nan")
    if len(x) < 2 or len(y) < 2:
        return {"t": nan, "df": nan, "p": nan, "ci_low": nan, "ci_high": nan}
    diff = float(x.mean() - y.mean())
    if x.var(ddof=1) + y.var(ddof=1) == 0:  # no spread at all: the means are either equal or certainly different
        return {"t": nan if diff == 0 else math.copysign(math.inf, diff), "df": nan, "p": 1.0 if diff == 0 else 0.0, "ci_low": diff, "ci_high": diff}
    result = ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(level)
    return {"t": float(result.statistic), "df": float(result.df), "p": float(result.pvalue), "ci_low": float(interval.low), "ci_high": float(interval.high)}


def paired_test(a: Sequence[float | None], b: Sequence[float | None], level: float = DEFAULT_LEVEL) -> dict[str, float]:
    """The paired two-sided t-test (scipy.stats.ttest_rel) of a − b, pair by pair (pairs with a
    missing side left out): n pairs, t, df, p and the `level` interval of the mean difference."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    nan = float("nan")
    n = len(pairs)
    if n < 2:
        return {"n": n, "t": nan, "df": nan, "p": nan, "ci_low": nan, "ci_high": nan}
    x = np.array([pair[0] for pair in pairs])
    y = np.array([pair[1] for pair in pairs])
    difference = x - y
    if np.all(difference == difference[0]):  # the same difference in every pair: certain (or none)
        d = float(difference[0])
        return {"n": n, "t": nan if d == 0 else math.copysign(math.inf, d), "df": float(n - 1), "p": 1.0 if d == 0 else 0.0, "ci_low": d, "ci_high": d}
    result = ttest_rel(x, y)
    interval = result.confidence_interval(level)
    return {"n": n, "t": float(result.statistic), "df": float(result.df), "p": float(result.pvalue), "ci_low": float(interval.low), "ci_high": float(interval.high)}


def pair_correlation(pairs: Sequence[tuple[float, float]]) -> float:
    """Pearson's r between the two arms over the pairs: what pairing buys, since the paired
    variance of the difference is var(a) + var(b) − 2r·sd(a)·sd(b) (NaN under 3 pairs or no spread)."""
    if len(pairs) < 3:
        return float("nan")
    a, b = np.array(pairs, dtype=np.float64).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(sorted(tested, key=lambda i: (p[i], i))):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def compact_letters(groups: Sequence[str], means: Mapping[str, float], different: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Compact letter display (insert-and-absorb): groups sharing a letter are not distinguishable.

    Letters are ordered by the means of the groups they cover, `a` for the highest."""
    columns: list[set[str]] = [set(groups)]
    for first, second in different:
        split: list[set[str]] = []
        for column in columns:
            if first in column and second in column:
                split += [column - {first}, column - {second}]
            else:
                split.append(column)
        unique: list[set[str]] = []
        for column in split:
            if column and column not in unique:
                unique.append(column)
        columns = [c for c in unique if not any(c < other for other in unique)]

    def key(column: set[str]) -> tuple[float, int]:
        best = max(column, key=lambda g: (_finite(means.get(g)), -groups.index(g)))
        return (-_finite(means.get(best)), groups.index(best))

    columns.sort(key=key)
    alphabet = string.ascii_lowercase + string.ascii_uppercase
    letters = {group: "" for group in groups}
    for number, column in enumerate(columns):
        letter = alphabet[number] if number < len(alphabet) else f"<{number}>"
        for group in groups:
            if group in column:
                letters[group] += letter
    return letters


def _finite(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


# --- collecting runs -----------------------------------------------------------------------------


@dataclass
class Comparison:
    """A comparison: `table` (one row per group and metric), `pairs` (one row per pair of groups and
    metric), the per-run summaries `runs` and per-tick metrics `ticks` it came from."""

    table: pd.DataFrame
    pairs: pd.DataFrame
    runs: pd.DataFrame
    ticks: pd.DataFrame
    groups: list[str]
    keys: list[str]
    metrics: list[str]
    level: float
    sources: list[str]
    notes: list[str] = field(default_factory=list)
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # each group − the reference
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)  # lhs / sobol designs: `sensitivity`
    paired: bool = False  # the groups' runs pair up by seed (common random numbers)
    reference: str | None = None


def _summary_of(metrics: pd.DataFrame, fraction: float) -> dict[str, Any]:
    """runner.summarize, or for a table without every metric column, the tail means of those it has."""
    try:
        return summarize(metrics, fraction)
    except KeyError:
        summary: dict[str, Any] = {"ticks": int(len(metrics))}
        if metrics.empty:
            return summary
        tail = metrics.iloc[-max(1, math.ceil(fraction * len(metrics))) :]
        for column in metrics.columns:
            if column == "tick" or not pd.api.types.is_numeric_dtype(metrics[column]):
                continue
            values = tail[column].to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[column] = float(finite.mean()) if len(finite) else None
        return summary


def _fraction(scenario: Any) -> float:
    try:
        return float(scenario["metrics"]["summary_fraction"])
    except (TypeError, KeyError, ValueError):
        return 0.2


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest dotted suffix that no other key shares (`rule`, `allocation.rule`)."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            suffix = ".".join(parts[-size:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
                break
        short[key] = suffix
    return short


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:g}" if abs(value) < 1e6 else str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _label(point: Mapping[str, Any], short: Mapping[str, str]) -> str:
    return ", ".join(f"{short.get(key, key)}={_text(value)}" for key, value in point.items())


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def _is_sweep(directory: Path) -> bool:
    return (directory / "sweep.parquet").is_file()


def _is_run(directory: Path) -> bool:
    return (directory / rundir.MANIFEST).is_file() and not _is_sweep(directory)


# Scenario keys that change what a run records, not what happens in it: runs that differ only in
# these are one group (and copies of one run, when their seeds are equal too).
RECORDING_ONLY = ("name", "metrics.agent_panels", "sweep")


def _recording_only(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in RECORDING_ONLY)


def result_fingerprint(scenario: Mapping[str, Any] | None) -> str:
    """SHA-256 of a run's resolved scenario without its recording-only keys: two runs with the same
    fingerprint and seed give the same numbers."""
    flat = {key: value for key, value in _flatten(scenario or {}).items() if not _recording_only(key)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Group:
    label: str
    source: str
    point: dict[str, Any]


def _source_label(path: Path, taken: set[str]) -> str:
    label = path.name or str(path)
    if label in taken:
        label = str(path)
    taken.add(label)
    return label


def collect(
    dirs: Sequence[str | Path], *, allow_duplicates: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str], list[str], list[str]]:
    """Per-run summaries and per-tick metrics of the runs in `dirs`, grouped.

    Returns (runs, ticks, groups in order, key columns, source labels, notes). `runs` has one row
    per complete run: `group`, `source`, the key columns, `run_id`, `seed`, `fingerprint`, then
    every summary figure. Runs of one group with the same seed and fingerprint are copies of one
    run, not replications: CompareError, or with `allow_duplicates` the first of them is kept.
    """
    if not dirs:
        raise CompareError("<dirs>:1:1: DIR: give at least one sweep or run directory")
    problems: list[str] = []
    sweeps: list[Path] = []
    runs: list[Path] = []
    skipped_notes: list[str] = []
    for entry in dirs:
        path = Path(entry)
        if not path.is_dir():
            problems.append(f"{path}:1:1: DIR: no such directory")
        elif _is_sweep(path):
            sweeps.append(path)
        elif _is_run(path):
            runs.append(path)
        else:
            entries = sorted(child for child in path.iterdir() if child.is_dir())
            children = [child for child in entries if _is_run(child)]
            skipped = [child for child in entries if not _is_run(child)]
            if children:
                runs.extend(children)
                for child in skipped:
                    why = "a sweep directory: compare it on its own or name it as another DIR" if _is_sweep(child) else "not a run directory"
                    skipped_notes.append(f"{child}: skipped ({why})")
            else:
                problems.append(f"{path}:1:1: DIR: neither a sweep directory (sweep.parquet) nor a run directory (manifest.json), nor a directory of run directories")
    if problems:
        raise CompareError(problems)

    notes: list[str] = list(skipped_notes)
    taken: set[str] = set()
    run_rows: list[dict[str, Any]] = []
    tick_frames: list[pd.DataFrame] = []
    groups: dict[str, _Group] = {}
    keys: list[str] = []
    sources: list[str] = []
    several = len(sweeps) + (1 if runs else 0) > 1

    for path in sweeps:

        source = _source_label(path, taken)
        sources.append(source)
        try:
            frame = load_sweep(path)
        except SweepError as exc:  # a damaged sweep.parquet or sweep.json: located, exit 2
            raise CompareError(exc.lines) from None
        manifest = frame.attrs.get("manifest") or {}
        grid_keys = list(manifest.get("grid_keys") or [])
        if not grid_keys:
            grid_keys = [c for c in frame.columns if c not in ("run_id", "replication") and "." in c]
        fraction = _fraction(manifest.get("scenario"))
        short = _short_keys(grid_keys)
        seeds = {run["run_id"]: run.get("seed") for run in manifest.get("runs", [])}
        sweep_fingerprint = manifest.get("fingerprint")
        failed = [run["run_id"] for run in manifest.get("runs", []) if run.get("status") != rundir.COMPLETE]
        if failed:
            notes.append(f"{source}: {len(failed)} run(s) not complete and left out: {', '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}")
        for key in grid_keys:
            if key not in keys:
                keys.append(key)
        metric_columns = [c for c in frame.columns if c not in ("run_id", "replication", "seed", *grid_keys)]
        frame.attrs.clear()  # the manifest is not needed per row
        for run_id, run_frame in frame.groupby("run_id", sort=False):
            run_frame = run_frame.sort_values("tick") if "tick" in run_frame.columns else run_frame
            point = {key: _scalar(run_frame[key].iloc[0]) for key in grid_keys}
            label = _label(point, short) or manifest.get("name") or source
            if several:
                label = f"{source}: {label}"
            groups.setdefault(label, _Group(label, source, point))
            summary = _summary_of(run_frame[metric_columns].reset_index(drop=True), fraction)
            seed = seeds.get(str(run_id))
            fingerprint = f"{sweep_fingerprint}:{json.dumps(point, sort_keys=True, default=str)}" if sweep_fingerprint else None
            run_rows.append({"group": label, "source": source, **point, "run_id": str(run_id), "seed": seed, "fingerprint": fingerprint, **summary})
            ticks = run_frame[metric_columns].copy()
            ticks.insert(0, "run_id", str(run_id))
            ticks.insert(0, "group", label)
            tick_frames.append(ticks)

    if runs:
        source = "runs" if not sweeps else _source_label(Path("runs"), taken)
        loaded = []
        for path in runs:
            try:
                frame = rundir.load_run(path)
            except (OSError, ValueError) as exc:  # a damaged manifest.json, metrics.parquet or summary.json
                raise CompareError(f"{path}:1:1: <dir>: a damaged run directory: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None
            manifest = frame.attrs.get("manifest") or {}
            if manifest.get("status") != rundir.COMPLETE:
                notes.append(f"{path}: status {manifest.get('status')!r}, left out")
                continue
            loaded.append((path, frame, manifest))
        if loaded:
            sources.append(source)
            flats = []
            for _, _, manifest in loaded:
                flat = _flatten(manifest.get("scenario") or {})
                flat.pop("seed", None)
                flat = {k: v for k, v in flat.items() if not _recording_only(k)}
                flats.append(flat)
            all_keys = list(dict.fromkeys(k for flat in flats for k in flat))
            differing = [k for k in all_keys if len({json.dumps(flat.get(k), sort_keys=True) for flat in flats}) > 1]
            short = _short_keys(differing)
            for key in differing:
                if key not in keys:
                    keys.append(key)
            for (path, frame, manifest), flat in zip(loaded, flats):
                point = {key: flat.get(key) for key in differing}
                label = _label(point, short) or (manifest.get("name") or path.name)
                if several:
                    label = f"{source}: {label}"
                groups.setdefault(label, _Group(label, source, point))
                fraction = _fraction(manifest.get("scenario"))
                summary = _summary_of(frame, fraction)
                run_label = str(path)
                seed = manifest.get("seed")
                fingerprint = result_fingerprint(manifest.get("scenario")) if manifest.get("scenario") else None
                run_rows.append({"group": label, "source": source, **point, "run_id": run_label, "seed": seed, "fingerprint": fingerprint, **summary})
                ticks = frame.copy()
                ticks.attrs.clear()
                ticks.insert(0, "run_id", run_label)
                ticks.insert(0, "group", label)
                tick_frames.append(ticks)

    if not run_rows:
        raise CompareError(["<dirs>:1:1: DIR: no complete runs to compare"] + notes)
    run_rows, dropped = _without_duplicates(run_rows, allow_duplicates)
    notes += dropped
    table = pd.DataFrame(run_rows)
    if dropped:
        kept = set(table["run_id"])
        tick_frames = [frame for frame in tick_frames if frame["run_id"].iloc[0] in kept] if tick_frames else tick_frames
    table.attrs.clear()
    ticks = pd.concat(tick_frames, ignore_index=True) if tick_frames else pd.DataFrame()
    ticks.attrs.clear()
    return table, ticks, list(groups), keys, sources, notes


def _without_duplicates(rows: list[dict[str, Any]], allow: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows without copies of one run in a group (same seed and fingerprint); CompareError
    naming them unless `allow`, then the first copy is kept and a note says which were dropped."""
    first: dict[tuple[str, Any, Any], dict[str, Any]] = {}
    copies: list[tuple[dict[str, Any], dict[str, Any]]] = []
    kept = []
    for row in rows:
        if row.get("seed") is None or row.get("fingerprint") is None:
            kept.append(row)
            continue
        identity = (row["group"], row["seed"], row["fingerprint"])
        if identity in first:
            copies.append((first[identity], row))
            continue
        first[identity] = row
        kept.append(row)
    if not copies:
        return rows, []
    lines = [
        f"{copy['run_id']}: the same run as {original['run_id']} (group {original['group']!r}, seed {original['seed']}, "
        "same scenario): copies of one run are not independent replications"
        for original, copy in copies
    ]
    if not allow:
        raise CompareError(
            [f"<dirs>:1:1: DIR: {line}" for line in lines]
            + ["<dirs>:1:1: DIR: compare runs with different seeds, or pass --allow-duplicates to keep one of each"]
        )
    return kept, [f"{line}; left out (--allow-duplicates)" for line in lines]


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


# --- the comparison ------------------------------------------------------------------------------


def summary_metrics(runs: pd.DataFrame, keys: Sequence[str] = ()) -> list[str]:
    """The numeric summary figures of a per-run table, in their order (`ticks` and keys aside)."""
    reserved = {"group", "source", "run_id", "ticks", "replication", "seed", "fingerprint", *keys}
    return [
        column
        for column in runs.columns
        if column not in reserved
        and runs[column].notna().any()
        and pd.api.types.is_numeric_dtype(runs[column].dropna().infer_objects())
        and not pd.api.types.is_bool_dtype(runs[column].dropna().infer_objects())
    ]


def is_paired(runs: pd.DataFrame, groups: Sequence[str]) -> bool:
    """Whether the groups' runs pair up by seed: every group has at least two runs, no seed twice,
    and the same seeds as every other group (a sweep with `sweep.seeding: common`)."""
    if len(groups) < 2 or "seed" not in runs.columns or runs["seed"].isna().any():
        return False
    seed_sets = []
    for group in groups:
        seeds = runs.loc[runs["group"] == group, "seed"].tolist()
        if len(seeds) < 2 or len(set(seeds)) != len(seeds):
            return False
        seed_sets.append(set(seeds))
    return all(seeds == seed_sets[0] for seeds in seed_sets)


def _by_seed(runs: pd.DataFrame, group: str, metric: str, seeds: Sequence[Any]) -> list[float | None]:
    rows = runs[runs["group"] == group].set_index("seed")[metric] if metric in runs.columns else pd.Series(dtype=float)
    values = []
    for seed in seeds:
        value = rows.get(seed) if seed in rows.index else None
        values.append(None if value is None or pd.isna(value) else float(value))
    return values


def compare_runs(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    keys: Sequence[str] = (),
    level: float = DEFAULT_LEVEL,
    reference: str | None = None,
    paired: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The comparison table, pairwise tests and differences from a reference group of a per-run
    table (one row per run, a `group` column, the key columns, `seed` and one column per metric).

    Table: one row per group and metric: `group`, the keys, `metric`, `n`, `mean`, `sd`, `ci_low`,
    `ci_high` (inside the metric's range: `interval`), `half_width`, `letters`. Pairs: `metric`,
    `group_a`, `group_b`, `mean_a`, `mean_b`, `difference`, `test`, `t`, `df`, `p`, `p_holm`,
    `distinguishable`. Differences: one row per metric and group other than `reference` (default
    the first group): `difference` = group − reference, its `ci_low`, `ci_high`, `half_width`, the
    `test` (`paired t` when the runs pair up by seed, `is_paired`; `Welch` otherwise), `n`
    (pairs, or runs of the group), `t`, `df`, `p`, and `p_holm` over the groups within a metric.
    """
    if not 0 < level < 1:
        raise CompareError(f"--level:1:1: level: must be between 0 and 1 (got {level})")
    groups = list(groups) if groups is not None else list(dict.fromkeys(runs["group"]))
    reference = groups[0] if reference is None else reference
    if reference not in groups:
        raise CompareError(f"--reference:1:1: reference: no group {reference!r}; the groups are {', '.join(groups)}")
    paired = is_paired(runs, groups) if paired is None else paired
    seeds = sorted(set(runs["seed"])) if paired else []
    test_name = "paired t" if paired else "Welch"
    alpha = 1 - level
    points = {}
    for group in groups:
        rows = runs[runs["group"] == group]
        points[group] = {key: (_scalar(rows[key].iloc[0]) if key in rows.columns and len(rows) else None) for key in keys}
    table_rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    difference_rows: list[dict[str, Any]] = []

    def test(first: str, second: str, metric: str, values: Mapping[str, list[float]]) -> dict[str, float]:
        if paired:
            return paired_test(_by_seed(runs, first, metric, seeds), _by_seed(runs, second, metric, seeds), level)
        return {"n": len(values[first]), **welch_test(values[first], values[second], level)}

    for metric in metrics:
        bounds = metric_bounds(metric)
        values = {
            group: [float(v) for v in runs.loc[runs["group"] == group, metric] if v is not None and not pd.isna(v)]
            if metric in runs.columns
            else []
            for group in groups
        }
        stats = {group: mean_interval(values[group], level, bounds) for group in groups}
        pairs = []
        for i, first in enumerate(groups):
            for second in groups[i + 1 :]:
                pairs.append((first, second, test(first, second, metric, values)))
        adjusted = holm([result["p"] for _, _, result in pairs])
        different = []
        for (first, second, result), p_holm in zip(pairs, adjusted):
            distinguishable = bool(np.isfinite(p_holm) and p_holm < alpha)
            if distinguishable:
                different.append((first, second))
            pair_rows.append(
                {
                    "metric": metric,
                    "group_a": first,
                    "group_b": second,
                    "mean_a": stats[first]["mean"],
                    "mean_b": stats[second]["mean"],
                    "difference": stats[first]["mean"] - stats[second]["mean"],
                    "test": test_name,
                    "t": result["t"],
                    "df": result["df"],
                    "p": result["p"],
                    "p_holm": p_holm,
                    "distinguishable": distinguishable,
                }
            )
        letters = compact_letters(groups, {g: stats[g]["mean"] for g in groups}, different) if len(groups) > 1 else {g: "" for g in groups}
        for group in groups:
            row = {"group": group, **points[group], "metric": metric, **stats[group], "letters": letters[group]}
            row["interval"] = row.pop("method")
            table_rows.append(row)
        arms = [group for group in groups if group != reference]
        against = [test(group, reference, metric, values) for group in arms]
        adjusted = holm([result["p"] for result in against])
        for group, result, p_holm in zip(arms, against, adjusted):
            if paired:
                pairs_used = [(a, b) for a, b in zip(_by_seed(runs, group, metric, seeds), _by_seed(runs, reference, metric, seeds)) if a is not None and b is not None]
                difference = float(np.mean([a - b for a, b in pairs_used])) if pairs_used else float("nan")
                correlation = pair_correlation(pairs_used)
            else:
                difference = stats[group]["mean"] - stats[reference]["mean"]
                correlation = float("nan")
            difference_rows.append(
                {
                    "metric": metric,
                    "group": group,
                    "reference": reference,
                    "test": test_name,
                    "n": int(result["n"]),
                    "mean": stats[group]["mean"],
                    "mean_reference": stats[reference]["mean"],
                    "difference": difference,
                    "ci_low": result["ci_low"],
                    "ci_high": result["ci_high"],
                    "half_width": (result["ci_high"] - result["ci_low"]) / 2,
                    "correlation": correlation,
                    "t": result["t"],
                    "df": result["df"],
                    "p": result["p"],
                    "p_holm": p_holm,
                    "distinguishable": bool(np.isfinite(p_holm) and p_holm < alpha),
                }
            )
    columns = ["group", *keys, "metric", "n", "mean", "sd", "ci_low", "ci_high", "half_width", "interval", "letters"]
    table = pd.DataFrame(table_rows, columns=columns)
    table["n"] = table["n"].astype(np.int64)
    pair_columns = ["metric", "group_a", "group_b", "mean_a", "mean_b", "difference", "test", "t", "df", "p", "p_holm", "distinguishable"]
    pairs_frame = pd.DataFrame(pair_rows, columns=pair_columns)
    difference_columns = ["metric", "group", "reference", "test", "n", "mean", "mean_reference", "difference", "ci_low", "ci_high", "half_width", "correlation", "t", "df", "p", "p_holm", "distinguishable"]
    differences = pd.DataFrame(difference_rows, columns=difference_columns)
    method = PAIRED_METHOD if paired else METHOD
    table.attrs.update(level=level, method=method, paired=paired, reference=reference)
    return table, pairs_frame, differences


def sensitivity(runs: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Standardised regression coefficients of each metric on the design's continuous factors
    (one row per metric and factor: `metric`, `factor`, `src`, `r2`, `n`): the change in the
    metric, in its standard deviations, per standard deviation of the factor, from one least-squares
    fit of every run; `r2` says how much of the metric the linear fit explains (SRC² sums to about
    r2 for a space-filling design). Written by hand: a single least-squares fit (numpy)."""
    rows = []
    for metric in metrics:
        frame = runs[[*factors, metric]].apply(pd.to_numeric, errors="coerce").dropna()
        n = len(frame)
        if n <= len(factors) + 1:
            continue
        x, y = frame[list(factors)].to_numpy(dtype=np.float64), frame[metric].to_numpy(dtype=np.float64)
        x_sd, y_sd = x.std(axis=0, ddof=1), y.std(ddof=1)
        if y_sd == 0 or (x_sd == 0).any():
            continue
        design = np.column_stack([np.ones(n), (x - x.mean(axis=0)) / x_sd])
        coefficients, *_ = np.linalg.lstsq(design, (y - y.mean()) / y_sd, rcond=None)
        fitted = design @ coefficients
        r2 = 1 - float(np.sum(((y - y.mean()) / y_sd - fitted) ** 2)) / (n - 1)
        for factor, src in zip(factors, coefficients[1:]):
            rows.append({"metric": metric, "factor": factor, "src": float(src), "r2": r2, "n": n})
    return pd.DataFrame(rows, columns=["metric", "factor", "src", "r2", "n"])


def _design_factors(dirs: Sequence[str | Path]) -> list[str]:
    """The continuous factors (`sweep.ranges` keys) of the lhs / sobol sweeps among `dirs`."""
    factors: list[str] = []
    for entry in dirs:
        manifest_path = Path(entry) / "sweep.json"
        if _is_sweep(Path(entry)) and manifest_path.is_file():
            for key in read_sweep_manifest(manifest_path).get("ranges") or {}:
                if key not in factors:
                    factors.append(key)
    return factors


def resolve_reference(text: str | None, groups: Sequence[str], points: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The group `--reference TEXT` names: a group label, `key=value`, or a grid value alone
    (`equal` for `rule=equal`); None for the default (the first group)."""
    if text is None:
        return None
    if text in groups:
        return text
    matches = [
        group
        for group in groups
        if any(_text(value) == text or f"{key}={_text(value)}" == text or f"{key.rsplit('.', 1)[-1]}={_text(value)}" == text for key, value in points[group].items())
    ]
    if len(matches) == 1:
        return matches[0]
    why = "matches several groups" if matches else "names no group"
    close = difflib.get_close_matches(text, groups, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise CompareError(f"--reference:1:1: reference: {text!r} {why}{hint} (the groups are {', '.join(groups)})")


def comparison(
    dirs: Sequence[str | Path],
    *,
    metrics: Sequence[str] | None = None,
    all_metrics: bool = False,
    level: float = DEFAULT_LEVEL,
    reference: str | None = None,
    allow_duplicates: bool = False,
) -> Comparison:
    """Collect the runs of `dirs` and compare their groups (see the module doc)."""
    if not 0 < level < 1:
        raise CompareError(f"--level:1:1: level: must be between 0 and 1 (got {level})")
    runs, ticks, groups, keys, sources, notes = collect(dirs, allow_duplicates=allow_duplicates)
    available = summary_metrics(runs, keys)
    if metrics:
        unknown = [m for m in metrics if m not in runs.columns or m in keys or m in ("group", "source", "run_id", "seed", "fingerprint")]
        if unknown:
            lines = []
            for name in unknown:
                close = difflib.get_close_matches(name, available, n=1)
                lines.append(f"--metric:1:1: metric: unknown summary metric {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            raise CompareError(lines + [f"--metric:1:1: metric: the summary metrics are {', '.join(available)}"])
        chosen = list(dict.fromkeys(metrics))
    elif all_metrics:
        chosen = available
    else:
        chosen = [m for m in HEADLINE if m in runs.columns] or available[:10]
    points = {group: {key: _scalar(runs.loc[runs["group"] == group, key].iloc[0]) for key in keys if key in runs.columns} for group in groups}
    chosen_reference = resolve_reference(reference, groups, points)
    table, pairs, differences = compare_runs(runs, chosen, groups=groups, keys=keys, level=level, reference=chosen_reference)
    replications = runs.groupby("group", sort=False).size()
    if (replications < 2).any():
        notes.append("groups with a single run have no interval and are not tested")
    factors = [factor for factor in _design_factors(dirs) if factor in runs.columns]
    return Comparison(
        table, pairs, runs, ticks, groups, keys, chosen, level, sources, notes,
        differences=differences, paired=bool(table.attrs["paired"]), reference=table.attrs["reference"],
        sensitivity=sensitivity(runs, factors, chosen) if factors else pd.DataFrame(),
    )  # fmt: skip


def compare(
    *dirs: str | Path,
    metrics: Sequence[str] | None = None,
    all_metrics: bool = False,
    level: float = DEFAULT_LEVEL,
    reference: str | None = None,
    allow_duplicates: bool = False,
) -> pd.DataFrame:
    """The comparison table of sweep or run directories: one row per group and summary metric, with
    `n`, `mean`, `sd`, the interval `ci_low`, `ci_high` (inside the metric's range; NaN for n = 1)
    and the compact `letters` (groups sharing a letter are not distinguishable by Holm-corrected
    paired t-tests, or Welch tests when the runs do not pair up by seed).

    `simulator.compare("runs/payout_rules")`; `metrics` picks summary metrics (default: the
    headline ones), `all_metrics=True` takes every one; `level` is the confidence level. The
    differences from the `reference` group are `comparison(...).differences`.
    """
    if len(dirs) == 1 and isinstance(dirs[0], (list, tuple)):
        dirs = tuple(dirs[0])
    return comparison(dirs, metrics=metrics, all_metrics=all_metrics, level=level, reference=reference, allow_duplicates=allow_duplicates).table


# --- writing and printing ------------------------------------------------------------------------


def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, thousands separators for large values."""
    if value is None:
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "–"
    if abs(number) >= 1_000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}"


def interval_text(row: Mapping[str, Any]) -> str:
    if row["n"] == 0:
        return "no runs"
    if row["n"] < 2 or not math.isfinite(row["ci_low"]):
        return "n = 1, no interval"
    return f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def method_text(level: float, paired: bool = False) -> str:
    pct = f"{level * 100:g}%"
    alpha = f"{1 - level:.3g}"
    test = "paired t-tests (runs paired by seed: common random numbers)" if paired else "Welch t-tests"
    return (
        f"Means across replications with {pct} intervals (Student t; on the logit or log scale for bounded metrics, so they stay in range; n = 1: no interval). "
        f"Differences from the reference group and letters: {test}, Holm-corrected within each metric at α = {alpha}; "
        "groups that share a letter are not distinguishable from noise (a, b, ... in order of the means, a highest)."
    )


def difference_text(row: Mapping[str, Any]) -> str:
    if not math.isfinite(row["ci_low"]):
        return "not tested"
    return f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def markdown(result: Comparison) -> str:
    """compare.md: the method, then one table per metric."""
    pct = f"{result.level * 100:g}%"
    lines = [
        f"# Comparison: {', '.join(result.sources)}",
        "",
        f"{len(result.groups)} groups, {len(result.runs)} complete runs, {'paired by seed' if result.paired else 'unpaired'}. {method_text(result.level, result.paired)}",
        "Summary metrics are means over the last ticks of each run (`summary.json`), or run totals.",
        "",
    ]
    for note in result.notes:
        lines.append(f"- {note}")
    if result.notes:
        lines.append("")
    for metric in result.metrics:
        part = result.table[result.table["metric"] == metric]
        pairs = result.pairs[result.pairs["metric"] == metric]
        tested = int(pairs["p_holm"].notna().sum())
        lines += [f"## {summary_label(metric)} (`{metric}`)", "", f"| group | n | mean | {pct} CI | letters |", "| --- | ---: | ---: | --- | --- |"]
        for row in part.to_dict("records"):
            lines.append(f"| {row['group']} | {row['n']} | {fmt(row['mean'])} | {interval_text(row)} | {row['letters']} |")
        lines.append("")
        if len(result.groups) > 1:
            lines.append(f"Distinguishable pairs: {int(pairs['distinguishable'].sum())} of {tested} tested.")
            lines.append("")
            against = result.differences[result.differences["metric"] == metric]
            test = "paired t" if result.paired else "Welch"
            lines += [
                f"Difference from `{result.reference}` ({test}, {pct} CI, Holm over the groups):",
                "",
                f"| group | n{' pairs' if result.paired else ''} | difference | {pct} CI | p (Holm) |",
                "| --- | ---: | ---: | --- | ---: |",
            ]
            for row in against.to_dict("records"):
                lines.append(f"| {row['group']} | {row['n']} | {fmt(row['difference'])} | {difference_text(row)} | {fmt(row['p_holm'], 3)} |")
            lines.append("")
    return "\n".join(lines)


def write_comparison(result: Comparison, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write `compare.csv` (the table), `differences.csv` (each group − the reference), `compare.md`,
    `pairs.csv` and, with `plots`,
    `plots/summary.png` (bars with interval whiskers; `summary-2.png`, ... past 12 metrics) and
    `plots/timeseries.png` (headline metrics per tick, mean and interval band across replications)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "compare.csv"
    atomic_write_bytes(path, result.table.to_csv(index=False).encode("utf-8"))
    written.append(path)
    path = out / "differences.csv"
    atomic_write_bytes(path, result.differences.to_csv(index=False).encode("utf-8"))
    written.append(path)
    path = out / "pairs.csv"
    atomic_write_bytes(path, result.pairs.to_csv(index=False).encode("utf-8"))
    written.append(path)
    if not result.sensitivity.empty:
        path = out / "sensitivity.csv"
        atomic_write_bytes(path, result.sensitivity.to_csv(index=False).encode("utf-8"))
        written.append(path)
    path = out / "compare.md"
    atomic_write_bytes(path, markdown(result).encode("utf-8"))
    written.append(path)
    if plots:

        written += save_compare_plots(result, out / "plots")
    return written


def rich_table(result: Comparison) -> Any:
    """The comparison as one rich Table, a section per metric."""

    pct = f"{result.level * 100:g}%"
    table = Table(title=f"comparison: {', '.join(result.sources)}", title_justify="left", header_style="bold")
    table.add_column("metric", no_wrap=False, max_width=34)
    table.add_column("group", no_wrap=False)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("mean", justify="right", no_wrap=True)
    table.add_column(f"{pct} CI", justify="right", no_wrap=True)
    several = len(result.groups) > 1
    if several:
        table.add_column("letters")
        table.add_column("− reference", justify="right", no_wrap=True)
        table.add_column(f"{pct} CI", justify="right", no_wrap=True)
        table.add_column("p (Holm)", justify="right", no_wrap=True)
    for index, metric in enumerate(result.metrics):
        if index:
            table.add_section()
        part = result.table[result.table["metric"] == metric]
        against = result.differences[result.differences["metric"] == metric].set_index("group") if several else None
        for position, row in enumerate(part.to_dict("records")):
            cells = [summary_label(metric) if position == 0 else "", row["group"], str(row["n"]), fmt(row["mean"]), interval_text(row)]
            if several:
                cells.append(row["letters"])
                if against is not None and row["group"] in against.index:
                    difference = against.loc[row["group"]]
                    cells += [fmt(difference["difference"]), difference_text(difference), fmt(difference["p_holm"], 3)]
                else:
                    cells += ["reference", "", ""]
            table.add_row(*cells)
    if several:
        method = PAIRED_METHOD if result.paired else METHOD
        table.caption = f"letters and differences from {result.reference}: {method} (α = {1 - result.level:.3g})"
    return table
