"""Time-series figures of the headline metrics, with axis labels and units.

Everything here uses matplotlib's object API on the Agg canvas (no `pyplot`, no global backend
switch), so it is safe in scripts, worker processes and notebooks alike:

    from simulator import load_run, plots
    frame = load_run("runs/baseline-20250101-120000")
    fig = plots.panel_figure(frame, plots.PANELS["concentration"])
    fig.savefig("concentration.png")

    # several runs on the same axes: pass a mapping of label -> metrics frame
    fig = plots.panel_figure({"softmax": a, "top_k": b}, plots.PANELS["users"])

`PANELS` are the figures `attnsim run` writes into a run directory's `plots/`; labels and units
come from the metric table (`simulator/metrics/table.py`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from scipy.stats import t as student

from simulator.files import atomic_write_bytes
from simulator.metrics.collect import gini
from simulator.metrics.intervals import bounded_interval
from simulator.metrics.panels import creator_totals, last_tick, vectors
from simulator.metrics.table import BY_NAME


@dataclass(frozen=True)
class AxisSpec:
    """One subplot: metrics that share a unit, drawn against the tick."""

    columns: tuple[str, ...]
    ylabel: str | None = None  # defaults to the first metric's unit
    title: str | None = None  # defaults to the metrics' labels


@dataclass(frozen=True)
class Panel:
    """One figure (one PNG in a run directory): a title and subplots stacked over a shared tick axis."""

    title: str
    axes: tuple[AxisSpec, ...]


PANELS: dict[str, Panel] = {
    "users": Panel(
        "Users",
        (
            AxisSpec(("active_users", "alive_users"), "users"),
            AxisSpec(("churned_users",)),
            AxisSpec(("user_utility_mean", "user_welfare"), "utility per user per tick"),
        ),
    ),
    "attention": Panel(
        "Attention and engagement",
        (
            AxisSpec(("attention_supplied", "attention_allocated")),
            AxisSpec(("consumptions", "purchases", "ad_clicks")),
        ),
    ),
    "concentration": Panel(
        "Concentration of exposure and income across creators",
        (
            AxisSpec(("exposure_gini_creators", "creator_income_gini"), "Gini coefficient, 0–1", "Gini coefficients"),
            AxisSpec(("exposure_hhi_creators", "top1pct_creator_exposure_share"), "index or share, 0–1", "HHI and top-1% share"),
        ),
    ),
    "diversity": Panel(
        "Diversity",
        (
            AxisSpec(("supply_diversity",)),
            AxisSpec(("homogenization",)),
        ),
    ),
    "creators": Panel(
        "Creators",
        (
            AxisSpec(("active_creators",)),
            AxisSpec(("creator_entries", "creator_exits")),
        ),
    ),
    "money": Panel(
        "Money flows",
        (
            AxisSpec(("user_spend", "creator_sales", "platform_revenue"), None, "user spend, creator sales, platform revenue"),
            AxisSpec(("ad_spend", "creator_payouts"), None, "ad spend and creator payouts"),
            AxisSpec(("advertiser_roi",)),
        ),
    ),
}

Data = pd.DataFrame | Mapping[str, pd.DataFrame]


def metric_label(column: str) -> str:
    """The plot label of a metric column (the column name in words when the table has none)."""
    metric = BY_NAME.get(column)
    return metric.label if metric else column.replace("_", " ")


def metric_unit(column: str) -> str:
    """The unit of a metric column ("" when the table has none)."""
    metric = BY_NAME.get(column)
    return metric.unit if metric else ""


def _frames(data: Data) -> list[tuple[str | None, pd.DataFrame]]:
    if isinstance(data, pd.DataFrame):
        return [(None, data)]
    return [(str(label), frame) for label, frame in data.items()]


def _thousands(value: float, _pos: int) -> str:
    if abs(value) >= 1_000:
        return f"{value:,.0f}"
    return f"{value:g}"


def plot_metrics(ax: Axes, data: Data, columns: Sequence[str], *, ylabel: str | None = None, title: str | None = None) -> Axes:
    """Draw `columns` of one or several metrics frames against `tick` on `ax`.

    `data` is a metrics frame, or a mapping of run label -> frame to overlay runs (each line is
    then labelled "run: metric"). Returns `ax` with the x axis labelled "tick" and the y axis
    labelled with the unit (the first column's unit unless `ylabel` is given).
    """
    frames = _frames(data)
    drawn = 0
    for run_label, frame in frames:
        if frame.empty:
            continue
        ticks = frame["tick"] if "tick" in frame.columns else pd.RangeIndex(1, len(frame) + 1)
        few = len(frame) <= 30
        for column in columns:
            if column not in frame.columns:
                continue
            label = metric_label(column)
            if run_label is not None:
                label = f"{run_label}: {label}" if len(columns) > 1 else run_label
            ax.plot(ticks, frame[column].astype(float), label=label, marker="o" if few else None, markersize=3, linewidth=1.4)
            drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no ticks recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_title(title or ", ".join(metric_label(c) for c in columns), fontsize=10, loc="left")
    ax.set_xlabel(metric_label("tick"))
    ax.set_ylabel(ylabel or metric_unit(columns[0]), fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.grid(True, alpha=0.3, linewidth=0.6)
    if drawn > 1:
        ax.legend(fontsize=7, loc="best", frameon=False)
    return ax


def panel_figure(data: Data, panel: Panel, *, width: float = 8.0, row_height: float = 2.6, dpi: int = 100) -> Figure:
    """A figure for one panel: its subplots stacked vertically over a shared tick axis."""
    fig = Figure(figsize=(width, row_height * len(panel.axes) + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panel.axes), 1, sharex=True, squeeze=False)[:, 0]
    for ax, spec in zip(axes, panel.axes):
        plot_metrics(ax, data, spec.columns, ylabel=spec.ylabel, title=spec.title)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    fig.suptitle(panel.title, fontsize=12)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so the same data gives the same bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def render_panels(data: Data, panels: Mapping[str, Panel] | None = None) -> dict[str, bytes]:
    """PNG bytes for each panel, keyed by file name (`users.png`, ...)."""
    panels = PANELS if panels is None else panels
    return {f"{name}.png": figure_png(panel_figure(data, panel)) for name, panel in panels.items()}


def save_plots(data: Data, directory: str | Path, panels: Mapping[str, Panel] | None = None) -> list[Path]:
    """Write each panel as `DIRECTORY/<panel>.png` (atomically); returns the paths written."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, png in render_panels(data, panels).items():
        path = directory / filename
        atomic_write_bytes(path, png)
        written.append(path)
    return written


# --- exploring runs: replication bands, inequality, money flows, topic space ---------------------
#
# Each function takes pandas frames or arrays and an optional `ax`; without one it draws on a new
# Figure (Agg canvas, no pyplot). It returns the Axes it drew on (`ax.figure` is the Figure), with
# both axes labelled with units. The CLI's extra run plots (`save_run_extras`) and the notebooks in
# notebooks/ use these same functions.

BANDS = ("ci", "minmax", "sd", "iqr", "none")


def _axes(ax: Axes | None, figsize: tuple[float, float] = (7.0, 4.2)) -> Axes:
    if ax is not None:
        return ax
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _finish_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def band_frame(
    frame: pd.DataFrame, column: str, *, by: str | None = None, x: str = "tick", band: str = "ci", level: float = 0.95
) -> pd.DataFrame:
    """Mean of `column` across runs at each `x`, per group of `by`, with the band's bounds.

    `frame` is long: one row per run and tick (e.g. a sweep's combined table), any number of runs
    per group. Returns columns `[by,] x, mean, low, high, runs`. `band` is `ci` (the `level`
    interval of the mean, mean ± t·s/√n with n − 1 degrees of freedom, built on the logit or log
    scale for a column the metric table bounds so it stays in range: `simulator.metrics.intervals`), `minmax`, `sd` (mean ± one standard deviation),
    `iqr` (for skewed values: `mean` holds the median and the band is the 25–75% range) or `none`;
    with one run the band is the line itself.
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, not {band!r}")
    keys = [by, x] if by is not None else [x]
    grouped = frame.groupby(keys, sort=True, dropna=False)[column]
    stats = grouped.agg(["mean", "std", "min", "max", "count"])
    if band == "iqr":
        stats["mean"] = grouped.median()
        stats["min"], stats["max"] = grouped.quantile(0.25), grouped.quantile(0.75)
    stats = stats.reset_index()
    sd = stats["std"].fillna(0.0).to_numpy(dtype=float)
    mean = stats["mean"].to_numpy(dtype=float)
    n = stats["count"].to_numpy(dtype=int)
    if band == "ci":

        quantile = np.where(n > 1, student.ppf((1 + level) / 2, np.maximum(n - 1, 1)), 0.0)
        bounds = BY_NAME[column].bounds if column in BY_NAME else (None, None)
        low, high = bounded_interval(mean, sd / np.sqrt(np.maximum(n, 1)), quantile, bounds)
    elif band == "sd":
        low, high = mean - sd, mean + sd
    elif band in ("minmax", "iqr"):
        low, high = stats["min"].to_numpy(dtype=float), stats["max"].to_numpy(dtype=float)
    else:
        low, high = mean, mean
    out = stats[keys].copy()
    out["mean"], out["low"], out["high"], out["runs"] = mean, low, high, n
    return out


_BAND_TEXT = {"ci": "{level:g}% CI of the mean", "minmax": "min–max", "sd": "± 1 s.d.", "iqr": "25–75%", "none": ""}


def replication_bands(
    frame: pd.DataFrame,
    column: str,
    *,
    by: str | None = None,
    x: str = "tick",
    band: str = "ci",
    level: float = 0.95,
    ax: Axes | None = None,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
    legend: bool = True,
) -> Axes:
    """Time series of `column` with replication bands: the mean line across runs and a shaded band
    (`ci` at `level`, `minmax`, `sd`, `iqr` (median line) or `none`; see `band_frame`), one line per value
    of `by` (e.g. a sweep's rule column). `colors` maps each value of `by` to its colour (so several
    figures agree); `legend=False` leaves the legend to the caller (one per figure).

    `frame` is long, one row per run and tick, such as a sweep's combined table or
    `pd.concat` of several runs' metrics with a label column.
    """
    ax = _axes(ax)
    table = band_frame(frame, column, by=by, x=x, band=band, level=level)
    groups = [(None, table)] if by is None else list(table.groupby(by, sort=True, dropna=False))
    runs_seen = set()
    for key, rows in groups:
        label = "mean" if key is None else str(key)
        color = colors.get(label) if colors is not None else None
        (line,) = ax.plot(rows[x], rows["mean"], label=label, linewidth=1.5, color=color)
        if band != "none":
            ax.fill_between(rows[x], rows["low"], rows["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        runs_seen.update(int(k) for k in rows["runs"].unique())
    unit = metric_unit(column)
    runs = "/".join(str(k) for k in sorted(runs_seen)) or "0"
    band_text = _BAND_TEXT[band].format(level=level * 100)
    centre = "median" if band == "iqr" else "mean"
    heading = title or f"{metric_label(column)}: {centre} over {runs} run{'s' if runs != '1' else ''}" + (f", band {band_text}" if band_text else "")
    _finish_axes(ax, heading, metric_label(x), unit)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    if legend and (len(groups) > 1 or by is not None):
        ax.legend(fontsize=7, loc="best", frameon=False, title=by, title_fontsize=7)
    return ax


ValuesLike = Sequence[float] | np.ndarray | pd.Series
ValuesData = ValuesLike | Mapping[str, ValuesLike]


def _value_sets(data: ValuesData) -> list[tuple[str | None, np.ndarray]]:
    if isinstance(data, Mapping):
        return [(str(label), np.asarray(values, dtype=np.float64)) for label, values in data.items()]
    return [(None, np.asarray(data, dtype=np.float64))]


def lorenz_points(values: ValuesLike) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of non-negative `values` (negatives count as 0): x the cumulative share of
    agents, poorest first, y their cumulative share of the total, both from 0 to 1. All zeros (or
    no values) give the diagonal, matching `metrics.gini` = 0."""
    values = np.sort(np.clip(np.asarray(values, dtype=np.float64), 0.0, None))
    n = len(values)
    total = values.sum()
    if n == 0 or total <= 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    x = np.arange(n + 1, dtype=np.float64) / n
    y = np.concatenate([[0.0], np.cumsum(values) / total])
    return x, y


def lorenz_curve(data: ValuesData, *, ax: Axes | None = None, agents: str = "creators", title: str | None = None) -> Axes:
    """Lorenz curves of one set of values or a mapping label -> values (e.g. `{"exposure": ...,
    "income": ...}` per creator), each labelled with its Gini coefficient, over the line of equality."""

    ax = _axes(ax, (5.2, 5.0))
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="equality")
    for label, values in _value_sets(data):
        x, y = lorenz_points(values)
        name = label or "values"
        ax.plot(x, y, linewidth=1.6, label=f"{name} (Gini {gini(np.clip(values, 0, None)):.2f}, n = {len(values)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    _finish_axes(
        ax,
        title or f"Lorenz curves across {agents}",
        f"cumulative share of {agents} (smallest first), 0–1",
        "cumulative share of the total, 0–1",
    )
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return ax


