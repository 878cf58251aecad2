"""Drawing agents: the initial market, and the users, creators and goods that join it later.

Interests, niches, goods' keys and advertisers' targets are unit vectors clustered around a
few topic centres, so the market has structure (niches, crowded topics) rather than noise.
"""

from __future__ import annotations

import numpy as np

from simulator.market.adversaries import (
    draw_bots,
    draw_creator_identities,
    draw_sybils_and_clients,
)
from simulator.market.ledger import Ledger
from simulator.market.state import (
    FLOAT,
    Advertisers,
    Creators,
    Goods,
    HomogenizationSample,
    MarketState,
    UidIndex,
    Users,
)
from simulator.scenario.schema import Scenario

STREAM_ENTROPY_WORDS = 4  # 64-bit words drawn from the parent generator to seed a family of streams


def spawn_streams(rng: np.random.Generator, count: int) -> list[np.random.Generator]:
    """`count` independent generators spawned (numpy SeedSequence) from a fixed-size draw of `rng`.

    The parent advances by the same amount whatever the children draw, so when one rule makes a
    stage (or a population) draw more or fewer numbers, every other stream, and every later tick,
    draws exactly what it would have: the common random numbers that pair the arms of a sweep."""
    entropy = [int(word) for word in rng.integers(0, 2**63, size=STREAM_ENTROPY_WORDS, dtype=np.int64)]
    return [np.random.Generator(np.random.PCG64(child)) for child in np.random.SeedSequence(entropy).spawn(count)]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(FLOAT)


