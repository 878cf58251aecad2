"""What the platform records after consumption: the market's popularity window and the rule's own feedback.

The model calls `record_outcomes` once per tick, after the consumption stage: recent consumption
counts are a market statistic (the `popularity` rule and the candidate mode's popular goods read
them), and the allocation rule observes the tick's exposures and outcomes (`observe`; the
`learned` rule logs them).
"""

from __future__ import annotations

from simulator.market.outcomes import Allocation, Consumption
from simulator.market.state import MarketState
from simulator.rules.allocation.base import AllocationRule, Feedback
from simulator.rules.allocation.popularity import record_consumptions
from simulator.scenario.schema import Scenario


def record_outcomes(
    state: MarketState, rule: AllocationRule, allocation: Allocation, consumption: Consumption, scenario: Scenario
) -> None:
    """Record a tick's consumptions in the popularity window and show the rule what users did."""
    consumed = consumption.consumed & (allocation.exposures >= 0)
    record_consumptions(state, allocation.exposures[consumed], scenario.allocation.popularity_window)
    rule.observe(state, Feedback(allocation.users, allocation.exposures, consumed))
