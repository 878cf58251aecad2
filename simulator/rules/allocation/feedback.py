"""The allocation rules beyond plain query-key scoring, and the modifiers that compose with any rule.

`simulator/allocator.py` runs every rule the same way (scores → masks → selection) and names
them in its `RULES` registry; these modules hold the rules that keep state across ticks
(`popularity`, `learned`), the Shapley mediator with its own selection (`shapley`), and the
fairness floor, creator cap, engagement weighting and clickbait penalty (`modifiers`).
"""

from __future__ import annotations

import numpy as np

from simulator.market.state import MarketState
from simulator.rules.allocation.learned import record_interactions
from simulator.rules.allocation.popularity import record_consumptions, record_counts
from simulator.rules.allocation.privacy import private_report
from simulator.scenario.schema import Scenario


def record_outcomes(
    state: MarketState, rows: np.ndarray, exposures: np.ndarray, shown: np.ndarray, consumed: np.ndarray, scenario: Scenario
) -> None:
    """What the consumption stage tells the rules: the popularity window and the learned model's
    logs, through the privacy mechanism when there is one (`privacy`, see privacy.py)."""
    report = private_report(state, exposures, shown, consumed, scenario.privacy, scenario.seed)
    if report is None:
        record_consumptions(state, exposures[consumed], scenario.allocation.popularity_window)
        record_interactions(state, rows, exposures, shown, consumed, scenario.allocation.learned.log_ticks)
        return
    record_counts(state, report.counts, scenario.allocation.popularity_window)
    record_interactions(state, rows, exposures, shown, report.consumed, scenario.allocation.learned.log_ticks)
