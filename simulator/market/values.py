"""What goods and ads are worth to users: the value functions stages, rules and creators' models share."""

from __future__ import annotations

import numpy as np
from numba import njit

from simulator.market.state import FLOAT
from simulator.scenario.schema import Scenario


def expected_value(
    interest: np.ndarray, keys: np.ndarray, quality: np.ndarray, sharpness: float, out: np.ndarray | None = None
) -> np.ndarray:
    """A user's value of a good at full attention: quality × exp(sharpness·(cos − 1)), in [0, 1]."""
    cos = np.matmul(interest, keys.T, out=out)
    cos -= 1.0
    cos *= FLOAT(sharpness)
    np.exp(cos, out=cos)
    cos *= quality[None, :]
    return cos


def match(vectors: np.ndarray, targeting: np.ndarray) -> np.ndarray:
    """How well each advertiser's targeting fits each user, in [0, 1]."""
    return ((1.0 + vectors @ targeting.T) / 2.0) ** 2


@njit(cache=True, inline="always")
def matched_click_rate(product, click_rate):
    """`click_rate * match(...)` for one user and advertiser from their float32 dot product, in
    compiled passes: float32 steps in numpy's order, widened to float64 as the auctions read it."""
    fit = (np.float32(1.0) + product) / np.float32(2.0)
    return np.float64(np.float32(click_rate) * (fit * fit))


def position_click_factors(scenario: Scenario) -> np.ndarray:
    return scenario.allocation.ad_position_decay ** np.arange(scenario.allocation.ad_slots, dtype=np.float64)
