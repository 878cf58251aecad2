"""Comparison figures for `attnsim compare`: summary metrics as bars with confidence-interval
whiskers, and headline time series with replication bands.

Like `simulator.plots`, everything uses matplotlib's object API on the Agg canvas:

    from simulator.analysis.comparison import comparison
    from simulator import compare_plots
    result = comparison(["runs/payout_rules"])
    compare_plots.bars_figure(result.table, result.metrics, result.runs).savefig("bars.png")
    compare_plots.timeseries_figure(result.ticks, ["user_utility_mean"]).savefig("ts.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from simulator.figures.plots import (
    _thousands,
    figure_png,
    metric_label,
    metric_unit,
    replication_bands,
)
from simulator.files import atomic_write_bytes
from simulator.metrics.table import TIMESERIES, summary_label

METRICS_PER_FIGURE = 12
COLUMNS = 3


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    """One colour per group, by the group's place in the comparison: every figure of a comparison
    takes its colours from here, so a group is the same colour in all of them."""
    return {str(group): f"C{index % 10}" for index, group in enumerate(groups)}


def _figure_legend(fig: Figure, colors: Mapping[str, str], *, kind: str) -> None:
    """The figure's one legend, outside the panels (right of them)."""
    handles = [Patch(color=color, alpha=0.55) if kind == "bar" else Line2D([], [], color=color, linewidth=1.5) for color in colors.values()]
    fig.legend(handles, list(colors), loc="outside right upper", fontsize=8, frameon=False, title="group", title_fontsize=8)


def _unit(metric: str) -> str:
    for suffix in ("_total", "_overall"):
        if metric.endswith(suffix):
            unit = metric_unit(metric[: -len(suffix)])
            return unit.replace(" per tick", "") + (" over the run" if suffix == "_total" else "") if unit else ""
    if metric.startswith("final_"):
        return metric_unit(metric[len("final_") :])
    return metric_unit(metric)


def bars_figure(
    table: pd.DataFrame,
    metrics: Sequence[str],
    runs: pd.DataFrame | None = None,
    *,
    level: float | None = None,
    columns: int = COLUMNS,
    dpi: int = 100,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """One subplot per metric: a bar per group at its mean, whiskers for the confidence interval
    (none for n = 1) and, when `runs` (the per-run table) is given, a dot per run; `colors` (group
    -> colour, default `group_colors` of the table's groups) and one legend beside the panels."""

    level = table.attrs.get("level", 0.95) if level is None else level
    rows = max(1, math.ceil(len(metrics) / columns))
    cols = min(columns, max(1, len(metrics)))
    groups = list(dict.fromkeys(table["group"]))
    colors = dict(colors) if colors is not None else group_colors(groups)
    longest = max((len(str(g)) for g in groups), default=1)
    rotate = len(groups) > 3 or longest > 12
    height = 3.0 + (min(longest, 40) * 0.07 if rotate else 0.0)
    fig = Figure(figsize=(4.2 * cols, height * rows + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    x = np.arange(len(groups))
    for index, ax in enumerate(axes.flat):
        if index >= len(metrics):
            ax.set_visible(False)
            continue
        metric = metrics[index]
        part = table[table["metric"] == metric].set_index("group").reindex(groups)
        means = part["mean"].to_numpy(dtype=np.float64)
        # the interval's own ends: asymmetric for bounded metrics, so whiskers stay in range
        lows, highs = part["ci_low"].to_numpy(dtype=np.float64), part["ci_high"].to_numpy(dtype=np.float64)
        shown = np.where(np.isfinite(means), means, 0.0)
        ax.bar(x, shown, color=[colors[str(group)] for group in groups], alpha=0.55, width=0.7)
        has = np.isfinite(lows) & np.isfinite(highs) & np.isfinite(means)
        if has.any():
            whiskers = np.vstack([means[has] - lows[has], highs[has] - means[has]])
            ax.errorbar(x[has], means[has], yerr=whiskers, fmt="none", ecolor="0.15", elinewidth=1.2, capsize=4)
        if runs is not None and metric in runs.columns:
            for position, group in enumerate(groups):
                values = pd.to_numeric(runs.loc[runs["group"] == group, metric], errors="coerce").to_numpy(dtype=np.float64)
                values = values[np.isfinite(values)]
                if len(values):
                    jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
                    ax.plot(position + jitter, values, "o", color="0.2", markersize=2.5, alpha=0.8)
        ax.set_title(summary_label(metric), fontsize=10, loc="left")
        ax.set_ylabel(_unit(metric), fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels([str(g) for g in groups], rotation=35 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(True, axis="y", alpha=0.3, linewidth=0.6)
    fig.suptitle(f"Summary metrics by group: mean, {level * 100:g}% confidence interval, runs as dots", fontsize=12)
    _figure_legend(fig, {str(group): colors[str(group)] for group in groups}, kind="bar")
    return fig


def timeseries_figure(
    ticks: pd.DataFrame,
    metrics: Sequence[str],
    *,
    level: float = 0.95,
    width: float = 9.0,
    row_height: float = 2.6,
    dpi: int = 100,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """Metrics against the tick, one subplot each: per group the mean across its runs and the
    interval of that mean, inside the metric's range (`plots.replication_bands`, the notebooks'
    function); `colors` (group -> colour, default `group_colors` in the frame's order) and one
    legend beside the panels."""
    colors = dict(colors) if colors is not None else group_colors(list(dict.fromkeys(ticks["group"].astype(str))))
    metrics = [m for m in metrics if m in ticks.columns]
    fig = Figure(figsize=(width, row_height * max(1, len(metrics)) + 0.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(metrics)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics):
        replication_bands(ticks, metric, by="group", band="ci", level=level, ax=ax, title=metric_label(metric), colors=colors, legend=False)
    fig.suptitle(f"Headline metrics per tick: mean across replications, {level * 100:g}% interval band", fontsize=12)
    _figure_legend(fig, colors, kind="line")
    return fig


def save_compare_plots(result: Any, directory: str | Path) -> list[Path]:
    """`summary.png` (`summary-2.png`, ... for more than 12 metrics) and `timeseries.png` of a
    `simulator.comparison.Comparison`, written atomically; returns the paths."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("summary*.png"):
        old.unlink()
    written = []
    metrics = list(result.metrics)
    colors = group_colors(result.groups)
    for page, start in enumerate(range(0, len(metrics), METRICS_PER_FIGURE), start=1):
        chunk = metrics[start : start + METRICS_PER_FIGURE]
        path = directory / ("summary.png" if page == 1 else f"summary-{page}.png")
        atomic_write_bytes(path, figure_png(bars_figure(result.table, chunk, result.runs, level=result.level, colors=colors)))
        written.append(path)
    series = [m for m in TIMESERIES if m in result.ticks.columns]
    if series and "tick" in result.ticks.columns:
        path = directory / "timeseries.png"
        atomic_write_bytes(path, figure_png(timeseries_figure(result.ticks, series, level=result.level, colors=colors)))
        written.append(path)
    return written
