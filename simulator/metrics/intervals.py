"""Confidence intervals of a mean across replications that stay inside the metric's range.

A Student t interval `mean ± t·sd/√n` ignores that a Gini lies in [0, 1] and a count is never
negative: with three replications near a bound it puts the interval (and the whiskers and bands
drawn from it) outside what the metric can be. The interval is therefore built on a scale where
the range is the whole line and mapped back (the delta method: the standard error of the mean is
carried to the transformed scale by the transform's derivative at the mean):

- metrics bounded on both sides (shares, Gini, HHI, diversity; `bounds=(low, high)` in the metric
  table): the logit of `(x − low) / (high − low)`;
- metrics bounded below only (counts, money flows, totals): the log of `x − low`;
- unbounded metrics (utility, ROI, surplus): the Student t interval itself.

Far from a bound the three agree to first order; near one the interval becomes asymmetric and
never crosses it. A bootstrap (even BCa) is not used: with the handful of replications a sweep
has, resampling three values gives intervals that are far too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from scipy.stats import t as student

Bounds = tuple[float | None, float | None]
Method = Literal["student t", "log", "logit"]


def interval_method(bounds: Bounds) -> Method:
    """Which interval a metric with these bounds gets (see the module doc)."""
    low, high = bounds
    if low is not None and high is not None:
        return "logit"
    if low is not None or high is not None:
        return "log"
    return "student t"


def bounded_interval(mean: Any, se: Any, q: Any, bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """The delta-method interval (ends) of means `mean` with standard errors `se` and t quantiles
    `q` (arrays broadcast), on the scale `interval_method(bounds)` names; a mean on a bound (every
    run there) gives the point itself."""
    mean, half_t = np.asarray(mean, dtype=np.float64), np.asarray(q, dtype=np.float64) * np.asarray(se, dtype=np.float64)
    low, high = bounds
    method = interval_method(bounds)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if method == "logit":
            assert low is not None and high is not None
            span = high - low
            p = np.clip((mean - low) / span, 0.0, 1.0)
            inside = (p > 0.0) & (p < 1.0)
            centre = np.log(p / (1 - p))
            half = half_t / span / (p * (1 - p))
            lo = np.where(inside, low + span / (1 + np.exp(-(centre - half))), mean)
            hi = np.where(inside, low + span / (1 + np.exp(-(centre + half))), mean)
            return lo, hi
        if method == "log":
            sign, origin = (1.0, low) if low is not None else (-1.0, high)
            assert origin is not None
            distance = sign * (mean - origin)
            inside = distance > 0.0
            half = half_t / distance
            near = np.where(inside, origin + sign * distance * np.exp(-half), mean)
            far = np.where(inside, origin + sign * distance * np.exp(half), mean)
            return (near, far) if sign > 0 else (far, near)
    return mean - half_t, mean + half_t


def mean_interval(values: Iterable[Any], level: float = 0.95, bounds: Bounds = (None, None)) -> dict[str, Any]:
    """n, mean, sd and the `level` interval of the mean of the finite values, inside `bounds`
    (NaN interval when n < 2); `method` names the interval (`interval_method`)."""
    x = np.array([float(v) for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    nan = float("nan")
    method = interval_method(bounds)
    if n == 0:
        return {"n": 0, "mean": nan, "sd": nan, "ci_low": nan, "ci_high": nan, "half_width": nan, "method": method}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": nan, "ci_low": nan, "ci_high": nan, "half_width": nan, "method": method}
    sd = float(x.std(ddof=1))
    q = float(student.ppf((1 + level) / 2, n - 1))
    ends = bounded_interval(mean, sd / math.sqrt(n), q, bounds)
    low, high = float(ends[0]), float(ends[1])
    return {"n": n, "mean": mean, "sd": sd, "ci_low": low, "ci_high": high, "half_width": (high - low) / 2, "method": method}
