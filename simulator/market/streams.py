"""Entity-keyed random numbers: each draw is named by whom it is for, not by when it is drawn.

A generator hands out numbers in order, so when one rule shows a user one more good, every draw
after it in that tick goes to someone else, and two arms of a sweep that share a seed stop
sharing their shocks at the first difference in who is shown what, who publishes or who leaves.
Here a draw is a hash of (key, entity ids): a user's taste shock for a good is the same number in
every arm that shows it to them, whatever else was shown, and a creator's publishing draw is the
same whichever creators left. This is the synchronisation of common random numbers (Law,
Simulation Modeling and Analysis, ch. 11): the arms differ only where their rules make them.

The hash is the splitmix64 finaliser (Steele, Lea & Flood 2014) chained over the ids, written by
hand because it must run vectorised in numpy and inside numba kernels with identical bits
(numpy's counter-based Philox takes one key per generator, not one per array element). A stage
takes its `EntityDraws` key as the first draw of its own per-tick stream, so keys are fixed by the
run's seed and the tick, the same in every arm, and need no state across ticks or threads.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats
from numba import njit, prange
from numba.cpython.unsafe.numbers import leading_zeros

from simulator.market.kernels import NonFiniteScores, _spans, keep_best

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
UNIT = 2.0**-53  # a 53-bit integer times this is a double in [0, 1)


def mix(bits: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 values (wrapping arithmetic): a bijection whose output
    bits each depend on every input bit."""
    with np.errstate(over="ignore"):
        bits = (bits ^ (bits >> np.uint64(30))) * MIX_1
        bits = (bits ^ (bits >> np.uint64(27))) * MIX_2
    return bits ^ (bits >> np.uint64(31))


def keyed_bits(key: int, *ids: np.ndarray | int) -> np.ndarray:
    """64 random bits per element of the broadcast `ids`, a function of (key, ids) only."""
    shape, flat = _flat_ids(ids)
    out = np.empty(int(np.prod(shape)), dtype=np.uint64)
    if flat:
        _keyed_bits(np.uint64(key), flat, out)
    else:
        out[...] = np.uint64(key)
    return out.reshape(shape)


def keyed_uniform(key: int, *ids: np.ndarray | int) -> np.ndarray:
    """`bits_to_uniform(keyed_bits(key, *ids))` in one compiled pass: no uint64 temporaries of
    the ids' size (the consumption stage draws one per shown exposure)."""
    shape, flat = _flat_ids(ids)
    if not flat:
        return bits_to_uniform(keyed_bits(key))
    out = np.empty(int(np.prod(shape)), dtype=np.float64)
    _keyed_uniform(np.uint64(key), flat, out)
    return out.reshape(shape)


def _flat_ids(ids: tuple[np.ndarray | int, ...]) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
    """The broadcast shape of `ids` and each as a flat int64 array of that many elements (a copy
    only where broadcasting repeats it)."""
    parts = np.broadcast_arrays(*(np.asarray(part).astype(np.int64, copy=False) for part in ids)) if ids else []
    shape = parts[0].shape if parts else ()
    return shape, tuple(np.ascontiguousarray(part).reshape(-1) for part in parts)