def around(centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors scattered around `centres` (one per row); `spread` ~ the angle's scale."""
    noise = rng.standard_normal(centres.shape) / np.sqrt(centres.shape[1])
    return unit_rows(centres + spread * noise)


def topic_centres(scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """The topic centres, unit rows laid out by `topics.geometry`.

    random: independent uniform directions; orthogonal: a random orthonormal set (QR of a Gaussian
    matrix); simplex: the vertices of a regular simplex centred at the origin (pairwise cosine
    −1/(K − 1)), written in an orthonormal basis of the plane orthogonal to (1, …, 1) and rotated
    into d dimensions by a random orthonormal map."""
    clusters, dim = scenario.topics.clusters, scenario.embedding_dim
    geometry = scenario.topics.geometry
    if geometry == "random" or clusters == 1:
        return unit_rows(rng.standard_normal((clusters, dim)))
    if geometry == "orthogonal":
        return unit_rows(random_orthonormal(dim, clusters, rng).T)
    # Columns of `basis` span the complement of (1, …, 1) in K dimensions, so its rows are the
    # centred simplex vertices e_i − 1/K in K − 1 coordinates.
    basis = np.linalg.qr(np.eye(clusters) - 1.0 / clusters)[0][:, : clusters - 1]
    return unit_rows(basis @ random_orthonormal(dim, clusters - 1, rng).T)


def random_orthonormal(dim: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """A (dim, columns) matrix with orthonormal columns, uniformly rotated (QR of a Gaussian, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, columns)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]


def draw_clusters(count: int, clusters: int, weights: list[float] | None, rng: np.random.Generator) -> np.ndarray:
    """The topic cluster of each of `count` new agents: cluster c with probability weights[c], uniform when None."""
    if weights is None:
        return rng.integers(clusters, size=count)
    shares = np.asarray(weights, dtype=np.float64)
    return rng.choice(clusters, size=count, p=shares / shares.sum())


def lognormal_int(median: float, sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.maximum(1, np.rint(median * np.exp(sigma * rng.standard_normal(size)))).astype(np.int64)


def add_users(state: MarketState, count: int, scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """Append `count` users; returns their rows. Their starting wallets are injected money."""
    cfg = scenario.population.users
    rows = np.arange(state.users_born, state.users_born + count)
    state.users.ensure_capacity(state.users_born + count)
    state.ledger.ensure_capacity("users", state.users.capacity())
    users = state.users
    centres = state.topic_centres[draw_clusters(count, len(state.topic_centres), scenario.topics.weights, rng)]
    interest = around(centres, cfg.interest_spread, rng)
    users.interest[rows] = interest
    # The platform starts from a noisy sign-up profile, not the truth.
    users.query[rows] = around(interest, scenario.allocation.profile_noise, rng)
    users.budget[rows] = np.minimum(lognormal_int(cfg.budget.median, cfg.budget.sigma, count, rng), cfg.budget_max)
    users.activity[rows] = np.clip(cfg.activity + 0.1 * rng.standard_normal(count), 0.05, 1.0)
    users.alive[rows] = True
    draw_bots(state, rows, scenario)
    state.users_born += count
    return rows


def add_creators(
    state: MarketState, count: int, scenario: Scenario, rng: np.random.Generator, imitate: np.ndarray | None = None
) -> np.ndarray:
    """Append `count` creators; those given a row in `imitate` start near that creator's niche."""
    cfg = scenario.population.creators
    rows = np.arange(state.creators_born, state.creators_born + count)
    state.creators.ensure_capacity(state.creators_born + count)
    state.ledger.ensure_capacity("creators", state.creators.capacity())
    creators = state.creators
    if cfg.niches == "clustered":
        centres = state.topic_centres[draw_clusters(count, len(state.topic_centres), scenario.topics.creator_weights, rng)]
        spread = np.full(count, cfg.topic_spread)
    else:  # random niches: uniform on the sphere (a zero centre with a huge spread is the same direction law)
        centres = np.zeros((count, scenario.embedding_dim), dtype=FLOAT)
        spread = np.ones(count)
    if imitate is not None:
        copying = imitate >= 0
        centres[copying] = creators.topic[imitate[copying]]
        spread[copying] = cfg.topic_spread
    creators.topic[rows] = around(centres, spread[:, None], rng)
    creators.quality[rows] = np.clip(cfg.quality_mean + cfg.quality_sd * rng.standard_normal(count), 0.01, 1.0)
    creators.publish_rate[rows] = cfg.publish_rate * rng.gamma(4.0, 0.25, size=count)
    creators.clickbait[rows] = (rng.random(count) < cfg.clickbait_share).astype(FLOAT)
    creators.alive[rows] = True
    creators.profit_ema[rows] = 0.0
    creators.loss_streak[rows] = 0
    creators.share_ema[rows] = -1.0
    creators.born_tick[rows] = state.tick
    draw_creator_identities(state, rows, scenario)
    state.creators_born += count
    return rows


def meets_quality_bar(scenario: Scenario, quality: np.ndarray) -> np.ndarray:
    """Whether creators of effort `quality` meet the minimum-quality bar (`circulation.min_quality`):
    only those may publish and take part in the payout pool (see docs/rules/market_rules.md)."""
    return quality >= scenario.circulation.min_quality


def production_cost(scenario: Scenario, quality: np.ndarray) -> np.ndarray:
    """What one good costs its creator: a fixed part plus effort that grows with quality squared."""
    cfg = scenario.population.creators
    return (cfg.cost_per_good + np.rint(cfg.effort_cost * quality.astype(np.float64) ** 2)).astype(np.int64)


def publish(state: MarketState, owners: np.ndarray, scenario: Scenario, rng: np.random.Generator, lifetimes: np.ndarray) -> np.ndarray:
    """Place one new good per entry of `owners` into free catalogue rows; returns the rows."""
    cfg = scenario.population.goods
    goods = state.goods
    count = len(owners)
    free = np.flatnonzero(~goods.live)
    if len(free) < count:
        start = goods.capacity()
        goods.ensure_capacity(start + count - len(free))
        free = np.flatnonzero(~goods.live)
    rows = free[:count]
    goods.live[rows] = True
    goods.owner[rows] = owners
    goods.key[rows] = around(state.creators.topic[owners], cfg.key_noise, rng)
    goods.quality[rows] = np.clip(state.creators.quality[owners] + 0.05 * rng.standard_normal(count), 0.0, 1.0)
    goods.is_product[rows] = rng.random(count) < cfg.product_share
    goods.price[rows] = np.where(goods.is_product[rows], lognormal_int(cfg.price.median, cfg.price.sigma, count, rng), 0)
    goods.expires[rows] = state.tick + lifetimes
    goods.clickbait[rows] = state.creators.clickbait[owners]
    goods.exposures[rows] = 0
    goods.consumptions[rows] = 0
    goods.purchases[rows] = 0
    goods.value_delivered[rows] = 0.0
    goods.penalty[rows] = 1.0
    goods.clone[rows] = False
    goods.uid[rows] = state.uids.issue(rows)
    return rows


def retire_goods(state: MarketState, rows: np.ndarray) -> None:
    """Take goods off the catalogue (expired, or their creator left)."""
    state.goods.live[rows] = False
    state.uids.row_of[state.goods.uid[rows]] = -1


def initial_state(scenario: Scenario, rng: np.random.Generator) -> MarketState:
    """The market at tick 0: populations drawn, wallets endowed, the catalogue stocked.

    Topics, users, creators, advertisers, goods and the homogenization sample each draw from their
    own stream (`spawn_streams`), so changing one population's size leaves the others as they were."""
    topics_rng, users_rng, creators_rng, ads_rng, goods_rng, pairs_rng = spawn_streams(rng, 6)
    pop = scenario.population
    dim = scenario.embedding_dim
    memory = scenario.allocation.consumed_memory
    ledger = Ledger({"platform": 1, "fraudsters": 1})
    state = MarketState(
        tick=0,
        users=Users.empty(pop.users.count, dim, history_width=memory),
        creators=Creators.empty(pop.creators.count, dim),
        goods=Goods.empty(max(pop.goods.initial, 16), dim),
        advertisers=Advertisers.empty(pop.advertisers.count, dim, arm_weights_width=pop.advertisers.learning_arms),
        ledger=ledger,
        uids=UidIndex(),
        topic_centres=topic_centres(scenario, topics_rng),
        homogenization=HomogenizationSample(np.zeros((0, 2), dtype=np.int64), {}, np.random.default_rng(0), 0, None),
        users_born=0,
        creators_born=0,
    )
    user_rows = add_users(state, pop.users.count, scenario, users_rng)
    ledger.endow("users", user_rows, pop.users.initial_wallet)
    creator_rows = add_creators(state, pop.creators.count, scenario, creators_rng)
    draw_sybils_and_clients(state, creator_rows, scenario)
    ledger.endow("creators", creator_rows, pop.creators.initial_wallet)
    ledger.endow("platform", np.zeros(1, dtype=np.int64), scenario.circulation.platform_initial_wallet)

    ads = pop.advertisers
    ledger.ensure_capacity("advertisers", ads.count)
    if ads.count:
        centres = state.topic_centres[draw_clusters(ads.count, len(state.topic_centres), scenario.topics.advertiser_weights, ads_rng)]
        state.advertisers.targeting[:] = around(centres, ads.targeting_spread, ads_rng)
        values = lognormal_int(ads.value_per_click.median, ads.value_per_click.sigma, ads.count, ads_rng)
        state.advertisers.value_per_click[:] = values
        state.advertisers.budget_per_tick[:] = ads.budget_per_tick
        ledger.endow("advertisers", np.arange(ads.count), ads.total_budget)

    if pop.goods.initial:
        owners = goods_rng.integers(pop.creators.count, size=pop.goods.initial)
        # Staggered ages so the catalogue does not expire all at once; each initial good is
        # visible for 1..lifetime ticks (a good leaves at the start of its expiry tick).
        lifetimes = goods_rng.integers(2, pop.goods.lifetime + 2, size=pop.goods.initial)
        publish(state, owners, scenario, goods_rng, lifetimes)

    metrics = scenario.metrics
    state.homogenization = HomogenizationSample(
        pairs=np.zeros((0, 2), dtype=np.int64),
        consumed={},
        rng=np.random.default_rng(int(pairs_rng.integers(2**63))),
        target=metrics.homogenization_pairs,
        window=metrics.homogenization_window,
    )
    refresh_homogenization_pairs(state)
    return state


def refresh_homogenization_pairs(state: MarketState) -> None:
    """Keep the homogenization sample on users alive now: drop pairs with a user who left and
    draw fresh pairs of distinct alive users (arrivals included) up to the target count.

    A newly sampled user's consumed set starts from its memory of recent consumptions
    (`users.history`, the last `allocation.consumed_memory` goods), dated this tick: the
    simulator keeps no longer record per user, and a user who joined recently has it all."""
    sample = state.homogenization
    alive = state.users.alive
    kept = sample.pairs[alive[sample.pairs].all(axis=1)] if len(sample.pairs) else sample.pairs
    candidates = np.flatnonzero(alive[: state.users_born])
    missing = sample.target - len(kept)
    if missing > 0 and len(candidates) >= 2:
        first = sample.rng.integers(len(candidates), size=missing)
        second = (first + sample.rng.integers(1, len(candidates), size=missing)) % len(candidates)
        kept = np.concatenate([kept, np.stack([candidates[first], candidates[second]], axis=1)])
    sample.pairs = kept.astype(np.int64)
    members = set(np.unique(sample.pairs).tolist())
    for gone in [user for user in sample.consumed if user not in members]:
        del sample.consumed[gone]
    for user in members - sample.consumed.keys():
        remembered = state.users.history[user]
        sample.consumed[user] = {int(uid): state.tick for uid in remembered[remembered >= 0]}