def rank_size(
    data: ValuesData,
    *,
    ax: Axes | None = None,
    agents: str = "creators",
    unit: str = "exposures",
    title: str | None = None,
) -> Axes:
    """Rank–size plot on log–log axes: each agent's value against its rank (1 = largest), for one
    set of values or a mapping label -> values. Zeros cannot sit on a log axis; how many were left
    out is said in the legend."""
    ax = _axes(ax)
    drawn = 0
    for label, values in _value_sets(data):
        values = np.sort(values[np.isfinite(values)])[::-1]
        positive = values[values > 0]
        zeros = len(values) - len(positive)
        name = label or "values"
        note = f", {zeros} zero{'s' if zeros != 1 else ''} not shown" if zeros else ""
        if len(positive):
            ranks = np.arange(1, len(positive) + 1)
            ax.plot(ranks, positive, marker="o", markersize=2.5, linewidth=1.0, label=f"{name} (n = {len(values)}{note})")
            drawn += 1
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best", frameon=False)
    else:
        ax.text(0.5, 0.5, "no positive values", transform=ax.transAxes, ha="center", va="center", color="0.5")
    _finish_axes(ax, title or f"Distribution of {unit} across {agents} (rank–size)", f"rank among {agents} (1 = largest), log scale", f"{unit}, log scale")
    return ax


