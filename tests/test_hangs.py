"""No input hangs the run: a tiny temperature used to make the scores NaN and the compiled
sampler spin forever, deaf to signals. Every case runs in a subprocess under a timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import TINY_YAML

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_a_temperature_too_small_to_mean_anything_is_refused_at_validation(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_YAML.format(ticks=10))
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "run", str(scenario), "--set", "allocation.temperature=1.0e-39", "--ticks", "10", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--set:1:" in result.stderr and "allocation.temperature" in result.stderr and "greater than or equal to 0.000001" in result.stderr


def test_the_sampler_refuses_non_finite_rows_instead_of_spinning():
    result = run_python(
        """
        import numpy as np
        from simulator.market.kernels import NonFiniteScores, draw_without_replacement
        for bad in (np.nan, np.inf):
            scores = np.zeros((3, 40), dtype=np.float32)
            scores[1, 5] = bad
            out = np.full((3, 4), -1, dtype=np.int64)
            try:
                draw_without_replacement(scores, np.full(3, 4, dtype=np.int64), np.arange(3, dtype=np.uint64), out)
            except NonFiniteScores as exc:
                assert exc.rows.tolist() == [1], exc.rows
            else:
                raise SystemExit("no error for a row holding " + str(bad))
        scores = np.full((2, 10), -np.inf, dtype=np.float32)  # -inf is a masked column, not an error
        scores[0, 3] = 0.0
        out = np.full((2, 2), -1, dtype=np.int64)
        draw_without_replacement(scores, np.full(2, 2, dtype=np.int64), np.arange(2, dtype=np.uint64), out)
        assert out.tolist() == [[3, -1], [-1, -1]], out
        print("ok")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_non_finite_scores_in_a_run_are_a_failed_invariant_with_the_tick():
    """Past the schema (a rule built by hand), NaN scores end the tick with `finite_floats`."""
    result = run_python(
        """
        import copy, sys
        sys.path.insert(0, "tests")
        from conftest import TINY
        from simulator.metrics.invariants import InvariantViolation
        from simulator.model import AttentionMarket
        from simulator.rules.allocation.query_key import AttentionSoftmax
        model = AttentionMarket(copy.deepcopy(TINY))
        model.step()
        model.rules.allocation = AttentionSoftmax(1e-39)
        try:
            model.step()
        except InvariantViolation as exc:
            assert exc.invariant == "finite_floats" and exc.tick == 2, exc
            print("ok", exc)
        else:
            raise SystemExit("the tick went through")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
