"""Entity-keyed draws (simulator/market/streams.py): the synchronised common random numbers
that keep two arms of a sweep on the same shocks wherever their rules leave them alike."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.stats
from conftest import tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.market.kernels import NonFiniteScores
from simulator.market.populations import retire_goods
from simulator.market.streams import GOLDEN, EntityDraws, bits_to_uniform, keyed_bits, keyed_sample, mix, serials
from simulator.model import AttentionMarket, advance


def test_keyed_draws_depend_on_the_key_and_the_ids_only():
    draws = EntityDraws(12345)
    ids = np.arange(1000)
    np.testing.assert_array_equal(draws.uniform(ids), EntityDraws(12345).uniform(ids))
    # an entity's draw does not depend on which other entities are drawn with it, nor their order
    np.testing.assert_array_equal(draws.uniform(ids[::-7]), draws.uniform(ids)[::-7])
    assert draws.uniform(ids[500:501])[0] == draws.uniform(ids)[500]
    assert not np.array_equal(draws.uniform(ids), EntityDraws(12346).uniform(ids))
    assert not np.array_equal(draws.stream("taste").uniform(ids), draws.stream("click").uniform(ids))
    # two id dimensions are not interchangeable
    assert draws.uniform(3, 5) != draws.uniform(5, 3)


def numpy_keyed_bits(key, *ids):
    """The keyed bits' definition, in numpy: the key mixed with each id's splitmix64 in turn."""
    bits = np.asarray(np.uint64(key))
    for part in ids:
        with np.errstate(over="ignore"):
            bits = mix(bits ^ mix(np.asarray(part).astype(np.int64).astype(np.uint64) + GOLDEN))
    return np.asarray(bits, dtype=np.uint64)


@pytest.mark.parametrize(
    "ids",
    [(), (5,), (np.arange(-500, 500) * 10**9,), (np.arange(777), np.arange(777) * 3 + 2**40),
     (np.arange(50)[:, None], np.arange(7)[None, :]), (np.arange(10), 3, np.arange(10) * 2),
     (np.arange(20, dtype=np.int32), np.arange(20, dtype=np.uint8)), (np.zeros(0, dtype=np.int64),), (True,)],
)
def test_the_compiled_keyed_draws_are_their_numpy_definition(ids):
    """Same bits and uniforms, shapes and dtypes, for scalars, broadcasting, negative and narrow ids."""
    for key in (0, 12345, 2**63 - 1):
        expected = numpy_keyed_bits(key, *ids)
        got = keyed_bits(key, *ids)
        assert got.dtype == np.uint64 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(EntityDraws(key).uniform(*ids), bits_to_uniform(expected))


def test_keyed_uniforms_normals_and_logistics_follow_their_laws():
    draws = EntityDraws(2024).stream("law")
    users, goods = np.meshgrid(np.arange(400), np.arange(250), indexing="ij")
    uniform = draws.uniform(users, goods).ravel()
    assert 0.0 < uniform.min() and uniform.max() < 1.0
    assert scipy.stats.kstest(uniform, "uniform").pvalue > 1e-3
    assert scipy.stats.kstest(draws.normal(users, goods).ravel(), "norm").pvalue > 1e-3
    assert scipy.stats.kstest(draws.logistic(0.5, users, goods).ravel(), "logistic", args=(0.0, 0.5)).pvalue > 1e-3
    # neighbouring ids are not correlated
    assert abs(np.corrcoef(uniform[:-1], uniform[1:])[0, 1]) < 0.01


@given(st.floats(0.0, 30.0), st.floats(0.0, 30.0))
@settings(max_examples=30, deadline=None)
def test_keyed_poisson_counts_are_monotone_in_the_mean(low, high):
    """Inversion couples counts: a creator whose rate rises never publishes fewer goods."""
    low, high = sorted((low, high))
    draws = EntityDraws(9).stream("count")
    ids = np.arange(500)
    assert (draws.poisson(np.full(500, low), ids) <= draws.poisson(np.full(500, high), ids)).all()


def test_keyed_poisson_counts_have_the_poisson_law():
    counts = EntityDraws(5).poisson(np.full(50_000, 2.5), np.arange(50_000))
    assert abs(counts.mean() - 2.5) < 0.05 and abs(counts.var() - 2.5) < 0.08


@pytest.mark.parametrize(("columns", "scale", "ties"), [(40, 3, False), (3000, 3, False), (500, 0.01, False), (500, 30, False), (800, 2, True)])
def test_the_compiled_sampler_adds_the_numpy_keyed_gumbel_noise(columns, scale, ties):
    """Its shortcuts (columns whose bounded noise cannot beat the worst kept are dropped without
    their Gumbel) drop none that belongs, at flat and steep scores and with ties."""
    rng = np.random.default_rng(columns)
    scores = (scale * rng.normal(size=(30, columns))).astype(np.float32)
    if ties:
        scores = np.round(scores)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    users, goods = rng.integers(0, 10**6, 30), rng.integers(0, 2**62, columns)
    counts = rng.integers(0, 8, 30)
    draws = EntityDraws(77)
    noisy = scores.astype(np.float64) - np.log(-np.log(draws.uniform(users[:, None], goods[None, :])))
    expected = np.argsort(-noisy, axis=1, kind="stable")
    picked = keyed_sample(scores, counts, draws, users, goods)
    for row in range(30):
        take = min(counts[row], int(np.isfinite(scores[row]).sum()))
        np.testing.assert_array_equal(picked[row, :take], expected[row, :take])
        assert (picked[row, take:] == -1).all()


def test_keyed_sampling_draws_in_proportion_to_the_softmax():
    """The first pick of a row follows softmax(scores), the later ones sampling without replacement."""
    with np.errstate(divide="ignore"):
        scores = np.log(np.array([[0.5, 0.3, 0.15, 0.05, 0.0]], dtype=np.float32))
    picks = np.array([keyed_sample(scores, np.array([2]), EntityDraws(seed), np.array([1]), np.arange(5))[0] for seed in range(6000)])
    assert (picks[:, 0] != picks[:, 1]).all() and (picks != 4).all()  # a zero weight is never drawn
    first = np.bincount(picks[:, 0], minlength=5)[:4]
    assert scipy.stats.chisquare(first, 6000 * np.array([0.5, 0.3, 0.15, 0.05])).pvalue > 1e-3
    # P(second = 1 | first = 0) = 0.3 / 0.5
    second = picks[picks[:, 0] == 0, 1]
    assert abs((second == 1).mean() - 0.6) < 0.04


def test_keyed_sampling_does_not_depend_on_threads():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(600, 300)).astype(np.float32)
    arguments = (scores, np.full(600, 7), EntityDraws(2), np.arange(600), rng.integers(0, 2**62, 300))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = keyed_sample(*arguments)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(keyed_sample(*arguments), serial)


def test_keyed_sampling_refuses_non_finite_scores():
    with pytest.raises(NonFiniteScores):
        keyed_sample(np.array([[0.0, np.nan]], dtype=np.float32), np.array([1]), EntityDraws(1), np.array([0]), np.arange(2))


@pytest.mark.parametrize("threads", [1, 2])
def test_keyed_sampling_names_every_row_with_nan_or_plus_infinity(threads):
    """Found in the kernel's first pass, rows drawing nothing included; −inf (a mask) is fine."""
    scores = np.zeros((400, 30), dtype=np.float32)
    scores[7, 3], scores[300, 1], scores[390, 2] = np.nan, np.inf, -np.inf
    counts = np.full(400, 3)
    counts[300] = 0
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        with pytest.raises(NonFiniteScores) as error:
            keyed_sample(scores, counts, EntityDraws(1), np.arange(400), np.arange(30))
    finally:
        numba.set_num_threads(previous)
    assert error.value.rows.tolist() == [7, 300]