# Money flows of a tick, in the order they are stacked: (column, label).
MONEY_FLOWS: tuple[tuple[str, str], ...] = (
    ("creator_sales", "users → creators (sales less the take)"),
    ("platform_take", "users → platform (take on purchases)"),
    ("ad_spend", "advertisers → platform (ad spend)"),
    ("creator_payouts", "platform → creators (payout pool)"),
    ("attention_rewards", "platform → users (attention rewards)"),
    ("exposure_pay", "creator fund → creators (pay per exposure)"),
)
OPTIONAL_FLOWS = ("attention_rewards", "exposure_pay")  # drawn only when some tick has any


def money_flow_frame(metrics: pd.DataFrame) -> pd.DataFrame:
    """The tick's money flows from a metrics frame: `tick` and the columns of `MONEY_FLOWS`
    (`platform_take` = `user_spend` − `creator_sales`), in minor units per tick. Several runs'
    rows for the same tick (a sweep's table) are averaged per tick. `attention_rewards` and
    `exposure_pay` are kept only when some tick has any."""
    data = pd.DataFrame({"tick": metrics["tick"].to_numpy()})
    data["creator_sales"] = metrics["creator_sales"].to_numpy(dtype=np.float64)
    data["platform_take"] = (metrics["user_spend"] - metrics["creator_sales"]).to_numpy(dtype=np.float64)
    data["ad_spend"] = metrics["ad_spend"].to_numpy(dtype=np.float64)
    data["creator_payouts"] = metrics["creator_payouts"].to_numpy(dtype=np.float64)
    for column in OPTIONAL_FLOWS:
        if column in metrics.columns:
            data[column] = metrics[column].to_numpy(dtype=np.float64)
    flows = data.groupby("tick", sort=True).mean().reset_index()
    return flows.drop(columns=[column for column in OPTIONAL_FLOWS if column in flows.columns and not (flows[column] != 0).any()])


