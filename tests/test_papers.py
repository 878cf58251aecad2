"""The gallery of published results (scenarios/papers/, docs/papers/) runs at a reduced size.

Each gallery scenario's sweep runs here at its CI size (`CI_SET`, the `--set` values its doc page
gives for the reduced run), and the comparison its page reports is drawn from it: every run
complete with money conserved exactly, every arm paired with the reference by seed, one group per
grid point with every replication. These are the direction-free invariants; the directions and
sizes are the full-size figures on each doc page, reproduced by the commands there. The two
metrics the gallery added (`niche_coverage`, `bid_multiplier_mean`) are pinned below.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simulator
from simulator.analysis.comparison import comparison
from simulator.market.populations import unit_rows
from simulator.metrics.collect import diversity, niche_coverage
from simulator.metrics.intervals import mean_interval
from simulator.metrics.table import BY_NAME
from simulator.runs.sweep import run_sweep
from simulator.scenario.schema import load_scenario
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "scenarios" / "papers"
DOCS = ROOT / "docs" / "papers"

# The reduced size of each gallery scenario (the `--set` values of its doc page's CI command),
# and the reference group its page compares against.
CI_SET: dict[str, dict[str, Any]] = {
    "bpt2018_shapley.yaml": {
        "ticks": 8, "population.users.count": 300, "population.creators.count": 12,
        "population.goods.initial": 80, "sweep.replications": 2,
    },
    "auctiongym_formats.yaml": {
        "ticks": 12, "population.users.count": 300, "population.creators.count": 10,
        "population.goods.initial": 60, "sweep.replications": 2,
    },
    "yao2023_backward.yaml": {
        "ticks": 8, "population.users.count": 300, "population.creators.count": 12,
        "population.goods.initial": 80, "sweep.replications": 2,
    },
}
REFERENCE: dict[str, str] = {
    "bpt2018_shapley.yaml": "allocation.rule=top_k, adaptation.rule=static",
    "auctiongym_formats.yaml": "bidding=truthful, format=second_price",
    "yao2023_backward.yaml": "rule=exposure",
}
DOC_PAGE: dict[str, str] = {
    "bpt2018_shapley.yaml": "bpt2018.md",
    "auctiongym_formats.yaml": "auctiongym.md",
    "yao2023_backward.yaml": "yao2023.md",
}


def _papers() -> list[str]:
    return sorted(path.name for path in PAPERS.glob("*.yaml"))


def test_every_gallery_scenario_has_a_ci_size_a_reference_and_a_page():
    assert set(_papers()) == set(CI_SET) == set(REFERENCE) == set(DOC_PAGE)
    index = (DOCS / "README.md").read_text()
    for name in _papers():
        page = (DOCS / DOC_PAGE[name]).read_text()
        assert f"attnsim sweep scenarios/papers/{name}" in page, f"{DOC_PAGE[name]} lacks the full-size command"
        assert f'--reference "{REFERENCE[name]}"' in page, f"{DOC_PAGE[name]} lacks the compare command"
        for key, value in CI_SET[name].items():
            assert re.search(rf"--set {re.escape(key)}={value}\b", page), f"{DOC_PAGE[name]}: CI size {key}={value} not on the page"
        assert DOC_PAGE[name] in index


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CI_SET))
def test_gallery_sweep_at_ci_size(name: str, tmp_path: Path):
    path = PAPERS / name
    scenario = load_scenario(path, CI_SET[name])
    result = run_sweep(path, out=tmp_path / "sweep", workers=1, overrides=CI_SET[name])
    assert result.status == "complete" and not result.failed
    replications = scenario.sweep.replications
    points = math.prod(len(values) for values in scenario.sweep.grid.values())
    assert len(result.ran) == points * replications

    runs = simulator.load_sweep(tmp_path / "sweep")
    assert (runs["money_conservation_error"] == 0).all()
    assert runs.groupby("run_id")["tick"].max().eq(scenario.ticks).all()

    found = comparison([tmp_path / "sweep"], reference=REFERENCE[name])
    assert found.paired and found.reference == REFERENCE[name]
    assert len(found.groups) == points
    table = found.table
    assert (table.groupby("group")["n"].max() == replications).all()
    differences = found.differences
    assert set(differences["test"]) == {"paired t"}
    assert set(differences["group"]) == set(found.groups) - {REFERENCE[name]}
    # Every defined metric pairs every replication (an undefined one, e.g. the ad ROI of a run
    # without advertisers, has no runs in any group).
    undefined = set(table.loc[table["n"] == 0, "metric"])
    assert (differences.loc[~differences["metric"].isin(undefined), "n"] == replications).all()
    assert set(differences.loc[differences["n"] == 0, "metric"]) <= undefined


def test_niche_coverage_is_one_with_a_creator_on_every_sampled_interest():
    market = simulator.AttentionMarket(tiny({"metrics.homogenization_pairs": 5})).market
    users = np.unique(market.homogenization.pairs)
    born = market.creators_born
    assert 0 < len(users) <= born
    assert -1.0 <= niche_coverage(market) < 1.0
    market.creators.topic[: len(users)] = market.users.interest[users]
    market.creators.alive[: len(users)] = True
    assert niche_coverage(market) == pytest.approx(1.0, abs=1e-5)
    # Coverage is the nearest niche's: one creator's niche opposite to every interest lowers it.
    market.creators.topic[:born] = unit_rows(-market.users.interest[users].sum(axis=0, keepdims=True).repeat(born, axis=0))
    assert niche_coverage(market) < 0.5


def test_bid_multiplier_mean_follows_the_bidding_strategy():
    shaded = simulator.run(tiny({"ticks": 3, "population.advertisers.bidding": "shaded", "population.advertisers.shading": 0.6}))
    assert shaded.metrics["bid_multiplier_mean"].tolist() == pytest.approx([0.6] * 3)
    truthful = simulator.run(tiny({"ticks": 3}))
    assert truthful.metrics["bid_multiplier_mean"].tolist() == [1.0] * 3
    learning = simulator.run(tiny({"ticks": 3, "population.advertisers.bidding": "learning", "population.advertisers.learning_arms": 4}))
    assert set(np.round(learning.metrics["bid_multiplier_mean"] * 4 * 4)) <= set(range(4, 17))  # means of 4 arms k/4
    without = simulator.run(tiny({"ticks": 2, "population.advertisers.count": 0}))
    assert without.metrics["bid_multiplier_mean"].isna().all()


def test_supply_diversity_of_niches_pointing_apart_stays_inside_its_bounds_with_an_honest_interval():
    """Random niches (bpt2018's `niches: random`) have a mean pairwise cosine just below 0, so supply
    diversity exceeds 1: the metric's bounds must allow it, or its interval collapses to a point."""
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert diversity(opposite) == pytest.approx(2.0)
    low, high = BY_NAME["supply_diversity"].bounds
    assert low <= diversity(opposite) <= high
    interval = mean_interval([1.002, 1.004, 0.998], bounds=BY_NAME["supply_diversity"].bounds)
    assert interval["ci_low"] < 0.999 and interval["ci_high"] > 1.004
