"""Time-series figures of the headline metrics, with axis labels and units.

Everything here uses matplotlib's object API on the Agg canvas (no `pyplot`, no global backend
switch), so it is safe in scripts, worker processes and notebooks alike:

    from simulator import load_run, plots
    frame = load_run("runs/baseline-20250101-120000")
    fig = plots.panel_figure(frame, plots.PANELS["concentration"])
    fig.savefig("concentration.png")

    # several runs on the same axes: pass a mapping of label -> metrics frame
    fig = plots.panel_figure({"softmax": a, "top_k": b}, plots.PANELS["users"])

`PANELS` are the figures `attnsim run` writes into a run directory's `plots/`; `METRICS` gives
every metric column a readable label and its unit.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator


@dataclass(frozen=True)
class MetricInfo:
    """How to label one metric column: a short label and the unit of its values."""

    label: str
    unit: str


METRICS: dict[str, MetricInfo] = {
    "tick": MetricInfo("tick", "tick"),
    "active_users": MetricInfo("active users", "users"),
    "alive_users": MetricInfo("users not churned", "users"),
    "churned_users": MetricInfo("users leaving", "users per tick"),
    "attention_supplied": MetricInfo("attention supplied", "attention units per tick"),
    "attention_allocated": MetricInfo("attention allocated", "attention units per tick"),
    "consumptions": MetricInfo("consumptions", "events per tick"),
    "purchases": MetricInfo("purchases", "events per tick"),
    "ad_clicks": MetricInfo("ad clicks", "events per tick"),
    "user_utility_mean": MetricInfo("mean user utility", "utility per active user per tick"),
    "exposure_gini_creators": MetricInfo("exposure Gini (creators)", "Gini coefficient, 0–1"),
    "exposure_hhi_creators": MetricInfo("exposure HHI (creators)", "Herfindahl index, 0–1"),
    "top1pct_creator_exposure_share": MetricInfo("top 1% creators' exposure share", "share, 0–1"),
    "creator_income_gini": MetricInfo("creator income Gini", "Gini coefficient, 0–1"),
    "active_creators": MetricInfo("active creators", "creators"),
    "creator_entries": MetricInfo("creator entries", "creators per tick"),
    "creator_exits": MetricInfo("creator exits", "creators per tick"),
    "supply_diversity": MetricInfo("supply diversity", "1 − mean cosine similarity, 0–1"),
    "homogenization": MetricInfo("homogenization", "mean Jaccard similarity, 0–1"),
    "user_spend": MetricInfo("user spend", "money, minor units per tick"),
    "ad_spend": MetricInfo("ad spend", "money, minor units per tick"),
    "platform_revenue": MetricInfo("platform revenue", "money, minor units per tick"),
    "creator_payouts": MetricInfo("creator payouts", "money, minor units per tick"),
    "creator_sales": MetricInfo("creator sales", "money, minor units per tick"),
    "advertiser_roi": MetricInfo("advertiser ROI", "(value − paid) / paid"),
    "money_conservation_error": MetricInfo("money conservation error", "money, minor units"),
    "live_goods": MetricInfo("live goods", "goods"),
    "goods_published": MetricInfo("goods published", "goods per tick"),
    "user_income": MetricInfo("user income", "money, minor units per tick"),
    "production_costs": MetricInfo("production costs", "money, minor units per tick"),
    "advertiser_value": MetricInfo("advertiser value", "money, minor units per tick"),
    "ad_impressions": MetricInfo("ad impressions", "impressions per tick"),
    "ad_fill_rate": MetricInfo("ad fill rate", "share of ad slots filled, 0–1"),
    "ad_revenue_per_impression": MetricInfo("ad revenue per impression", "money, minor units per impression"),
    "advertiser_surplus": MetricInfo("advertiser surplus", "money, minor units per tick"),
    "ad_budget_spent_share": MetricInfo("ad budget spent", "share of tick budgets, 0–1"),
    "ad_free_deliveries": MetricInfo("ads delivered free", "impressions per tick"),
    "attention_rewards": MetricInfo("attention rewards", "money, minor units per tick"),
    "penalised_goods": MetricInfo("goods under the clickbait penalty", "goods"),
}


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
            AxisSpec(("user_utility_mean",)),
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


def metric_info(column: str) -> MetricInfo:
    """The label and unit of a metric column (the column name itself when unknown)."""
    return METRICS.get(column, MetricInfo(column.replace("_", " "), ""))


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
            label = metric_info(column).label
            if run_label is not None:
                label = f"{run_label}: {label}" if len(columns) > 1 else run_label
            ax.plot(ticks, frame[column].astype(float), label=label, marker="o" if few else None, markersize=3, linewidth=1.4)
            drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no ticks recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_title(title or ", ".join(metric_info(c).label for c in columns), fontsize=10, loc="left")
    ax.set_xlabel(metric_info("tick").label)
    ax.set_ylabel(ylabel or metric_info(columns[0]).unit, fontsize=8)
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
    from .rundir import atomic_write_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, png in render_panels(data, panels).items():
        path = directory / filename
        atomic_write_bytes(path, png)
        written.append(path)
    return written
