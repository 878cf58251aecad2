"""The size check: estimate a run's peak memory from its scenario, before allocating anything.

`estimate_memory(scenario)` adds up the parts that grow with the scenario's sizes:

- the populations' arrays, per row from the dtypes and widths declared in `state.py` (vectors
  are `embedding_dim` wide, users' consumption history `allocation.consumed_memory`, advertisers'
  bandit weights `learning_arms`), plus each account's int64 ledger balance; users' rows include
  the arrivals expected over the run, goods' rows the catalogue's steady state (creators ×
  publishing rate × lifetime), with room for the capacity doubling of `state.Population`;
- the uid index (8 bytes per good ever published) and the metrics recorded every tick;
- one tick's working memory: the allocator's score block (`allocation.block_elements` scores,
  6–24 bytes each with the selection's temporaries, by rule) and the per-exposure matrices of
  the active users (~56 bytes per attention unit up to `population.users.budget_max`);
- the allocation rule's state across ticks (`state_bytes`, e.g. the `learned` rule's logs and factors);
- the candidate mode's index (`allocation.candidates`), when the run may use it: a few
  integers per catalogue row and per active user (its score blocks are bounded by
  `allocation.block_elements` like exact mode's);
- the interpreter and libraries (`BASELINE_BYTES`). The first run after installing compiles the
  numba kernels and caches them; that run peaks about 0.1 GB higher for a few seconds.

It is a deliberately simple model, checked against tracemalloc and the process's peak RSS in
tests/test_reliability.py to stay within a factor of about 2. `check_memory` compares it with the
memory available (cgroup limit, /proc/meminfo `MemAvailable`, or `os.sysconf`) and returns
problem lines, in the `FILE:LINE:COL: key: message` style, pointing at the keys that drive the
estimate. `attnsim run` and `attnsim resume` refuse (exit 2) when it does not fit, unless
`--force`; sweeps call `check_memory(scenario, workers=N)` for N runs side by side.
The environment variable `ATTNSIM_AVAILABLE_MEMORY` (bytes) overrides the measured figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from simulator.market.state import Advertisers, Creators, Goods, Population, Users
from simulator.metrics.panels import ADVERTISERS, CREATORS, POPULATIONS, USERS, panel_row_bytes
from simulator.metrics.table import METRIC_COLUMNS
from simulator.rules.allocation.base import ALLOCATION_RULES
from simulator.scenario.schema import (
    Scenario,
    ScenarioError,
    ScenarioIssue,
    _compose_with_positions,
)

BASELINE_BYTES = 280 * 1024**2  # Python, numpy, scipy, pandas, pyarrow, mesa and the package, imported
# Per element of the allocator's score block: the scores plus the selection's temporaries, as
# measured with tracemalloc per rule (sampling without replacement needs only the scores; the deterministic
# top-k and the Shapley mediator keep more per element).
EXPOSURE_BYTES_PER_UNIT = 56  # per active user and attention unit: exposures, values, masks, ...
VECTOR_COPIES = 3  # per active user: copies of its interest and profile vectors in a tick
USER_TICK_BYTES = 48  # per user and tick: show-up draws, masks, index arrays
METRIC_BYTES_PER_VALUE = 40  # a Python number in the collector's lists, plus the frame at checkpoints
GROWTH = 2.0  # a population that grows may hold twice its rows (capacity doubles)
CANDIDATE_BYTES_PER_GOOD = 48  # candidate mode: each row's list and uid, the tick's lists over positions
CANDIDATE_BYTES_PER_USER = 40  # candidate mode: each active user's nearest list and place in the routing order
PANEL_COPIES = 3.5  # agent panels at the end: the recorded chunks, the concatenated columns and the DataFrame/Arrow table
ENV_AVAILABLE = "ATTNSIM_AVAILABLE_MEMORY"


@dataclass(frozen=True)
class MemoryPart:
    """One part of the estimate: `key` is the scenario key that drives it."""

    key: str
    bytes: int
    what: str


@dataclass(frozen=True)
class MemoryEstimate:
    parts: tuple[MemoryPart, ...]

    @property
    def total(self) -> int:
        return sum(part.bytes for part in self.parts)

    def drivers(self, share: float = 0.1) -> list[MemoryPart]:
        """The parts that make up at least `share` of the total, largest first."""
        total = max(self.total, 1)
        return sorted((part for part in self.parts if part.bytes >= share * total), key=lambda part: -part.bytes)


def row_bytes(struct: type[Population], dim: int, widths: dict[str, int] | None = None) -> int:
    """Bytes per row of a population struct, from the dtypes and widths declared in state.py."""
    widths = widths or {}
    total = 0
    for spec in fields(struct):  # type: ignore[arg-type]
        if "dtype" not in spec.metadata:
            continue
        width = widths.get(spec.name, dim if spec.metadata.get("vector") else 1)
        total += np.dtype(spec.metadata["dtype"]).itemsize * width
    return total


def human(size: float) -> str:
    """Bytes in binary units: 1.5 GiB, 320 MiB, 12 KiB."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{int(size)} B"


