"""The speed benchmarks run and report their baselines and ratios (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import simulator.model  # noqa: F401 - registers the built-in rules
from simulator.rules.allocation.base import ALLOCATION_RULES

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
    # The stage table, the cells the floor was sized to, the thread settings and the machine's load.
    stages = simulator["stages_seconds"]
    assert {"acquire", "allocate", "consume", "circulate", "collect", "check_tick", "scores", "select"} <= set(stages)
    assert stages["content_allocation"] + stages["ad_auctions"] == pytest.approx(stages["allocate"], rel=0.05, abs=1e-4)
    users, goods = simulator["scored_users_x_goods"][-1]
    assert users == simulator["active_users_last_tick"] and goods > 0
    assert result["threads"]["blas"] >= 1 and result["threads"]["numba"] >= 1
    assert result["load_average_start"] and result["load_average_end"]


def test_honest_floor_is_chunked_into_one_reused_buffer():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_tick import HonestFloor
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    floor = HonestFloor(dim=8, block_elements=4_096)
    seconds, extrapolated = floor.seconds(1_000, 100)
    buffer = floor.buffer
    assert seconds > 0 and extrapolated is None
    assert buffer.size == 4_000  # 40 users a block (block_rows) × 100 goods, not 1 000 × 100
    floor.seconds(900, 100)
    assert floor.buffer is buffer  # reused, not reallocated per measurement


def test_rule_benchmark_reports_every_rule_against_attention_softmax():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_rules.py", "--size", "1500x150x8", "--ticks", "1", "--warmup", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert set(result["tick_seconds"]) == set(ALLOCATION_RULES.names())
    assert result["over_attention_softmax"]["attention_softmax"] == 1.0
    assert result["slowest"]["ratio"] == max(result["over_attention_softmax"].values())


@pytest.mark.slow
def test_sweep_benchmark_compares_two_workers_with_one():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_sweep.py", "--runs", "2", "--users", "300", "--goods", "60", "--ticks", "2", "--passes", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["two_over_one_worker_throughput"] > 0 and result["worker_threads"] == "1 (default)"


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
