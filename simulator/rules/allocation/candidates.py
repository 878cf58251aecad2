"""The candidate mode: score each user against a candidate set instead of the whole catalogue.

Exact allocation scores every live good for every user, which costs users × goods per tick.
Above `allocation.candidates.auto_above` live goods (or with `mode: ivf`) the allocator scores
each user against candidates only, found through an inverted-file (IVF) index over the goods'
keys:

- **Lists.** Spherical k-means (a few vectorized Lloyd iterations, seeded from the run's
  generator) clusters the live goods' keys into `clusters` lists (default ⌈√goods⌉); lists
  larger than half of `per_user` are cut into slabs along a random direction, so no list
  crowds out the others. Every `refresh_every` ticks the centroids are refitted (warm-started);
  in between, newly published goods join the list of their nearest centroid and expired goods
  leave theirs. The lists are CSR arrays over the tick's catalogue positions, sorted by list.
- **Groups.** Users are routed to the list whose centroid is nearest their profile (query) and
  processed group by group. A group's *head* is the goods of the lists nearest to the group's
  mean profile, nearest first, whole lists while they fit in `per_user` (at most `probe`
  lists, at least one). Every user of the group shares the head, so its scores are one matrix
  product per group.
- **Extras.** The `fresh` newest goods and the `popular` goods most consumed in the last
  `popularity_window` ticks join every user's candidates.
- **The rest.** Everything else (the group's *tail*: the other lists, nearest to the group
  first) is represented by a stratified sample per user: the tail is cut into `random` strata
  of consecutive goods in that order (bands of similarity to the group) and one good is drawn
  uniformly from each. A draw from a stratum of n goods stands for n goods: its weight is
  multiplied by n (its score gets + log n), the Horvitz-Thompson estimator of the tail's total
  weight. So the softmax over the candidates keeps, in expectation, the share of attention the
  rest of the catalogue gets in exact mode instead of dropping it; with the softmax as flat as
  it is at T = 1 (the top 1 000 of 20 000 goods hold under half the weight) dropping it would
  move a large part of the exposure. Deterministic rules (`top_k`) take the draws unweighted.

`CandidateView.candidates(queries, rng)` gives the candidate sets of a block of users as one
(b, C) matrix of catalogue positions, -1 padded and distinct within a row, with the log-weights
to add; the allocator uses `blocks`, which yields the same sets group by group (a group's head
and extras as one row of positions shared by its users, the per-user draws as a matrix), packed
into blocks of at most `allocation.block_elements` scores, so the head's scores are one matrix
product per group and the sampler runs on a few large blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from simulator.market.candidate_kernels import block_columns, draw_tail_positions
from simulator.market.catalogue import Catalogue, window_counts
from simulator.market.state import FLOAT, MarketState
from simulator.scenario.schema import CandidatesConfig, Scenario

FIT_ITERATIONS = 6  # Lloyd iterations of a fresh fit
REFIT_ITERATIONS = 3  # Lloyd iterations of a warm-started refit
ROUTE_BLOCK_ELEMENTS = 1 << 22  # users × lists scores held at once while routing or assigning


def unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norm, 1e-12)).astype(FLOAT)


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the centroid with the largest dot product, per row of `vectors`, in blocks."""
    out = np.empty(len(vectors), dtype=np.int64)
    step = max(1, ROUTE_BLOCK_ELEMENTS // max(len(centroids), 1))
    for start in range(0, len(vectors), step):
        out[start : start + step] = np.argmax(vectors[start : start + step] @ centroids.T, axis=1)
    return out


def spherical_kmeans(
    keys: np.ndarray, clusters: int, iterations: int, rng: np.random.Generator, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, assignment): Lloyd iterations on the unit sphere (centroid = normalised mean).

    Starts from `start` when given (a warm refit) or from `clusters` distinct keys drawn with
    `rng`; a cluster left empty restarts at a key drawn with `rng`."""
    count = len(keys)
    clusters = max(1, min(clusters, count))
    if start is not None and len(start) == clusters:
        centroids = start.astype(FLOAT, copy=True)
    else:
        centroids = keys[rng.choice(count, size=clusters, replace=False)].astype(FLOAT, copy=True)
    assign = nearest(keys, centroids)
    for _ in range(iterations):
        sums = np.stack([np.bincount(assign, weights=keys[:, j], minlength=clusters) for j in range(keys.shape[1])], axis=1)
        empty = np.flatnonzero(np.bincount(assign, minlength=clusters) == 0)
        sums[empty] = keys[rng.choice(count, size=len(empty), replace=len(empty) > count)]
        centroids = unit(sums)
        assign = nearest(keys, centroids)
    return centroids, assign


def split_large_lists(
    keys: np.ndarray, centroids: np.ndarray, assign: np.ndarray, largest: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut every list longer than `largest` into slabs of at most `largest` goods along one random
    direction; each slab becomes a list with its own centroid. Returns (centroids, assignment)."""
    sizes = np.bincount(assign, minlength=len(centroids))
    if sizes.max(initial=0) <= largest:
        return centroids, assign
    direction = unit(rng.standard_normal(keys.shape[1]))
    order = np.lexsort((keys @ direction, assign))
    sorted_lists = assign[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_lists, sorted_lists, side="left")
    pieces = -(-sizes // largest)  # slabs per list (0 for empty lists)
    pieces = np.maximum(pieces, 1)
    # Slabs of a list of n goods: n // k or n // k + 1 goods each.
    slab = (rank * pieces[sorted_lists]) // sizes[sorted_lists]
    first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    new_assign = np.empty_like(assign)
    new_assign[order] = first[sorted_lists] + slab
    total = int(pieces.sum())
    sums = np.stack([np.bincount(new_assign, weights=keys[:, j], minlength=total) for j in range(keys.shape[1])], axis=1)
    empty = np.bincount(new_assign, minlength=total) == 0
    sums[empty] = np.repeat(centroids, pieces, axis=0)[empty]
    return unit(sums), new_assign


def default_clusters(goods: int) -> int:
    return max(1, math.ceil(math.sqrt(goods)))


@dataclass
class CandidateIndex:
    """The persistent part of the index (kept in `MarketState.candidates`, saved in checkpoints):
    centroids and each catalogue row's list. Rows are recycled, so the uid indexed in a row is
    kept too: a row whose uid changed holds a new good."""

    centroids: np.ndarray  # (L, d) unit rows: the lists' centroids
    base: np.ndarray  # (k, d) the k-means centroids before large lists were cut (warm starts)
    list_of_row: np.ndarray  # (capacity,) list of the good in each row, -1 if none indexed
    uid_of_row: np.ndarray  # (capacity,) uid of the good indexed in each row
    fitted_tick: int  # tick of the last fit, -1 before the first

    @classmethod
    def empty(cls, dim: int) -> CandidateIndex:
        vectors = np.zeros((0, dim), dtype=FLOAT)
        return cls(vectors, vectors.copy(), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), -1)

    def update(self, state: MarketState, catalogue: Catalogue, cfg: CandidatesConfig, rng: np.random.Generator) -> None:
        """Refit when due (or when the catalogue's size calls for another cluster count); otherwise
        index new goods at their nearest centroid and forget goods that left."""
        goods = len(catalogue.rows)
        capacity = state.goods.capacity()
        if len(self.list_of_row) < capacity:
            grow = capacity - len(self.list_of_row)
            self.list_of_row = np.concatenate([self.list_of_row, np.full(grow, -1, dtype=np.int32)])
            self.uid_of_row = np.concatenate([self.uid_of_row, np.full(grow, -1, dtype=np.int64)])
        if goods == 0:
            self.list_of_row[:] = -1
            return
        wanted = cfg.clusters or default_clusters(goods)
        wanted = min(wanted, goods)
        stale = self.fitted_tick < 0 or state.tick - self.fitted_tick >= cfg.refresh_every
        fitted = len(self.base)
        resized = not (wanted / 2 <= fitted <= wanted * 2) if not cfg.clusters else wanted != fitted
        if stale or resized:
            self.fit(state, catalogue, fitted if not resized else wanted, cfg.per_user, rng, warm=not resized)
            return
        uids = state.goods.uid[catalogue.rows]
        keep = np.zeros(capacity, dtype=bool)
        keep[catalogue.rows] = True
        self.list_of_row[~keep] = -1
        new = catalogue.rows[(self.list_of_row[catalogue.rows] < 0) | (self.uid_of_row[catalogue.rows] != uids)]
        if len(new):
            self.list_of_row[new] = nearest(state.goods.key[new], self.centroids)
            self.uid_of_row[new] = state.goods.uid[new]

    def fit(self, state: MarketState, catalogue: Catalogue, clusters: int, per_user: int, rng: np.random.Generator, warm: bool) -> None:
        keys = catalogue.keys
        start = self.base if warm and len(self.base) == clusters else None
        iterations = REFIT_ITERATIONS if start is not None else FIT_ITERATIONS
        base, assign = spherical_kmeans(keys, clusters, iterations, rng, start=start)
        self.base = base
        self.centroids, assign = split_large_lists(keys, base, assign, max(1, per_user // 2), rng)
        self.list_of_row[:] = -1
        self.list_of_row[catalogue.rows] = assign
        self.uid_of_row[catalogue.rows] = state.goods.uid[catalogue.rows]
        self.fitted_tick = state.tick

    def view(self, state: MarketState, catalogue: Catalogue, scenario: Scenario) -> CandidateView:
        """This tick's lists over catalogue positions, with the extras every user gets."""

        cfg = scenario.allocation.candidates
        goods = len(catalogue.rows)
        lists = len(self.centroids)
        list_of_position = self.list_of_row[catalogue.rows].astype(np.int64)
        extras = []
        if cfg.fresh and goods:
            uids = state.goods.uid[catalogue.rows]
            count = min(cfg.fresh, goods)
            extras.append(np.argpartition(-uids, count - 1)[:count] if count < goods else np.arange(goods))
        if cfg.popular and goods:
            counts = window_counts(state, scenario.allocation.popularity_window)[catalogue.rows]
            if extras:
                counts[extras[0]] = 0
            positive = int(np.count_nonzero(counts))
            count = min(cfg.popular, positive)
            if count:
                extras.append(np.argpartition(-counts, count - 1)[:count])
        extra = np.unique(np.concatenate(extras)) if extras else np.zeros(0, dtype=np.int64)
        list_of_position[extra] = lists  # the extras form one more list, in every user's head
        order = np.argsort(list_of_position, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(list_of_position, minlength=lists + 1))])
        place = np.empty(goods, dtype=np.int64)
        place[order] = np.arange(goods)
        return CandidateView(self.centroids, order, indptr, list_of_position, place, cfg)


@dataclass(frozen=True)
class Tail:
    """What a group's users sample from: the lists outside its head, nearest first, cut into strata.

    Tail index k (0 ≤ k < size) is the k-th good of those lists in that order; stratum j covers
    tail indices bounds[j]..bounds[j + 1] − 1, so strata are bands of similarity to the group."""

    lists: np.ndarray  # (t,) the lists outside the head (and the extras), nearest first
    start: np.ndarray  # (t + 1,) tail index where each of those lists starts
    bounds: np.ndarray  # (r + 1,) strata bounds over tail indices
    rank_of_list: np.ndarray  # (L + 1,) place of each list in `lists`, -1 for the head and the extras

    @property
    def size(self) -> int:
        return int(self.start[-1])


@dataclass(frozen=True)
class CandidateBlock:
    """One block of users and their candidates (see `CandidateView.blocks`).

    The block's users come in runs of one group each (`bounds`); the users of run k share the
    candidates `shared[k]` (its head and the extras), which take the first columns of their
    rows (padded to `shared_width`), and each user's sampled goods take the last R columns,
    one per stratum of the run's tail (`tails[k]`)."""

    rows: np.ndarray  # (b,) indices into the queries given to `blocks`
    bounds: np.ndarray  # (k + 1,) where each group's run of users starts within the block
    shared: tuple[np.ndarray, ...]  # k arrays of catalogue positions, one per group
    tails: tuple[Tail, ...]  # k tails, one per group
    shared_width: int  # columns reserved for the shared candidates (the longest of `shared`)
    own: np.ndarray  # (b, R) sampled positions per user, -1 where there is no draw
    own_log_weight: np.ndarray  # (b, R) log of each draw's stratum size (its inverse probability)

    @property
    def width(self) -> int:
        return self.shared_width + self.own.shape[1]

    def runs(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first row, end row, shared positions) of each group's run of users."""
        for k, shared in enumerate(self.shared):
            yield int(self.bounds[k]), int(self.bounds[k + 1]), shared

    def matrix(self) -> np.ndarray:
        """(b, width) catalogue positions of every candidate column, -1 for padding and missing draws."""
        out = np.full((len(self.rows), self.width), -1, dtype=np.int64)
        for low, high, shared in self.runs():
            out[low:high, : len(shared)] = shared
        out[:, self.shared_width :] = self.own
        return out

    def positions_at(self, columns: np.ndarray) -> np.ndarray:
        """Catalogue positions of candidate `columns` ((b, k), -1 for none) of this block's users."""
        out = np.full(columns.shape, -1, dtype=np.int64)
        for low, high, shared in self.runs():
            part = columns[low:high]
            inside = (part >= 0) & (part < len(shared))
            out[low:high][inside] = shared[part[inside]]
        if self.own.shape[1]:
            row, slot = np.nonzero(columns >= self.shared_width)
            out[row, slot] = self.own[row, columns[row, slot] - self.shared_width]
        return out


@dataclass(frozen=True)
class CandidateView:
    """The index over one tick's catalogue positions (built by `CandidateIndex.view`)."""

    centroids: np.ndarray  # (L, d)
    members: np.ndarray  # catalogue positions sorted by list; list L (the last) holds the extras
    indptr: np.ndarray  # (L + 2,) list l holds members[indptr[l]:indptr[l + 1]]
    list_of_position: np.ndarray  # (g,) list of each catalogue position (L for the extras)
    place_of_position: np.ndarray  # (g,) index of each catalogue position in `members`
    cfg: CandidatesConfig

    @property
    def lists(self) -> int:
        return len(self.centroids)

    @property
    def goods(self) -> int:
        return len(self.list_of_position)

    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)

    def route(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order, starts): rows of `queries` sorted by their nearest list, and where each list's group starts."""
        if len(queries) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self.lists == 0:
            return np.arange(len(queries)), np.zeros(1, dtype=np.int64)
        top = nearest(queries, self.centroids)
        order = np.argsort(top, kind="stable")
        sorted_top = top[order]
        return order, np.flatnonzero(np.r_[True, sorted_top[1:] != sorted_top[:-1]])

    def plan(self, profile: np.ndarray) -> tuple[np.ndarray, Tail]:
        """A group's head lists (nearest to its mean profile first; whole lists while they fit in
        `per_user` goods, at least one, at most `probe`) and its tail: the other lists, in order."""
        if self.lists == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, Tail(empty, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.full(1, -1, dtype=np.int64))
        sizes = self.sizes()[: self.lists]
        ranked = np.argsort(-(self.centroids @ profile), kind="stable")
        fits = max(int(np.count_nonzero(np.cumsum(sizes[ranked]) <= self.cfg.per_user)), 1)
        if self.cfg.probe:
            fits = min(fits, self.cfg.probe)
        head, rest = ranked[:fits], ranked[fits:]
        start = np.concatenate([[0], np.cumsum(sizes[rest])])
        strata = min(self.cfg.random, int(start[-1]))
        bounds = (np.arange(strata + 1, dtype=np.int64) * int(start[-1])) // max(strata, 1)
        rank_of_list = np.full(self.lists + 1, -1, dtype=np.int64)
        rank_of_list[rest] = np.arange(len(rest))
        return head, Tail(rest, start, bounds, rank_of_list)

    def positions_of(self, lists: np.ndarray) -> np.ndarray:
        """Catalogue positions of the goods of `lists` (the extras for list L), in list order."""
        starts, ends = self.indptr[lists], self.indptr[lists + 1]
        length = ends - starts
        flat = np.repeat(starts - np.concatenate([[0], np.cumsum(length)[:-1]]), length) + np.arange(int(length.sum()))
        return self.members[flat]

    def draw_tail(
        self, tail: Tail, rows: int, rng: np.random.Generator, excluded: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, log weights), (rows, r): one uniform draw per stratum of `tail` for each user,
        among the stratum's eligible goods: `excluded` ((rows, m) catalogue positions, -1 for none;
        the goods each user may not be shown) are never drawn, and a draw weighs the number of
        eligible goods of its stratum, so a masked good does not take its stratum's weight with it.
        A stratum with no eligible good has no draw (-1)."""
        strata = len(tail.bounds) - 1
        if strata == 0 or rows == 0:
            return np.full((rows, strata), -1, dtype=np.int64), np.zeros((rows, strata), dtype=FLOAT)
        if excluded is None:
            excluded = np.zeros((rows, 0), dtype=np.int64)
        # One compiled pass per user (market/candidate_kernels.py): its distinct exclusions found in
        # the tail, sorted, counted out of their strata and stepped over, and each draw's weight.
        sizes = np.diff(tail.bounds)
        log_counts = np.log(np.maximum(np.arange(int(sizes.max()) + 1), 1)).astype(FLOAT)
        lookup = (self.list_of_position, self.place_of_position, self.indptr, tail.rank_of_list, tail.start)
        return draw_tail_positions(rng.random((rows, strata)), tail.bounds, excluded, lookup, self.positions_of(tail.lists), log_counts)

    def blocks(
        self, queries: np.ndarray, rng: np.random.Generator, block_elements: int, excluded: np.ndarray | None = None
    ) -> Iterator[CandidateBlock]:
        """Candidate blocks covering every row of `queries` once: users sorted by group, groups
        packed into blocks of at most `block_elements` candidate columns (a group larger than
        that is cut), so the sampler runs on few large blocks however many groups there are.
        `excluded` ((rows of `queries`, m) catalogue positions, -1 for none): goods each user may
        not be shown, never drawn as a stratum's representative (see `draw_tail`)."""
        order, starts = self.route(queries)
        if len(order) == 0:
            return
        ends = np.r_[starts[1:], len(order)]
        extras = self.positions_of(np.array([self.lists]))
        plans = [self.plan(queries[order[start:end]].mean(axis=0)) for start, end in zip(starts, ends)]
        shared = [np.concatenate([self.positions_of(head), extras]) for head, _ in plans]
        strata = min(self.cfg.random, self.goods)
        pending: list[tuple[int, int, int]] = []  # (group, first row in `order`, end row)

        def flush() -> CandidateBlock:
            rows = np.concatenate([order[low:high] for _, low, high in pending])
            bounds = np.concatenate([[0], np.cumsum([high - low for _, low, high in pending])])
            own = np.full((len(rows), strata), -1, dtype=np.int64)
            log_weight = np.zeros((len(rows), strata), dtype=FLOAT)
            for k, (group, low, high) in enumerate(pending):
                barred = None if excluded is None else excluded[order[low:high]]
                drawn, weight = self.draw_tail(plans[group][1], high - low, rng, barred)
                own[bounds[k] : bounds[k + 1], : drawn.shape[1]] = drawn
                log_weight[bounds[k] : bounds[k + 1], : drawn.shape[1]] = weight
            block_shared = tuple(shared[group] for group, _, _ in pending)
            tails = tuple(plans[group][1] for group, _, _ in pending)
            width = max(len(positions) for positions in block_shared)
            return CandidateBlock(rows, bounds, block_shared, tails, width, own, log_weight)

        rows_held = 0
        width_held = 0
        for group in range(len(starts)):
            group_width = len(shared[group]) + strata
            low = int(starts[group])
            while low < ends[group]:
                width = max(width_held, group_width)
                room = block_elements // max(width, 1) - rows_held
                if room <= 0 and not pending:
                    room = 1  # a row wider than a block: one user at a time
                if room <= 0:
                    yield flush()
                    pending, rows_held, width_held = [], 0, 0
                    continue
                high = min(int(ends[group]), low + room)
                pending.append((group, low, high))
                rows_held += high - low
                width_held = width
                low = high
        if pending:
            yield flush()

    def columns_of(self, block: CandidateBlock, positions: np.ndarray) -> np.ndarray:
        """Where catalogue `positions` ((b, k), one row per user of `block`, -1 for none) sit among
        the block's candidate columns; -1 where they are not candidates. One compiled pass
        (market/candidate_kernels.py): a shared candidate's column, or the stratum's column where
        the user's draw from that stratum is the good."""
        return block_columns(
            positions, block.bounds, list(block.shared), [tail.rank_of_list for tail in block.tails],
            [tail.start for tail in block.tails], [len(tail.bounds) - 1 for tail in block.tails],
            block.own, block.shared_width, (self.list_of_position, self.place_of_position, self.indptr),
        )  # fmt: skip

    def candidates(self, queries: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(positions, log_weights), both (b, C): each user's candidates as catalogue positions,
        -1 padded, distinct within a row, and what each adds to its score (0 for the head and the
        extras, log(stratum size) for sampled goods)."""
        blocks = list(self.blocks(queries, rng, 1 << 62))
        width = max((block.width for block in blocks), default=0)
        positions = np.full((len(queries), width), -1, dtype=np.int64)
        weights = np.zeros((len(queries), width), dtype=FLOAT)
        for block in blocks:
            positions[block.rows, : block.width] = block.matrix()
            tail = np.zeros((len(block.rows), block.width), dtype=FLOAT)
            tail[:, block.shared_width :] = np.where(block.own >= 0, block.own_log_weight, 0)
            weights[block.rows, : block.width] = tail
        return positions, weights


def index_for(state: MarketState, catalogue: Catalogue, scenario: Scenario, rng: np.random.Generator) -> CandidateIndex:
    """The state's index brought up to date with this tick's catalogue (created on first use)."""
    index = state.candidates
    if not isinstance(index, CandidateIndex) or index.centroids.shape[1:] != (catalogue.keys.shape[1],):
        index = state.candidates = CandidateIndex.empty(catalogue.keys.shape[1])
    index.update(state, catalogue, scenario.allocation.candidates, rng)
    return index
