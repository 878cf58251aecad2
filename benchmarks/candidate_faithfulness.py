"""How faithful is the candidate mode? Exact and candidate allocation of one tick on the same state.

A market of `--users` users and `--goods` goods (d = `--dim`) runs `--warmup` ticks in exact mode
so that histories, popularity and the catalogue's turnover are those of a running market. Then,
on that same state, every alive user's content budget is allocated `--repeats` times exactly and
`--repeats` times in the candidate mode (`allocation.candidates`, with `--set` overrides), and
the exposures are aggregated per creator. Reported, as JSON on stdout:

- `tv_expected`: the total variation distance between the two per-creator exposure
  distributions in expectation — each user's softmax probabilities (over the whole catalogue,
  or over its candidates with their weights) times its budget, summed per creator, the
  candidate side averaged over `--draws` draws of the candidate sets. No sampling noise from
  the allocation itself: this measures what the candidate sets change.
  `tv_expected_one_draw` is the same for one draw of the candidate sets (what one tick
  sees), `tv_expected_draw_vs_draw` the distance between two draws (the candidate sets' own
  noise, which averages out over users and ticks, as the drop from one draw to `--draws`
  shows), and `tv_expected_goods` the one-draw distance per good.
- `tv_sampled`: the same distance between the exposures actually drawn (`--repeats` tick
  allocations each), and `tv_sampled_noise_floor`, between two exact allocations with other
  seeds: what sampling noise alone gives at this size.
- `seconds_exact`, `seconds_candidates` (median allocation time, the index's upkeep included
  and its first fit excluded, `index_fit_seconds`) and `speedup`.
- `candidates_per_user`: the mean number of candidate columns scored per user.

    python benchmarks/candidate_faithfulness.py                      # 20 000 × 20 000, d = 32
    python benchmarks/candidate_faithfulness.py --users 2000 --goods 2000 --repeats 2 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def scenario_for(users: int, goods: int, dim: int, extra: dict[str, Any]):
    import simulator

    overrides = {
        "ticks": 1000,
        "embedding_dim": dim,
        "population.users.count": users,
        "population.goods.initial": goods,
        "population.creators.count": max(10, goods // 10),
        "population.advertisers.count": 20,
        **extra,
    }
    return simulator.load_scenario(Path(__file__).resolve().parents[1] / "scenarios/baseline.yaml", overrides)


def total_variation(first: np.ndarray, second: np.ndarray) -> float:
    return 0.5 * float(np.abs(first / first.sum() - second / second.sum()).sum())


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    weights = np.exp((scores - top).astype(np.float64))
    total = weights.sum(axis=1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


def expected_exact(state, catalogue, users, counts, rule, scenario) -> np.ndarray:
    """Per catalogue position: Σ_users count × softmax probability over the whole catalogue."""
    from simulator.rules.allocation.engine import block_rows, mask_consumed
    from simulator.rules.allocation.modifiers import score_adjustment

    adjustment = score_adjustment(state, catalogue.rows, scenario)
    total = np.zeros(len(catalogue.rows))
    step = block_rows(len(catalogue.rows), scenario.allocation.block_elements)
    for start in range(0, len(users), step):
        block = users[start : start + step]
        scores = rule.scores(state, catalogue, block)
        if adjustment is not None:
            scores += adjustment[None, :]
        if scenario.allocation.mask_consumed:
            mask_consumed(scores, state, catalogue, block)
        total += counts[start : start + step].astype(np.float64) @ softmax_rows(scores)
    return total


def expected_candidates(state, catalogue, users, counts, rule, scenario, rng) -> tuple[np.ndarray, float]:
    """Per catalogue position: Σ_users count × softmax probability over the user's candidates; and
    the mean number of candidate columns per user."""
    from simulator.rules.allocation.engine import candidate_scores
    from simulator.rules.allocation.modifiers import score_adjustment

    adjustment = score_adjustment(state, catalogue.rows, scenario)
    total = np.zeros(len(catalogue.rows))
    columns = 0
    for block, scores in candidate_scores(state, catalogue, users, rule, scenario, rng, adjustment):
        probability = softmax_rows(scores) * counts[block.rows, None]
        positions = block.matrix()
        valid = positions >= 0
        total += np.bincount(positions[valid], weights=probability[valid], minlength=len(total))
        columns += scores.shape[1] * len(block.rows)
    return total, columns / max(len(users), 1)


def per_creator(state, catalogue, per_position: np.ndarray) -> np.ndarray:
    owners = state.goods.owner[catalogue.rows]
    return np.bincount(owners, weights=per_position, minlength=state.creators.capacity())


def sampled(state, catalogue, users, counts, rule, scenario, mode: str, seeds: list[int]) -> tuple[np.ndarray, list[float]]:
    """Exposures per creator summed over one allocation per seed, and each allocation's seconds."""
    from simulator.rules.allocation.engine import allocate_exposures

    total = np.zeros(state.creators.capacity())
    seconds = []
    for seed in seeds:
        started = time.perf_counter()
        exposures = allocate_exposures(state, catalogue, users, counts, rule, scenario, np.random.default_rng(seed), mode=mode)
        seconds.append(time.perf_counter() - started)
        shown = exposures[exposures >= 0]
        total += np.bincount(state.goods.owner[shown], minlength=len(total))
    return total, seconds


