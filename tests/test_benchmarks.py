"""The speed benchmarks run and report their baselines and ratios (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tick_benchmark_measures_the_baselines_and_reports_ratios():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_tick.py", "--preset", "smoke", "--ticks", "1", "--warmup", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["dense_floor"]["seconds"] > 0 and result["mesa_agents"]["seconds"] > 0
    simulator = result["simulator"]
    assert 0 < simulator["content_allocation_seconds"] <= simulator["allocation_seconds"] <= simulator["tick_seconds"]
    assert set(result["ratios"]) >= {"allocation_over_dense_floor", "tick_over_dense_floor", "mesa_agents_over_allocation"}
    assert result["peak_rss_gb"] > 0


def test_agent_views_benchmark_compares_the_untouched_tick_with_the_tick_before_views():
    done = subprocess.run(
        [sys.executable, "benchmarks/agent_views.py", "--ticks", "3", "--set", "population.users.count=500",
         "--set", "population.goods.initial=100", "--set", "population.creators.count=20"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["median_tick_seconds"]) == {"before", "untouched", "inspected"}
    assert result["untouched_over_before"] > 0 and result["inspected_over_before"] > 0
    assert result["agents_at_end"] > 500