def bits_to_uniform(bits: np.ndarray) -> np.ndarray:
    """Uniforms strictly inside (0, 1): the top 53 bits, centred in their interval."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * UNIT


def stable_order(keys: np.ndarray) -> np.ndarray:
    """`np.argsort(keys, kind="stable")` for keys without NaN, in about a sixth of its time:
    numpy's vectorised quicksort gives the same, only, sorted order when no two keys are equal,
    as keyed uniforms almost never are; on a tie it sorts again, stably."""
    order = np.argsort(keys)
    ranked = keys[order]
    return np.argsort(keys, kind="stable") if np.any(ranked[1:] == ranked[:-1]) else order


@dataclass(frozen=True)
class EntityDraws:
    """Draws keyed by entity ids under one 63-bit key; `stream(purpose)` gives a key of its own to
    each kind of draw, so a user's taste shock and its ad click never share a number."""

    key: int

    @classmethod
    def of(cls, rng: np.random.Generator) -> EntityDraws:
        """Keys taken as one draw of `rng`: take it where the stream is still common to every arm
        (the first draw of a stage's fresh per-tick stream)."""
        return cls(int(rng.integers(0, 2**63, dtype=np.int64)))

    def stream(self, purpose: str) -> EntityDraws:
        return EntityDraws(int(keyed_bits(self.key, zlib.crc32(purpose.encode())) >> np.uint64(1)))

    def uniform(self, *ids: np.ndarray | int) -> np.ndarray:
        return keyed_uniform(self.key, *ids)

    def order(self, *ids: np.ndarray | int) -> np.ndarray:
        """The positions of `ids` in the random order of their uniforms, ties by position:
        `np.argsort(self.uniform(*ids), kind="stable")`, as `stable_order` computes it."""
        return stable_order(self.uniform(*ids))

    def normal(self, *ids: np.ndarray | int) -> np.ndarray:
        """Standard normals by inversion (monotone in the uniform, so nearby arms stay nearby)."""
        return scipy.special.ndtri(self.uniform(*ids))

    def logistic(self, scale: float, *ids: np.ndarray | int) -> np.ndarray:
        uniform = self.uniform(*ids)
        return scale * (np.log(uniform) - np.log1p(-uniform))

    def poisson(self, mean: np.ndarray, *ids: np.ndarray | int) -> np.ndarray:
        """Poisson counts by inversion: a creator whose rate moves a little keeps its count unless
        its uniform sits at the edge, instead of every later creator's count changing."""
        return scipy.stats.poisson.ppf(self.uniform(*ids), np.asarray(mean, dtype=np.float64)).astype(np.int64)

    def generator(self, purpose: str) -> np.random.Generator:
        """An ordinary generator for draws made in a fixed order among a fixed set (say, the
        traits of this tick's entrants): keyed like the rest, so earlier draws cannot shift it."""
        return np.random.default_rng(self.stream(purpose).key)


def serials(owner: np.ndarray, tick: int) -> np.ndarray:
    """Names for goods published at `tick`: a hash of (owner, tick, the good's rank among its
    owner's goods of this call), so the k-th good a creator publishes in a tick carries the same
    name in every arm, whichever goods the other creators published (uids count every good)."""
    order = np.argsort(owner, kind="stable")
    ordered = owner[order]
    rank = np.empty(len(owner), dtype=np.int64)
    rank[order] = np.arange(len(owner)) - np.searchsorted(ordered, ordered, side="left")
    return (keyed_bits(0, owner, tick, rank) >> np.uint64(1)).astype(np.int64)