def estimate_memory(scenario: Scenario) -> MemoryEstimate:
    """The run's peak memory, part by part (see the module docstring)."""
    pop, alloc = scenario.population, scenario.allocation
    dim, ticks = scenario.embedding_dim, scenario.ticks
    users_cfg, creators_cfg, goods_cfg, ads_cfg = pop.users, pop.creators, pop.goods, pop.advertisers
    parts: list[MemoryPart] = []

    arrivals = users_cfg.arrivals_per_tick * ticks
    users = users_cfg.count + arrivals
    user_rows = users * (GROWTH if arrivals else 1.0)
    per_user = row_bytes(Users, dim, {"history": alloc.consumed_memory}) + 8
    parts.append(
        MemoryPart(
            "population.users.count",
            int(user_rows * per_user),
            f"{_count(user_rows)} user rows × {per_user} bytes (embedding_dim {dim}, allocation.consumed_memory {alloc.consumed_memory})",
        )
    )

    # Entry: one tick admits Poisson(entry.rate × active creators) newcomers at once, so the rows
    # must hold count × (1 + rate) after the first profitable tick (a rate of 1e10 would ask for
    # 1e12 rows there: refused here, not a MemoryError at tick 0). Later ticks compound only while
    # creating pays; the capacity doubling (GROWTH) leaves room for that.
    entry_rate = creators_cfg.entry.rate
    entering = creators_cfg.count * (1.0 + entry_rate)
    creators = entering * GROWTH if entry_rate > 0 else float(creators_cfg.count)
    creators_key = "population.creators.entry.rate" if entry_rate > GROWTH - 1 else "population.creators.count"
    per_creator = row_bytes(Creators, dim) + 8
    parts.append(
        MemoryPart(creators_key, int(creators * per_creator), f"{_count(creators)} creator rows × {per_creator} bytes (creators.count × (1 + entry.rate {entry_rate:g}), doubled for growth)")
    )

    # A good lives at most `lifetime` ticks, and never longer than the run: the catalogue holds the
    # goods of at most min(lifetime, ticks) ticks of publishing.
    lived = min(goods_cfg.lifetime, ticks)
    steady = entering * creators_cfg.publish_rate * (lived + 1)
    goods = max(goods_cfg.initial, 16, steady * GROWTH)
    per_good = row_bytes(Goods, dim)
    goods_key = "population.goods.initial" if goods_cfg.initial >= steady * GROWTH else creators_key
    parts.append(
        MemoryPart(
            goods_key,
            int(goods * per_good),
            f"{_count(goods)} catalogue rows × {per_good} bytes (initial goods, or creators × publish_rate × min(lifetime, ticks) = {lived:,})",
        )
    )

    issued = goods_cfg.initial + entering * creators_cfg.publish_rate * ticks
    parts.append(MemoryPart("ticks", int(issued * 8 * GROWTH), f"uid index: {_count(issued)} goods published over {ticks:,} ticks × 8 bytes"))

    per_advertiser = row_bytes(Advertisers, dim, {"arm_weights": ads_cfg.learning_arms}) + 8
    parts.append(MemoryPart("population.advertisers.count", int(ads_cfg.count * per_advertiser), f"{ads_cfg.count:,} advertisers × {per_advertiser} bytes"))


    parts.append(
        MemoryPart("ticks", int(ticks * len(METRIC_COLUMNS) * METRIC_BYTES_PER_VALUE), f"metrics: {ticks:,} ticks × {len(METRIC_COLUMNS)} columns")
    )
    panels = scenario.metrics.agent_panels
    if panels is not None:
        recordings = math.ceil(ticks / panels.every) + 1  # tick 1, every `every` after it, the last
        sampled = {
            USERS: min(panels.sample, users_cfg.count) * (users / users_cfg.count),  # newcomers join at the sampling rate
            CREATORS: min(panels.sample, creators_cfg.count) * (creators / creators_cfg.count if entry_rate > 0 else 1.0),
            ADVERTISERS: min(panels.sample, ads_cfg.count),
        }
        rows = {population: sampled[population] * recordings for population in POPULATIONS}
        held = sum(rows[population] * panel_row_bytes(population, dim) for population in POPULATIONS)
        parts.append(
            MemoryPart(
                "metrics.agent_panels.sample",
                int(held * PANEL_COPIES),
                f"agent panels: {_count(sum(rows.values()))} rows ({_count(sampled[USERS])} users, {_count(sampled[CREATORS])} creators, "
                f"{_count(sampled[ADVERTISERS])} advertisers × {recordings:,} recordings (every {panels.every} of {ticks:,} ticks)), "
                f"held about {PANEL_COPIES:g} times while written",
            )
        )

    active = users * min(1.0, users_cfg.activity + 0.1)
    width = min(users_cfg.budget_max, max(1, math.ceil(users_cfg.budget.median * math.exp(4 * users_cfg.budget.sigma))))
    parts.append(
        MemoryPart(
            "population.users.count",
            int(active * (width * EXPOSURE_BYTES_PER_UNIT + dim * 4 * VECTOR_COPIES) + users * USER_TICK_BYTES),
            f"one tick's exposures: {_count(active)} active users × ({width} attention units (population.users.budget_max) × "
            f"{EXPOSURE_BYTES_PER_UNIT} bytes + {VECTOR_COPIES} vectors of embedding_dim {dim})",
        )
    )
    live = max(goods_cfg.initial, steady, 1)  # goods live in a tick (the catalogue's rows may be more)
    block = min(alloc.block_elements, max(1, int(active)) * int(live))
    rule = ALLOCATION_RULES.resolve(alloc.rule)  # the rule declares its memory cost
    per_element = rule.block_bytes_per_element
    parts.append(
        MemoryPart(
            "allocation.block_elements", int(block * per_element), f"the allocator's score block: {block:,} scores × {per_element} bytes ({alloc.rule})"
        )
    )

    candidates = alloc.candidates
    if candidates.mode == "ivf" or (candidates.mode == "auto" and live > candidates.auto_above):
        index = goods * CANDIDATE_BYTES_PER_GOOD + active * CANDIDATE_BYTES_PER_USER
        parts.append(
            MemoryPart(
                "allocation.candidates.mode",
                int(index),
                f"the candidate mode's index: {_count(goods)} catalogue rows × {CANDIDATE_BYTES_PER_GOOD} bytes and "
                f"{_count(active)} routed users × {CANDIDATE_BYTES_PER_USER} bytes",
            )
        )

    kept = rule.state_bytes(scenario, int(active), int(users), int(goods))
    if kept:
        parts.append(MemoryPart("allocation.rule", int(kept), f"the {rule.name} rule's state across ticks"))

    parts.append(MemoryPart("<process>", BASELINE_BYTES, "the interpreter and libraries"))
    return MemoryEstimate(tuple(parts))


