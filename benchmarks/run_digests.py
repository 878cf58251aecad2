"""Digests of whole runs: metrics, advertiser arrays after every tick and every ledger posting.

For a change that must not move a run's bytes (a compiled kernel replacing numpy): print the
digests of the code before it and after it on the same machine, and compare.

    git worktree add /tmp/before REV
    PYTHONPATH=/tmp/before python benchmarks/run_digests.py > before.json
    python benchmarks/run_digests.py > after.json && diff before.json after.json

(PYTHONPATH, since the editable install would otherwise import this checkout's package; the
script uses only the public model API, so it runs on either tree.) The digests hold for one
machine only: BLAS products on another CPU may round differently, which is why they are not
pinned in a test. The runs cover exact (keyed and successive) and candidate allocation, every
auction format, both pricings, bidding strategies, reserve prices, binding budgets and the
adversaries.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

import simulator
from simulator.market.ledger import Ledger
from simulator.model import AttentionMarket
from simulator.scenario.schema import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

# name: (scenario file, dotted-key overrides); few ticks, each a grid point of the file's sweep.
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline.yaml", {"ticks": 20}),
    "baseline_successive": ("baseline.yaml", {"ticks": 10, "allocation.sampling": "successive"}),
    "candidates": ("baseline.yaml", {"ticks": 10, "allocation.candidates.mode": "ivf", "population.goods.initial": 4000}),
    "shapley_gradient": ("baseline.yaml", {"ticks": 10, "allocation.rule": "shapley", "population.creators.adaptation.rule": "gradient"}),
    "first_price_shaded": (
        "auction_formats.yaml",
        {"ticks": 12, "circulation.auction.format": "first_price", "population.advertisers.bidding": "shaded"},
    ),
    "gsp_learning_reserve": (
        "auction_formats.yaml",
        {"ticks": 12, "circulation.auction.format": "gsp", "population.advertisers.bidding": "learning", "circulation.auction.reserve_price": 3},
    ),
    "second_price_paced": ("auction_formats.yaml", {"ticks": 12, "population.advertisers.bidding": "paced"}),
    "four_slots": ("ad_load.yaml", {"ticks": 12, "allocation.ad_slots": 4}),
    "adversaries_per_click": ("adversarial.yaml", {"ticks": 12}),
    "adversaries_per_impression_filtered": (
        "adversarial.yaml",
        {
            "ticks": 12,
            "circulation.auction.pricing": "per_impression",
            "defences.click_filter": {"detection": 0.9, "false_positive": 0.02},
            "circulation.auction.reserve_price": 2,
        },
    ),
}


def _feed(digest: Any, value: Any) -> None:
    """Bytes of a posting's argument or an array, with its dtype and shape (so 1 and 1.0 differ)."""
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    else:
        digest.update(repr(value).encode())


@contextmanager
def recorded_postings(digest: Any) -> Iterator[None]:
    """Every ledger posting (flow, accounts, rows, amounts, in order) fed to `digest` while inside."""
    originals = {name: getattr(Ledger, name) for name in ("endow", "inject", "remove", "transfer")}

    def recording(name: str) -> Any:
        def post(self: Ledger, *args: Any) -> None:
            digest.update(name.encode())
            for value in args:
                _feed(digest, value)
            originals[name](self, *args)

        return post

    try:
        for name in originals:
            setattr(Ledger, name, recording(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(Ledger, name, original)


def run_digests(name: str) -> dict[str, str]:
    """sha256 of the run's metrics table, its advertiser arrays after every tick, and its postings."""
    path, overrides = RUNS[name]
    metrics, advertisers, postings = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    with recorded_postings(postings):
        model = AttentionMarket(load_scenario(SCENARIOS / path, overrides))
        for _ in range(model.config.ticks):
            model.step()
            for spec in fields(model.market.advertisers):
                _feed(advertisers, getattr(model.market.advertisers, spec.name))
        for balance in model.market.ledger.balances.values():
            _feed(postings, balance)
    table = model.metrics
    for column in table.columns:
        metrics.update(str(column).encode())
        _feed(metrics, table[column].to_numpy())
    return {"metrics": metrics.hexdigest(), "advertisers": advertisers.hexdigest(), "ledger": postings.hexdigest()}


def main() -> None:
    """Print every run's digests as JSON, with the commit of the package that made them."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(simulator.__file__).parent).stdout.strip()
    json.dump({"commit": commit or "unknown", "runs": {name: run_digests(name) for name in RUNS}}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
