"""Creator payout rules: how the payout pool is divided among creators each tick.

A rule returns a non-negative weight per creator row; the ledger's exact largest-remainder
split turns weights into whole minor units that sum to the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .state import MarketState

if TYPE_CHECKING:
    from .stages.allocation import Allocation
    from .stages.consumption import Consumption


def payout_weights(
    rule: str, state: MarketState, allocation: Allocation, consumption: Consumption, exposure: np.ndarray
) -> np.ndarray:
    """Weights per creator row (length `state.creators_born`) under payout `rule`."""
    if rule == "exposure":
        return exposure
    raise ValueError(f"unknown payout rule {rule!r}")