def _count(value: float) -> str:
    return f"{int(round(value)):,}"


# --- what the machine has --------------------------------------------------------------------------


def available_memory() -> tuple[int | None, str]:
    """Bytes of memory this process may still use, and where the figure comes from.

    The smallest of the cgroup's remaining limit and /proc/meminfo's MemAvailable (falling back
    to `os.sysconf`); `ATTNSIM_AVAILABLE_MEMORY` overrides it. (None, reason) when unknown.
    """
    override = os.environ.get(ENV_AVAILABLE)
    if override:
        try:
            return int(float(override)), ENV_AVAILABLE
        except ValueError:
            pass
    candidates: list[tuple[int, str]] = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        candidates.append((meminfo, "MemAvailable in /proc/meminfo"))
    else:
        try:
            pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            if pages > 0 and size > 0:
                candidates.append((pages * size, "os.sysconf(SC_AVPHYS_PAGES)"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup = _cgroup_available()
    if cgroup is not None:
        candidates.append((cgroup, "the cgroup's memory limit"))
    if not candidates:
        return None, "unknown"
    return min(candidates)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes.

    Reads VmHWM, the high-water mark of the process's own address space. `ru_maxrss` would be
    wrong for a process started by `subprocess`: Linux carries the parent's high-water mark
    across fork and exec, so a child of a large process reports the parent's peak.
    """
    high_water = _proc_bytes("/proc/self/status", "VmHWM")
    if high_water is not None:
        return high_water
    import resource  # not on Windows; without /proc (macOS), ru_maxrss is in bytes

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _meminfo_available() -> int | None:
    return _proc_bytes("/proc/meminfo", "MemAvailable")


def _proc_bytes(path: str, key: str) -> int | None:
    """The `key:  N kB` line of a /proc file, in bytes; None when the file or key is missing."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """limit − usage of the process's cgroup (v2, then v1), None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit = int(limit_text)
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1's "no limit"
            return None
        return max(0, limit - usage)
    return None


# --- the check ---------------------------------------------------------------------------------------

Locator = Callable[[str], tuple[str, int, int]]


def check_memory(
    scenario: Scenario,
    locate: Locator | None = None,
    *,
    workers: int = 1,
    available: int | None = None,
    source: str | None = None,
) -> list[ScenarioIssue]:
    """Problems (empty when the run fits) if `workers` runs of `scenario` need more than `available`.

    `locate(key)` gives the `(file, line, column)` of a scenario key; without it every problem
    points at `FILE:1:1` of `source` (or `<scenario>`). `available` defaults to `available_memory()`.
    """
    if available is None:
        available, origin = available_memory()
        if available is None:
            return []
    else:
        origin = "given"
    estimate = estimate_memory(scenario)
    need = estimate.total * max(1, workers)
    if need <= available:
        return []
    where: Locator = locate or (lambda key: (source or "<scenario>", 1, 1))
    scaled = [part for part in estimate.parts if part.key != "<process>"]
    share = 0.1 * sum(part.bytes for part in scaled)
    drivers = sorted((part for part in scaled if part.bytes >= share), key=lambda part: -part.bytes)[:5]
    head = drivers[0].key
    runs = f"{workers} runs side by side need" if workers > 1 else "the run needs"
    issues = [
        ScenarioIssue(
            *where(head),
            head,
            f"{runs} about {human(need)} of memory, more than the {human(available)} available ({origin}); "
            "lower the sizes below or pass --force to run anyway",
        )
    ]
    for part in drivers:
        issues.append(ScenarioIssue(*where(part.key), part.key, f"{human(part.bytes * max(1, workers))}: {part.what}"))
    return issues


def scenario_locator(path: str | Path | None, overrides: dict[str, tuple[str, int]] | None = None, *, prefix: str = "") -> Locator:
    """`locate(key)` for `check_memory`: the position of `key` in the YAML (or JSON) file `path`,
    of `--set` options (`overrides` maps a key to its option label and number), or the nearest
    ancestor written; `prefix` is prepended to keys looked up in the file (`scenario.` for a
    manifest)."""

    name = str(path) if path is not None else "<scenario>"
    overrides = overrides or {}
    parsed: list = []

    def positions_of() -> Any:
        if not parsed:  # read the file only when a problem needs locating
            located = None
            if path is not None:
                try:
                    located = _compose_with_positions(Path(path).read_text(encoding="utf-8"), name)
                except (OSError, UnicodeDecodeError, ScenarioError):
                    located = None
            parsed.append(located)
        return parsed[0]

    def locate(key: str) -> tuple[str, int, int]:
        if key in overrides:
            label, number = overrides[key]
            return label, number, 1
        positions = positions_of()
        if positions is not None:
            found = positions.locate(f"{prefix}{key}")
            if found != positions.default or not prefix:
                return found
        return name, 1, 1

    return locate