def test_removing_a_good_changes_only_the_feeds_that_held_it():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(200, 50)).astype(np.float32)
    counts = np.full(200, 5)
    users, goods = np.arange(200), rng.integers(0, 2**62, 50)
    before = goods[keyed_sample(scores, counts, EntityDraws(3), users, goods)]
    keep = np.arange(50) != 17
    after = goods[keep][keyed_sample(scores[:, keep], counts, EntityDraws(3), users, goods[keep])]
    untouched = ~(before == goods[17]).any(axis=1)
    assert 100 < untouched.sum() < 200
    np.testing.assert_array_equal(before[untouched], after[untouched])


def test_a_goods_serial_names_its_owner_tick_and_rank_whatever_else_is_published():
    alone = serials(np.array([4, 4, 9]), tick=3)
    crowded = serials(np.array([1, 4, 2, 9, 4, 1]), tick=3)
    np.testing.assert_array_equal(alone, crowded[[1, 4, 3]])
    assert len(set(crowded.tolist())) == 6 and (crowded >= 0).all()
    assert serials(np.array([4]), tick=4)[0] != alone[0]


def _tick(model: AttentionMarket):
    return advance(model.market, model.config, model.rules, model.rng)


def test_one_creator_leaving_moves_no_other_agents_draws():
    """The synchronisation that pairs arms: remove one creator (and its goods) from an arm at tick 0.

    Every other creator then publishes the same goods, and every user whose feed held none of the
    removed creator's goods is shown the same goods and takes the same ones with the same utility.
    Drawn in order from one generator, the first difference shifted every later draw of the tick."""
    scenario = tiny({"population.creators.adaptation.rule": "static"})
    whole, without = AttentionMarket(scenario), AttentionMarket(scenario)
    gone = 3
    without.market.creators.alive[gone] = False
    retire_goods(without.market, np.flatnonzero(without.market.goods.live & (without.market.goods.owner == gone)))

    first, second = _tick(whole), _tick(without)
    goods_a, goods_b = whole.market.goods, without.market.goods
    published_a = {int(s): (int(goods_a.owner[r]), float(goods_a.quality[r]), int(goods_a.price[r])) for s, r in zip(goods_a.serial[first.arrivals.published], first.arrivals.published)}
    published_b = {int(s): (int(goods_b.owner[r]), float(goods_b.quality[r]), int(goods_b.price[r])) for s, r in zip(goods_b.serial[second.arrivals.published], second.arrivals.published)}
    assert {s: v for s, v in published_a.items() if v[0] != gone} == published_b
    np.testing.assert_array_equal(first.allocation.users, second.allocation.users)

    def feeds(outcome, goods):
        exposures = outcome.allocation.exposures
        return np.where(exposures >= 0, goods.serial[np.maximum(exposures, 0)], -1), np.where(exposures >= 0, goods.owner[np.maximum(exposures, 0)], -1)

    (serial_a, owner_a), (serial_b, _) = feeds(first, goods_a), feeds(second, goods_b)
    untouched = ~(owner_a == gone).any(axis=1)
    assert 0.5 < untouched.mean() < 1.0
    np.testing.assert_array_equal(serial_a[untouched], serial_b[untouched])
    np.testing.assert_array_equal(first.consumption.consumed[untouched], second.consumption.consumed[untouched])
    np.testing.assert_allclose(first.consumption.utility[untouched], second.consumption.utility[untouched], rtol=0, atol=1e-6)


