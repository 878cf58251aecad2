"""Differential privacy of what the platform learns from (`privacy`, docs/privacy.md).

The platform's learning inputs are what the consumption stage reports to the rules
(`feedback.record_outcomes`): the `learned` rule's interaction logs, the `popularity` window's
consumption counts, and the goods' engagement counters (read by the engagement modifier and the
clickbait penalty). A mechanism transforms what is recorded, never the rules:

- `randomized_response` (local): each logged outcome (consumed or not, for each exposure) is
  reported truthfully with probability p = e^ε/(1 + e^ε) and flipped otherwise. For any two
  outcomes the probability of any report differs by at most e^ε: ε-DP per logged interaction,
  before the platform stores anything. The logs, the window and the counters all take the
  reports.
- `laplace` / `gaussian` (central): the platform sees true outcomes but releases each live
  good's consumption count of the batch with noise (Laplace of scale 1/ε, or Gaussian of
  σ = √(2 ln(1.25/δ))/ε, the classic bound for ε < 1), rounded and floored at 0 (post-
  processing keeps the guarantee); one interaction changes one count by 1, so it is ε-DP
  ((ε, δ)-DP) per interaction and per released tick. The window and the counters take the
  noisy counts; the learned rule's logs are individual records, not counts, and are kept as
  observed: use `randomized_response` to protect them.

A user who consumes c goods in a tick is protected with ε·c (group privacy, per user per tick).
ε = ∞ is no mechanism at all: nothing is drawn and the run equals the non-private one byte for
byte. The noise has its own generator, seeded from the scenario's seed, so a private run and the
non-private run of the same seed share every other random number (paired comparisons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from simulator.market.state import MarketState
from simulator.scenario.schema import PrivacyConfig

PRIVACY_STREAM = 0x50524956  # "PRIV": the noise generator's seed is (scenario seed, this)


def keep_probability(epsilon: float) -> float:
    """Randomised response: the probability of reporting the truth, e^ε/(1 + e^ε)."""
    return 1.0 if math.isinf(epsilon) else 1.0 / (1.0 + math.exp(-epsilon))


def randomized_response(bits: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Each bit kept with probability e^ε/(1 + e^ε), flipped otherwise."""
    return bits ^ (rng.random(bits.shape) >= keep_probability(epsilon))


def gaussian_sigma(epsilon: float, delta: float) -> float:
    """σ of the Gaussian mechanism for sensitivity 1: √(2 ln(1.25/δ))/ε."""
    return math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


@dataclass(frozen=True)
class Report:
    """What the platform records from a batch of interactions."""

    consumed: np.ndarray  # (users, K) bool: the outcomes its logs store
    counts: np.ndarray  # per catalogue row: the consumption counts it records


def _central(noise: Callable[[PrivacyConfig, np.random.Generator, int], np.ndarray]):
    def report(state: MarketState, exposures: np.ndarray, shown: np.ndarray, consumed: np.ndarray, cfg: PrivacyConfig, rng: np.random.Generator) -> Report:
        counts = np.bincount(exposures[consumed], minlength=state.goods.capacity())
        live = np.flatnonzero(state.goods.live)
        noisy = counts.copy()
        noisy[live] = np.maximum(np.rint(counts[live] + noise(cfg, rng, len(live))), 0).astype(np.int64)
        return Report(consumed, noisy)

    return report


def _local(state: MarketState, exposures: np.ndarray, shown: np.ndarray, consumed: np.ndarray, cfg: PrivacyConfig, rng: np.random.Generator) -> Report:
    reported = randomized_response(consumed, cfg.epsilon, rng) & shown
    return Report(reported, np.bincount(exposures[reported], minlength=state.goods.capacity()))


MECHANISMS = {
    "randomized_response": _local,
    "laplace": _central(lambda cfg, rng, n: rng.laplace(0.0, 1.0 / cfg.epsilon, size=n)),
    "gaussian": _central(lambda cfg, rng, n: rng.normal(0.0, gaussian_sigma(cfg.epsilon, cfg.delta), size=n)),
}


def is_private(cfg: PrivacyConfig) -> bool:
    return cfg.mechanism != "none" and not math.isinf(cfg.epsilon)


def private_report(
    state: MarketState, exposures: np.ndarray, shown: np.ndarray, consumed: np.ndarray, cfg: PrivacyConfig, seed: int
) -> Report | None:
    """The batch as the mechanism lets the platform record it; None when there is no mechanism
    (ε = ∞ or `none`). The goods' engagement counters, already holding the true outcomes, are
    moved to the reported ones (floored at 0)."""
    if not is_private(cfg):
        return None
    if state.privacy_rng is None:
        state.privacy_rng = np.random.default_rng([seed, PRIVACY_STREAM])
    report = MECHANISMS[cfg.mechanism](state, exposures, shown, consumed, cfg, state.privacy_rng)
    true = np.bincount(exposures[consumed], minlength=state.goods.capacity())
    goods = state.goods
    goods.consumptions[:] = np.maximum(goods.consumptions + report.counts - true, 0)
    return report