def money_flows(metrics: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Money flow per tick as a stacked area: users → creators, users → platform, advertisers →
    platform, platform → creators (and platform → users when attention rewards are paid). The top
    of the stack is the money that changed hands in the tick (minor units)."""
    ax = _axes(ax)
    flows = money_flow_frame(metrics)
    present = [(column, label) for column, label in MONEY_FLOWS if column in flows.columns]
    if len(flows):
        ax.stackplot(
            flows["tick"],
            *[flows[column] for column, _ in present],
            labels=[label for _, label in present],
            alpha=0.85,
            linewidth=0.3,
        )
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no ticks recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
    _finish_axes(ax, title or "Money flows per tick (stacked)", metric_label("tick"), "money, minor units per tick")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    return ax


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project `vectors` (n, d) on their first two principal components.

    Returns (coordinates (n, 2), explained variance ratio (2,), components (2, d), mean (d,)), so
    other vectors project the same way: `(other - mean) @ components.T`. Signs are fixed (each
    component's largest loading is positive) so the picture does not flip between runs.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    d = vectors.shape[1] if vectors.ndim == 2 else 0
    mean = vectors.mean(axis=0) if len(vectors) else np.zeros(d)
    centred = vectors - mean
    if len(vectors) < 2 or d == 0:
        components = np.eye(2, max(d, 2))[:, :d]
        return centred @ components.T, np.zeros(2), components, mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.zeros((2, d))
    k = min(2, vt.shape[0])
    components[:k] = vt[:k]
    signs = np.sign(components[np.arange(2), np.argmax(np.abs(components), axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular**2
    ratio = np.zeros(2)
    if variance.sum() > 0:
        ratio[:k] = variance[:k] / variance.sum()
    return centred @ components.T, ratio, components, mean


_COLOUR_UNITS = {
    "tick": "tick",
    "income": "income, minor units per tick",
    "exposure": "exposures per tick",
    "quality": "quality, 0–1",
    "wallet": "wallet, minor units",
    "profit_ema": "smoothed profit, minor units per tick",
}


def topic_trajectories(
    creators: pd.DataFrame,
    *,
    color_by: str = "tick",
    users: pd.DataFrame | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    include_exited: bool = False,
) -> Axes:
    """Creators' niches over time, projected to 2-D: PCA of the `topic_*` vectors of a creators
    panel (every recorded tick of every sampled creator), one thin path per creator in tick
    order, points coloured by `color_by` (`tick`, `income`, `exposure`, `quality`, ... any
    numeric column), and a ring on each creator's last position. With `users` (a users panel),
    the users' interests at the last recorded tick are drawn as grey dots in the same projection.
    Rows after a creator exited are left out unless `include_exited`.
    """

    ax = _axes(ax, (7.0, 5.6))
    rows = creators if include_exited or "status" not in creators.columns else creators[creators["status"] != "exited"]
    rows = rows.sort_values(["agent", "tick"]) if len(rows) else rows
    if rows.empty:
        ax.text(0.5, 0.5, "no creators recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
        _finish_axes(ax, title or "Creators' niches in topic space", "PC1", "PC2")
        return ax
    coords, ratio, components, mean = pca_2d(vectors(rows, "topic"))
    if users is not None and not users.empty:
        audience = last_tick(users)
        if "status" in audience.columns:
            audience = audience[audience["status"] != "churned"]
        if len(audience):
            points = (vectors(audience, "interest") - mean) @ components.T
            ax.scatter(points[:, 0], points[:, 1], s=14, color="tab:red", alpha=0.35, linewidths=0, label=f"users' interests, tick {int(audience['tick'].max())}", zorder=1)
    agents = rows["agent"].to_numpy()
    starts = np.flatnonzero(np.r_[True, agents[1:] != agents[:-1]])
    ends = np.r_[starts[1:], len(agents)]
    for start, end in zip(starts, ends):
        if end - start > 1:
            ax.plot(coords[start:end, 0], coords[start:end, 1], color="0.35", linewidth=0.6, alpha=0.6, zorder=2)
    colour = rows[color_by].to_numpy(dtype=np.float64)
    finite = colour[np.isfinite(colour)]
    # Skewed quantities (income, exposure) would paint everything the bottom colour: clip at the 95th percentile.
    clip = color_by not in ("tick", "born_tick", "quality", "clickbait") and len(finite) > 0
    vmax = float(np.percentile(finite, 95)) if clip else None
    if vmax is not None and vmax <= float(finite.min()):
        vmax, clip = None, False
    scatter = ax.scatter(coords[:, 0], coords[:, 1], c=colour, cmap="viridis", vmax=vmax, s=12, linewidths=0, zorder=3)
    last = ends - 1
    ax.scatter(coords[last, 0], coords[last, 1], s=40, facecolors="none", edgecolors="black", linewidths=0.7, zorder=4, label="last recorded position")
    colorbar = ax.figure.colorbar(scatter, ax=ax, shrink=0.85, extend="max" if clip else "neither")
    colorbar.set_label(_COLOUR_UNITS.get(color_by, color_by.replace("_", " ")) + (" (top 5% at the top colour)" if clip else ""), fontsize=8)
    ticks = rows["tick"]
    _finish_axes(
        ax,
        title or f"Creators' niches in topic space, ticks {int(ticks.min())}–{int(ticks.max())} ({len(starts)} creators)",
        f"PC1 of creators' topic vectors ({ratio[0]:.0%} of variance), cosine units",
        f"PC2 ({ratio[1]:.0%} of variance), cosine units",
    )
    ax.legend(fontsize=7, loc="best", frameon=False)
    return ax


def save_run_extras(
    metrics: pd.DataFrame, agents: Mapping[str, pd.DataFrame] | None, directory: str | Path
) -> list[Path]:
    """The run directory's plots beyond the metric panels: `money_flows.png` always, and with agent
    panels `lorenz.png` (creators' exposure and income over the recorded ticks), `exposure_rank.png`
    and `topics.png`. Written atomically; returns the paths written."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure] = {"money_flows.png": money_flows(metrics).figure}
    creators = (agents or {}).get("creators")
    if creators is not None and not creators.empty:
        totals = creator_totals(creators)
        span = f"sampled creators, ticks {int(creators['tick'].min())}–{int(creators['tick'].max())} recorded"
        figures["lorenz.png"] = lorenz_curve(
            {"exposure": totals["exposure"], "income": totals["income"]}, title=f"Lorenz curves, {span}"
        ).figure
        figures["exposure_rank.png"] = rank_size(
            {"exposure": totals["exposure"]}, unit="exposures over the recorded ticks", title=f"Exposure rank–size, {span}"
        ).figure
        figures["topics.png"] = topic_trajectories(creators, users=(agents or {}).get("users")).figure
    written = []
    for name, fig in figures.items():
        path = directory / name
        atomic_write_bytes(path, figure_png(fig))
        written.append(path)
    return written
