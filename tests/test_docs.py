"""The reference pages stay in step with the code they describe."""

from pathlib import Path

from simulator.metrics.table import METRIC_COLUMNS
from simulator.scenario.schema import schema_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_scenario_reference_matches_schema():
    assert (DOCS / "scenario.md").read_text() == schema_reference(), (
        "docs/scenario.md is stale: regenerate with `python -m simulator.scenario > docs/scenario.md`"
    )


def test_every_metric_column_is_documented():
    page = (DOCS / "metrics.md").read_text()
    missing = [column for column in METRIC_COLUMNS if f"`{column}`" not in page]
    assert not missing, f"docs/metrics.md does not describe {missing}"
