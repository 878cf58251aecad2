"""simulator.plots: every function draws on small frames, returns labelled axes, and the numbers
behind the pictures (Lorenz points, money flows, replication bands, PCA) are right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulator.figures import plots
from simulator.metrics import panels
from simulator.metrics.collect import gini
from simulator.metrics.table import METRIC_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics_frame(ticks: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({column: rng.integers(0, 1000, ticks) for column in METRIC_COLUMNS})
    frame["tick"] = np.arange(1, ticks + 1)
    frame["creator_sales"] = rng.integers(0, 500, ticks)
    frame["user_spend"] = frame["creator_sales"] + rng.integers(0, 200, ticks)
    frame["attention_rewards"] = 0
    frame["exposure_pay"] = 0  # off unless `circulation.exposure_pay` is set
    return frame


def sweep_frame(rules=("exposure", "equal"), replications: int = 3, ticks: int = 5) -> pd.DataFrame:
    rows = []
    for rule_index, rule in enumerate(rules):
        for replication in range(replications):
            for tick in range(1, ticks + 1):
                rows.append(
                    {
                        "circulation.creator_payout.rule": rule,
                        "replication": replication,
                        "tick": tick,
                        "user_utility_mean": rule_index + 0.1 * replication + 0.01 * tick,
                    }
                )
    return pd.DataFrame(rows)


def creators_panel(agents: int = 5, ticks: int = 4, dim: int = 6, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for tick in range(1, ticks + 1):
        for agent in range(agents):
            topic = rng.normal(size=dim)
            rows.append(
                {
                    "tick": tick,
                    "agent": agent,
                    "status": "active" if tick < ticks or agent else "exited",
                    "exposure": int(rng.integers(0, 50)),
                    "income": int(rng.integers(0, 500)),
                    "quality": float(rng.random()),
                    **{f"topic_{i}": v for i, v in enumerate(topic / np.linalg.norm(topic))},
                }
            )
    return pd.DataFrame(rows)


def assert_labelled(ax: Axes) -> None:
    assert isinstance(ax, Axes)
    assert ax.get_xlabel().strip(), "x axis has no label"
    assert ax.get_ylabel().strip(), "y axis has no label"
    assert ax.get_title(loc="left").strip() or ax.get_title().strip(), "no title"
    assert plots.figure_png(ax.figure).startswith(PNG_SIGNATURE)


# --- every function draws, with and without an Axes ----------------------------------------------


def test_replication_bands_draws_and_labels():
    ax = plots.replication_bands(sweep_frame(), "user_utility_mean", by="circulation.creator_payout.rule")
    assert_labelled(ax)
    assert "tick" in ax.get_xlabel()
    assert ax.get_ylabel() == plots.metric_unit("user_utility_mean")
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 2  # a line and a band per rule
    assert "95% CI" in ax.get_title(loc="left")


@pytest.mark.parametrize("band", plots.BANDS)
def test_replication_bands_every_band_on_given_axes(band: str):
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    out = plots.replication_bands(sweep_frame(), "user_utility_mean", by="circulation.creator_payout.rule", band=band, ax=ax)
    assert out is ax
    assert_labelled(ax)


def test_band_frame_numbers():
    frame = sweep_frame(rules=("a",), replications=3, ticks=1)  # values 0.01, 0.11, 0.21 at tick 1
    values = np.array([0.01, 0.11, 0.21])
    ci = plots.band_frame(frame, "user_utility_mean", band="ci").iloc[0]
    half = 4.302653 * values.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert ci["mean"] == pytest.approx(values.mean())
    assert (ci["low"], ci["high"]) == (pytest.approx(values.mean() - half), pytest.approx(values.mean() + half))
    assert ci["runs"] == 3
    minmax = plots.band_frame(frame, "user_utility_mean", band="minmax").iloc[0]
    assert (minmax["low"], minmax["high"]) == (pytest.approx(0.01), pytest.approx(0.21))
    single = plots.band_frame(frame.iloc[:1], "user_utility_mean").iloc[0]
    assert single["low"] == single["high"] == single["mean"]
    with pytest.raises(ValueError):
        plots.band_frame(frame, "user_utility_mean", band="nope")


def test_band_level_sets_the_interval():
    frame = sweep_frame(rules=("a",), replications=3, ticks=1)
    values = np.array([0.01, 0.11, 0.21])
    ci90 = plots.band_frame(frame, "user_utility_mean", band="ci", level=0.90).iloc[0]
    half = 2.920 * values.std(ddof=1) / np.sqrt(3)  # t(0.95, 2 df)
    assert ci90["high"] - ci90["mean"] == pytest.approx(half, rel=1e-3)


def test_lorenz_curve_draws_and_labels():
    ax = plots.lorenz_curve({"exposure": [1, 2, 3, 10], "income": [0, 0, 5, 5]})
    assert_labelled(ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "equality"
    assert any("Gini 0.50" in label for label in labels)  # [0, 0, 5, 5]


def test_lorenz_of_equal_values_is_the_diagonal():
    x, y = plots.lorenz_points([7, 7, 7, 7, 7])
    np.testing.assert_allclose(x, y)
    assert x[0] == 0 and x[-1] == 1
    x, y = plots.lorenz_points([0, 0, 0])  # nothing to share: equality, as metrics.gini says
    np.testing.assert_allclose(x, y)


def test_lorenz_area_is_the_gini():
    values = np.array([0, 1, 1, 3, 10, 25], dtype=float)
    x, y = plots.lorenz_points(values)
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    assert 1 - 2 * area == pytest.approx(gini(values))
    x, y = plots.lorenz_points([0, 0, 0, 9])  # one takes all
    assert y[-2] == 0 and y[-1] == 1


def test_rank_size_draws_on_log_axes_and_counts_zeros():
    ax = plots.rank_size({"exposure": [0, 5, 1, 100, 20]})
    assert_labelled(ax)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), [100, 20, 5, 1])
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    assert "1 zero not shown" in line.get_label()
    assert_labelled(plots.rank_size([0, 0]))  # nothing positive: still a labelled, empty plot


def test_money_flows_sum_to_the_right_totals():
    metrics = metrics_frame()
    flows = plots.money_flow_frame(metrics)
    assert list(flows.columns) == ["tick", "creator_sales", "platform_take", "ad_spend", "creator_payouts"]
    np.testing.assert_array_equal(flows["creator_sales"] + flows["platform_take"], metrics["user_spend"])
    total = flows.drop(columns="tick").sum(axis=1)
    np.testing.assert_array_equal(total, metrics["user_spend"] + metrics["ad_spend"] + metrics["creator_payouts"])

    ax = plots.money_flows(metrics)
    assert_labelled(ax)
    assert "minor units" in ax.get_ylabel()
    stack = ax.collections
    assert len(stack) == 4
    top = stack[-1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(float(total.max()))


def test_money_flows_average_replications_and_keep_attention_rewards():
    one, two = metrics_frame(seed=1), metrics_frame(seed=2)
    two["attention_rewards"] = 10
    flows = plots.money_flow_frame(pd.concat([one, two]))
    assert len(flows) == len(one)
    np.testing.assert_allclose(flows["ad_spend"], (one["ad_spend"] + two["ad_spend"]) / 2)
    assert "attention_rewards" in flows.columns and (flows["attention_rewards"] == 5).all()


def test_pca_2d_recovers_a_plane_and_is_deterministic():
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(50, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0].T  # (2, 8) orthonormal rows
    vectors = plane @ basis + 0.5
    coords, ratio, components, mean = plots.pca_2d(vectors)
    assert ratio.sum() == pytest.approx(1.0)
    assert ratio[0] > ratio[1]
    np.testing.assert_allclose((vectors - mean) @ components.T, coords)
    # the data lie in a plane, so projecting on its two components keeps every distance
    distance = lambda points: np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)  # noqa: E731
    np.testing.assert_allclose(distance(coords), distance(vectors), atol=1e-8)
    again = plots.pca_2d(vectors)[0]
    np.testing.assert_array_equal(coords, again)


@pytest.mark.parametrize("color_by", ["tick", "income", "quality"])
def test_topic_trajectories_draws_and_labels(color_by: str):
    creators = creators_panel()
    ax = plots.topic_trajectories(creators, color_by=color_by)
    assert_labelled(ax)
    assert ax.get_xlabel().startswith("PC1") and "variance" in ax.get_xlabel()
    assert len(ax.figure.axes) == 2  # the plot and its colour bar
    assert ax.figure.axes[1].get_ylabel()  # the colour bar is labelled


def test_topic_trajectories_leave_exited_rows_out_and_project_users():
    creators = creators_panel(agents=3, ticks=3)
    users = pd.DataFrame(
        [{"tick": 3, "agent": i, "status": "active", **{f"interest_{k}": float(k == i) for k in range(6)}} for i in range(4)]
    )
    ax = plots.topic_trajectories(creators, users=users)
    points = ax.collections[-2].get_offsets()  # the creators' scatter (last: the end rings)
    assert len(points) == len(creators[creators["status"] != "exited"])
    assert len(ax.collections[0].get_offsets()) == 4  # the users


def test_empty_inputs_still_give_labelled_axes():
    empty_panel = panels.empty_frame(panels.CREATORS, 4)
    assert_labelled(plots.topic_trajectories(empty_panel))
    assert_labelled(plots.money_flows(metrics_frame().iloc[:0]))
    assert_labelled(plots.lorenz_curve([]))


def test_save_run_extras_writes_pngs(tmp_path):
    creators = creators_panel()
    written = plots.save_run_extras(metrics_frame(), {"creators": creators}, tmp_path)
    names = sorted(path.name for path in written)
    assert names == ["exposure_rank.png", "lorenz.png", "money_flows.png", "topics.png"]
    for path in written:
        assert path.read_bytes().startswith(PNG_SIGNATURE)
    only = plots.save_run_extras(metrics_frame(), None, tmp_path / "none")
    assert [path.name for path in only] == ["money_flows.png"]


def test_library_code_leaves_pyplot_alone():
    import sys

    plots.lorenz_curve([1, 2, 3])
    plots.topic_trajectories(creators_panel())
    if "matplotlib.pyplot" in sys.modules:  # another test may have imported it; then no figure is open there
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
