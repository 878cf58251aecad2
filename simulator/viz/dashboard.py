"""The dashboard page: Mesa's SolaraViz over `AttentionMarket`, with the main knobs as controls.

Served by `attnsim viz` (`solara run simulator.viz.dashboard`), which passes the resolved
scenario's file in `ATTNSIM_VIZ_SCENARIO`. Controls change the constructor's scenario aliases
(simulator/model.py `ALIASES`); Reset builds a new model with them, Step and ▶ run ticks. Plots are
matplotlib figures rendered on the server, so the browser needs no charting library.
"""

from __future__ import annotations

import html
import os
from typing import Any

import numpy as np
import pandas as pd
import solara
from matplotlib.figure import Figure
from mesa.visualization import SolaraViz
from mesa.visualization.utils import update_counter

from simulator.agents import Creator
from simulator.metrics.table import METRICS
from simulator.model import AttentionMarket
from simulator.registry import registry
from simulator.scenario.schema import Scenario, load_scenario
from simulator.viz.assets import SCENARIO_ENV

LABELS = {metric.name: metric.label for metric in METRICS}
TOP_CREATORS = 8
TABLE_STYLE = "<style>.top-creators th, .top-creators td {padding: 1px 10px; text-align: right}</style>"


def controls(scenario: Scenario) -> dict[str, Any]:
    """SolaraViz model parameters: the knobs, starting at the scenario's values, plus the scenario itself."""
    alloc, circ = scenario.allocation, scenario.circulation

    def select(label: str, value: str, values: list[str]) -> dict[str, Any]:
        return {"type": "Select", "label": label, "value": value, "values": values}

    def slider(label: str, value: float, low: float, high: float, step: float, kind: str = "SliderFloat") -> dict[str, Any]:
        return {"type": kind, "label": label, "value": value, "min": low, "max": high, "step": step}

    return {
        "scenario": scenario,
        "allocation_rule": select("allocation rule", alloc.rule, registry("allocation").names()),
        "temperature": slider("temperature", alloc.temperature, 0.05, 5.0, 0.05),
        "payout_rule": select("payout rule", circ.creator_payout.rule, registry("payout").names()),
        "auction_format": select("auction format", circ.auction.format, registry("auction").names()),
        "ad_slots": slider("ad slots", alloc.ad_slots, 0, 8, 1, kind="SliderInt"),
        "take_rate": slider("platform take rate", circ.platform_take_rate, 0.0, 0.9, 0.05),
        "fairness_floor": slider("fairness floor", alloc.fairness_floor, 0.0, 0.05, 0.0025),
        "creator_cap": slider("creator cap", alloc.creator_cap, 0.05, 1.0, 0.05),
    }


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=(5.2, 3.0), layout="constrained")
    return figure, figure.subplots()


def _series_figure(model: AttentionMarket, title: str, columns: list[str], right: list[str] | None = None) -> Figure:
    figure, axes = _figure()
    frame = model.metrics
    for column in columns:
        axes.plot(frame["tick"], frame[column], label=LABELS[column])
    if right:
        twin = axes.twinx()
        for index, column in enumerate(right, start=len(columns)):
            twin.plot(frame["tick"], frame[column], color=f"C{index}", linestyle="--", label=LABELS[column])
        twin.legend(loc="upper right", fontsize=7)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("tick")
    axes.legend(loc="upper left", fontsize=7)
    return figure


@solara.component
def UtilityAndChurn(model: AttentionMarket) -> None:
    update_counter.get()
    solara.FigureMatplotlib(_series_figure(model, "user utility and churn", ["user_utility_mean", "user_welfare"], ["churned_users"]))


