"""summary.json: a run's headline figures, from its metrics frame and the metric table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from simulator.metrics.table import TOTALLED


def summarize(metrics: pd.DataFrame, fraction: float) -> dict[str, Any]:
    """Headline figures: each metric's mean over the last `fraction` of ticks (under the metric's
    own name, NaN ticks skipped), and run totals of the metric table's totalled flows (`<column>_total`)."""
    summary: dict[str, Any] = {"ticks": int(len(metrics))}
    if metrics.empty:
        return summary
    tail = metrics.iloc[-max(1, math.ceil(fraction * len(metrics))) :]
    for column in metrics.columns:
        if column == "tick":
            continue
        values = tail[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[column] = float(finite.mean()) if len(finite) else None
    for column in TOTALLED:
        summary[f"{column}_total"] = int(metrics[column].sum())
    spend = summary["ad_spend_total"]
    summary["advertiser_roi_overall"] = (summary["advertiser_value_total"] - spend) / spend if spend else None
    summary["final_active_creators"] = int(metrics["active_creators"].iloc[-1])
    summary["final_alive_users"] = int(metrics["alive_users"].iloc[-1])
    summary["max_abs_money_conservation_error"] = int(metrics["money_conservation_error"].abs().max())
    return summary