@njit(cache=True, inline="always")
def _mix_scalar(bits):
    bits = (bits ^ (bits >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    bits = (bits ^ (bits >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return bits ^ (bits >> np.uint64(31))


@njit(cache=True, inline="always")
def _uniform_of(bits):
    """`bits_to_uniform` of one element: the top 53 bits, centred in their interval."""
    return (np.float64(np.int64(bits >> np.uint64(11))) + 0.5) * 1.1102230246251565e-16


@njit(cache=True, inline="always")
def _keyed_element(key, ids, i):
    """`keyed_bits` of element i: the key mixed with each id's mix in turn, as `mix` does in numpy."""
    bits = key
    for part in range(len(ids)):
        bits = _mix_scalar(bits ^ _mix_scalar(np.uint64(ids[part][i]) + np.uint64(0x9E3779B97F4A7C15)))
    return bits


@njit(cache=True)
def _keyed_bits(key, ids, out):
    for i in range(out.shape[0]):
        out[i] = _keyed_element(key, ids, i)


@njit(cache=True)
def _keyed_uniform(key, ids, out):
    for i in range(out.shape[0]):
        out[i] = _uniform_of(_keyed_element(key, ids, i))


LN2 = 0.6931471805599453


@njit(cache=True, inline="always")
def _noise_bounds(scores, row, user_bits, goods, bound):
    """bound[j] ≥ scores[row, j] + Gumbel(key, user, good j), for every column at once.

    The Gumbel is −log(−log u) and −log u ≥ 1 − u = (rest + ½)·2⁻⁵³ ≥ 2^(bit length of rest − 54),
    so the noise is at most (54 − bit length of rest)·ln 2, where rest is the 53-bit complement of
    u's bits. No branch and no transcendental: the compiler turns the loop into SIMD hashes and
    bit counts, a few times faster than hashing column by column inside the selection's scan.
    Returns whether the row holds a NaN or +inf (no softmax of it exists), found in the same pass."""
    finite = True
    for column in range(scores.shape[1]):
        score = scores[row, column]
        finite &= score < np.inf
        rest = (_mix_scalar(user_bits ^ goods[column]) >> np.uint64(11)) ^ np.uint64(0x1FFFFFFFFFFFFF)
        bound[column] = np.float64(score) + np.float64(np.int64(leading_zeros(rest)) - 10) * LN2
    return not finite


@njit(cache=True, inline="always")
def _offer_noisy(scores, row, column, user_bits, goods, kept, wanted, best_scores, best_columns):
    """Offer column's score + its Gumbel to the row's best-so-far buffer; -inf scores are never
    offered, and a column whose noise cannot reach the worst kept skips its two logs."""
    score = scores[row, column]
    if not score > -np.inf:
        return kept
    uniform = _uniform_of(_mix_scalar(user_bits ^ goods[column]))
    if kept == wanted and 1.0 - uniform >= np.exp(np.float64(score) - best_scores[wanted - 1]):
        return kept  # −log u ≥ 1 − u ≥ exp(score − worst kept): its Gumbel cannot lift it past
    return keep_best(best_scores, best_columns, kept, wanted, np.float64(score) - np.log(-np.log(uniform)), column)


@njit(cache=True)
def _keyed_row(scores, row, wanted, key, user, goods, out, best_scores, best_columns, bound, bad):
    """out[row, :wanted] = the columns of the largest scores[row, j] + Gumbel(key, user, good j),
    best first (`goods`: each column's good, mixed once, `mix(serial + GOLDEN)`); -inf columns are
    never taken. The Gumbel-top-k trick: the same law as successive softmax sampling without
    replacement (Kool et al. 2019), with each (user, good) noise fixed.

    Once `wanted` columns are kept, a column must beat the worst kept; its bound from
    `_noise_bounds` (one vectorized pass) rules out nearly every column with one comparison, and
    only the rest get their exact Gumbel. The bounds only skip columns that could not enter, so the
    picks are those of offering every column in turn. A row with NaN or +inf is marked in `bad`
    and left unpicked."""
    user_bits = _mix_scalar(np.uint64(key) ^ _mix_scalar(np.uint64(user) + np.uint64(0x9E3779B97F4A7C15)))
    if _noise_bounds(scores, row, user_bits, goods, bound):
        bad[row] = True
        return
    columns = scores.shape[1]
    kept = 0
    column = 0
    while kept < wanted and column < columns:
        kept = _offer_noisy(scores, row, column, user_bits, goods, kept, wanted, best_scores, best_columns)
        column += 1
    worst = best_scores[wanted - 1] if kept == wanted else np.inf
    for column in range(column, columns):
        if bound[column] > worst:
            kept = _offer_noisy(scores, row, column, user_bits, goods, kept, wanted, best_scores, best_columns)
            worst = best_scores[wanted - 1]
    for slot in range(kept):
        out[row, slot] = best_columns[slot]


@njit(cache=True)
def _keyed_span(scores, counts, key, users, goods, out, bad, low, high):
    best_scores = np.empty(out.shape[1])
    best_columns = np.empty(out.shape[1], dtype=np.int64)
    bound = np.empty(scores.shape[1])
    for row in range(low, high):
        if counts[row] > 0:
            _keyed_row(scores, row, counts[row], key, users[row], goods, out, best_scores, best_columns, bound, bad)
        else:
            for column in range(scores.shape[1]):
                bad[row] |= not scores[row, column] < np.inf


@njit(cache=True, parallel=True)
def _keyed_spans_parallel(scores, counts, key, users, goods, out, bad, spans):
    rows = scores.shape[0]
    for span in prange(spans):
        _keyed_span(scores, counts, key, users, goods, out, bad, span * rows // spans, (span + 1) * rows // spans)


def keyed_sample(scores: np.ndarray, counts: np.ndarray, draws: EntityDraws, users: np.ndarray, goods: np.ndarray) -> np.ndarray:
    """counts[i] distinct columns per row, P ∝ softmax(scores[i]) without replacement, in feed
    order, -1 padded; the noise of (user, good) is keyed by `users` (one id per row) and `goods`
    (one name per column), so a good added or dropped elsewhere changes no other pick's odds."""
    rows, columns = scores.shape
    width = min(int(counts.max(initial=0)), columns)
    picked = np.full((rows, width), -1, dtype=np.int64)
    if width == 0:
        return picked
    bad = np.zeros(rows, dtype=np.bool_)  # rows with NaN or +inf, found by the kernel's first pass
    arguments = (np.ascontiguousarray(scores), np.minimum(counts, width).astype(np.int64), np.uint64(draws.key), users.astype(np.int64), mix(goods.astype(np.int64).astype(np.uint64) + GOLDEN), picked, bad)
    spans = _spans(rows)  # a row's picks depend on its own ids only, whichever range it falls in
    if spans:
        _keyed_spans_parallel(*arguments, spans)
    else:
        _keyed_span(*arguments, 0, rows)
    if bad.any():
        raise NonFiniteScores(np.flatnonzero(bad))
    return picked