def test_successive_sampling_is_the_faster_path_that_does_not_keep_feeds_in_step():
    """`allocation.sampling: successive` draws feeds in order: deterministic for a seed, but one
    creator fewer reshuffles feeds that never held its goods (what keyed sampling prevents)."""
    scenario = tiny({"population.creators.adaptation.rule": "static", "allocation.sampling": "successive"})
    whole, again, without = AttentionMarket(scenario), AttentionMarket(scenario), AttentionMarket(scenario)
    gone = 3
    without.market.creators.alive[gone] = False
    retire_goods(without.market, np.flatnonzero(without.market.goods.live & (without.market.goods.owner == gone)))
    first, repeat, second = _tick(whole), _tick(again), _tick(without)
    np.testing.assert_array_equal(first.allocation.exposures, repeat.allocation.exposures)
    serial_a = np.where(first.allocation.exposures >= 0, whole.market.goods.serial[np.maximum(first.allocation.exposures, 0)], -1)
    serial_b = np.where(second.allocation.exposures >= 0, without.market.goods.serial[np.maximum(second.allocation.exposures, 0)], -1)
    owner_a = np.where(first.allocation.exposures >= 0, whole.market.goods.owner[np.maximum(first.allocation.exposures, 0)], -1)
    untouched = ~(owner_a == gone).any(axis=1)
    assert (serial_a[untouched] != serial_b[untouched]).any(axis=1).mean() > 0.5