@solara.component
def ExposureLorenz(model: AttentionMarket) -> None:
    """Lorenz curve of creators' exposure (lifetime exposures of their goods in the catalogue now)."""
    update_counter.get()
    market = model.market
    goods = market.goods
    live = goods.live
    alive = np.flatnonzero(market.creators.alive[: market.creators_born])
    exposure = np.bincount(goods.owner[live], weights=goods.exposures[live], minlength=market.creators_born)[alive]
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="equal exposure")
    if exposure.sum() > 0:
        shares = np.concatenate([[0.0], np.cumsum(np.sort(exposure)) / exposure.sum()])
        axes.plot(np.linspace(0, 1, len(shares)), shares, label="creators")
    gini = model.latest_metrics.get("exposure_gini_creators")
    axes.set_title("creator exposure, Lorenz curve" + (f" (Gini {gini:.2f} this tick)" if gini is not None else ""), fontsize=10)
    axes.set_xlabel("share of creators (least exposed first)")
    axes.set_ylabel("share of exposure")
    axes.legend(loc="upper left", fontsize=7)
    solara.FigureMatplotlib(figure)


@solara.component
def IncomeGini(model: AttentionMarket) -> None:
    update_counter.get()
    solara.FigureMatplotlib(_series_figure(model, "concentration", ["creator_income_gini", "exposure_gini_creators"]))


@solara.component
def RevenueFlows(model: AttentionMarket) -> None:
    update_counter.get()
    columns = ["platform_revenue", "ad_spend", "user_spend", "creator_payouts", "creator_sales"]
    solara.FigureMatplotlib(_series_figure(model, "revenue flows (minor units per tick)", columns))


@solara.component
def SupplyDiversity(model: AttentionMarket) -> None:
    update_counter.get()
    solara.FigureMatplotlib(_series_figure(model, "supply diversity", ["supply_diversity", "homogenization"], ["active_creators"]))


def top_creators(model: AttentionMarket, count: int = TOP_CREATORS) -> pd.DataFrame:
    """The most exposed creators now, read through the `Creator` agent views."""
    rows = [
        {"creator": c.key, "exposure": c.exposure, "wallet": c.wallet, "profit (smoothed)": round(c.profit_ema, 1),
         "quality": round(c.quality, 3), "live goods": c.live_goods}
        for c in model.agents_by_type[Creator]
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["creator", "exposure", "wallet", "profit (smoothed)", "quality", "live goods"])
    return frame.sort_values(["exposure", "creator"], ascending=[False, True]).head(count)


@solara.component
def MarketStatus(model: AttentionMarket) -> None:
    """The tick counter and the top creators."""
    update_counter.get()
    with solara.Column():
        done = "" if model.running else " (done)"
        solara.HTML(tag="div", unsafe_innerHTML=f"<b>tick {model.market.tick} of {model.config.ticks}</b>{done}", classes=["tick-counter"])
        alloc, circ = model.config.allocation, model.config.circulation
        solara.HTML(
            tag="div",
            unsafe_innerHTML=html.escape(
                f"{alloc.rule} allocation (temperature {alloc.temperature:g}, {alloc.ad_slots} ad slots), "
                f"{circ.creator_payout.rule} payout, {circ.auction.format} auction, take rate {circ.platform_take_rate:g}"
            ),
            classes=["market-rules"],
        )
        solara.HTML(tag="div", unsafe_innerHTML="<b>top creators by exposure</b>")
        table = top_creators(model).to_html(index=False, border=0, classes="top-creators")
        solara.HTML(tag="div", unsafe_innerHTML=TABLE_STYLE + table)


COMPONENTS = [MarketStatus, UtilityAndChurn, ExposureLorenz, IncomeGini, RevenueFlows, SupplyDiversity]


def page_for(scenario: Scenario) -> Any:
    """The SolaraViz page for `scenario`."""
    return SolaraViz(
        AttentionMarket(scenario),
        components=COMPONENTS,
        model_params=controls(scenario),
        name=f"attention-market: {scenario.name}",
        play_interval=200,
    )


# `solara run simulator.viz.dashboard` serves the module's `page`.
page = page_for(load_scenario(os.environ[SCENARIO_ENV]) if SCENARIO_ENV in os.environ else Scenario())
