"""The reference pages stay in step with the code they describe."""

from pathlib import Path

from simulator.metrics.table import METRIC_COLUMNS, reference
from simulator.scenario.schema import schema_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_scenario_reference_matches_schema():
    assert (DOCS / "scenario.md").read_text() == schema_reference(), (
        "docs/scenario.md is stale: regenerate with `python -m simulator.scenario.schema > docs/scenario.md`"
    )


def test_metrics_reference_matches_the_metric_table():
    assert (DOCS / "metrics.md").read_text() == reference(), (
        "docs/metrics.md is stale: regenerate with `python -m simulator.metrics > docs/metrics.md`"
    )
    assert all(f"`{column}`" in reference() for column in METRIC_COLUMNS)