def measure(users: int, goods: int, dim: int, warmup: int, repeats: int, draws: int, extra: dict[str, Any]) -> dict[str, Any]:
    from simulator.market.catalogue import Catalogue
    from simulator.model import AttentionMarket
    from simulator.rules.allocation.candidates import index_for
    from simulator.rules.allocation.engine import make_rule

    scenario = scenario_for(users, goods, dim, {**extra, "allocation.candidates.mode": "exact"})
    model = AttentionMarket(scenario)
    model.check_invariants = False
    for _ in range(warmup):
        model.step()
    state = model.market
    candidate_scenario = scenario_for(users, goods, dim, {"allocation.candidates.mode": "ivf", **extra})
    rule = make_rule(scenario)
    catalogue = Catalogue.of(state)
    alive = np.flatnonzero(state.users.alive)
    counts = state.users.budget[alive].astype(np.int64)

    started = time.perf_counter()
    index = index_for(state, catalogue, candidate_scenario, np.random.default_rng(12345))
    fit_seconds = time.perf_counter() - started
    view = index.view(state, catalogue, candidate_scenario)

    exact_expected = expected_exact(state, catalogue, alive, counts, rule, scenario)
    exact_creators = per_creator(state, catalogue, exact_expected)
    candidate_draws = []
    for draw in range(max(draws, 2)):
        per_position, width = expected_candidates(state, catalogue, alive, counts, rule, candidate_scenario, np.random.default_rng(1 + draw))
        candidate_draws.append(per_position)
    candidate_expected = candidate_draws[0]
    draw_creators = [per_creator(state, catalogue, per_position) for per_position in candidate_draws]

    exact_sampled, exact_seconds = sampled(state, catalogue, alive, counts, rule, scenario, "exact", list(range(100, 100 + repeats)))
    floor_sampled, _ = sampled(state, catalogue, alive, counts, rule, scenario, "exact", list(range(200, 200 + repeats)))
    candidate_sampled, candidate_seconds = sampled(state, catalogue, alive, counts, rule, candidate_scenario, "ivf", list(range(300, 300 + repeats)))

    cfg = candidate_scenario.allocation.candidates
    seconds_exact = statistics.median(exact_seconds)
    seconds_candidates = statistics.median(candidate_seconds)
    return {
        "users": users,
        "goods": goods,
        "dim": dim,
        "live_goods": int(len(catalogue.rows)),
        "creators_with_goods": int(len(np.unique(state.goods.owner[catalogue.rows]))),
        "users_allocated": int(len(alive)),
        "exposures_per_allocation": float(exact_sampled.sum() / repeats),
        "repeats": repeats,
        "candidates": {
            **cfg.model_dump(mode="json"),
            "lists": int(view.lists),
            "mean_list_size": float(view.sizes()[: view.lists].mean()) if view.lists else 0.0,
            "largest_list": int(view.sizes()[: view.lists].max(initial=0)),
        },
        "candidates_per_user": width,
        "draws": max(draws, 2),
        "tv_expected": total_variation(exact_creators, sum(draw_creators[: max(draws, 1)])),
        "tv_expected_one_draw": total_variation(exact_creators, draw_creators[0]),
        "tv_expected_draw_vs_draw": total_variation(draw_creators[0], draw_creators[1]),
        "tv_expected_goods": total_variation(exact_expected, candidate_expected),
        "tv_sampled": total_variation(exact_sampled, candidate_sampled),
        "tv_sampled_noise_floor": total_variation(exact_sampled, floor_sampled),
        "index_fit_seconds": fit_seconds,
        "seconds_exact": seconds_exact,
        "seconds_candidates": seconds_candidates,
        "speedup": seconds_exact / seconds_candidates,
        "target": {"tv_expected": 0.05},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--goods", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="exact ticks run before the comparison")
    parser.add_argument("--repeats", type=int, default=3, help="allocations per mode for the sampled distances")
    parser.add_argument("--draws", type=int, default=4, help="draws of the candidate sets averaged for tv_expected")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override (both modes)")
    args = parser.parse_args()

    from simulator.scenario.schema import parse_override_value

    extra = {key: parse_override_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    print(json.dumps(measure(args.users, args.goods, args.dim, args.warmup, args.repeats, args.draws, extra), indent=2))


if __name__ == "__main__":
    main()
