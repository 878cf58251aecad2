"""The knobs published setups need (issue 15): topic weights and geometry, creators' starting
niches, the choice among what is shown, viability exits and pay per exposure. Each does what it
says, refuses bad input at its key, and leaves the default scenario's results as they were."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, fresh_state, run_stages, tiny
from scipy import stats
from typer.testing import CliRunner

from simulator.cli.main import app
from simulator.market.ledger import split_exactly
from simulator.market.populations import draw_clusters, topic_centres
from simulator.model import AttentionMarket, advance
from simulator.rules import RuleSet
from simulator.rules.payout import contributions
from simulator.scenario.schema import ScenarioError, load_scenario, with_overrides
from simulator.stages.adaptation import _AudienceModel
from simulator.stages.circulation import _settle_creators, viability_shares
from simulator.stages.exposure_pay import effective_rates

# --- topics.weights, creator_weights, advertiser_weights -------------------------------------------------

SKEWED = [0.55, 0.25, 0.12, 0.08]


def run_metrics(scenario):
    """The metrics frame of a whole run (the model checks the invariants every tick)."""
    model = AttentionMarket(scenario)
    for _ in range(scenario.ticks):
        model.step()
    return model.metrics


def issues_of(source, overrides=None):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(source, overrides)
    return caught.value.issues


def nearest_cluster(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmax(vectors @ centres.T, axis=1)


def test_drawn_clusters_follow_the_weights_by_a_chi_square_test():
    drawn = draw_clusters(200_000, 4, SKEWED, np.random.default_rng(1))
    counts = np.bincount(drawn, minlength=4)
    assert stats.chisquare(counts, np.asarray(SKEWED) * len(drawn)).pvalue > 1e-3
    # and a skew as small as 0.01 of a share is detected: the test has power
    shifted = np.bincount(draw_clusters(200_000, 4, [0.54, 0.26, 0.12, 0.08], np.random.default_rng(1)), minlength=4)
    assert stats.chisquare(shifted, np.asarray(SKEWED) * len(drawn)).pvalue < 1e-6


def test_realised_shares_of_users_creators_and_advertisers_follow_their_weights():
    # Orthogonal centres and tight spreads: each agent's nearest centre is its cluster.
    scenario = tiny(
        {
            "embedding_dim": 8,
            "topics.clusters": 4,
            "topics.geometry": "orthogonal",
            "topics.weights": SKEWED,
            "topics.creator_weights": [0.1, 0.2, 0.3, 0.4],
            "topics.advertiser_weights": [0.0, 0.0, 1.0, 0.0],
            "population.users.count": 20_000,
            "population.users.interest_spread": 0.1,
            "population.creators.count": 4_000,
            "population.creators.topic_spread": 0.1,
            "population.advertisers.count": 50,
            "population.advertisers.targeting_spread": 0.1,
        }
    )
    state = fresh_state(scenario)
    users = np.bincount(nearest_cluster(state.users.interest[: state.users_born], state.topic_centres), minlength=4)
    creators = np.bincount(nearest_cluster(state.creators.topic[: state.creators_born], state.topic_centres), minlength=4)
    advertisers = np.bincount(nearest_cluster(state.advertisers.targeting, state.topic_centres), minlength=4)
    np.testing.assert_allclose(users / users.sum(), SKEWED, atol=0.01)
    np.testing.assert_allclose(creators / creators.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.02)
    assert advertisers.tolist() == [0, 0, 50, 0]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5, 0.5, 0.1, -0.1], "greater than or equal to 0"),
        ([0.5, 0.3, 0.1, 0.05], "sum to 0.95"),
        ([0.5, 0.5], "2 weights for 4 topics.clusters"),
    ],
)
@pytest.mark.parametrize("key", ["weights", "creator_weights", "advertiser_weights"])
def test_bad_weights_are_refused_at_their_key(tmp_path, key, weights, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"topics:\n  clusters: 4\n  {key}: {weights}\n")
    (issue,) = issues_of(path)
    assert issue.key.startswith(f"topics.{key}") and message in issue.message
    assert (issue.source, issue.line) == (str(path), 3)


def test_bad_weights_exit_2_with_a_located_error_on_the_command_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntopics:\n  clusters: 3\n  weights: [0.6, 0.3, 0.3]\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:4:3: topics.weights: the weights sum to 1.2" in result.stderr


def test_weights_written_with_decimals_that_round_are_accepted():
    scenario = tiny({"topics.clusters": 3, "topics.weights": [0.1, 0.2, 0.7]})  # sums to 0.9999999999999999
    assert scenario.topics.weights == [0.1, 0.2, 0.7]


# --- topics.geometry, population.creators.niches ---------------------------------------------------------


def centres_of(overrides: dict) -> np.ndarray:
    return topic_centres(tiny(overrides), np.random.default_rng(5))


@pytest.mark.parametrize(("clusters", "dim"), [(1, 4), (3, 8), (8, 8), (5, 16)])
def test_orthogonal_centres_are_orthonormal(clusters, dim):
    centres = centres_of({"embedding_dim": dim, "topics.clusters": clusters, "topics.geometry": "orthogonal"})
    np.testing.assert_allclose(centres @ centres.T, np.eye(clusters), atol=1e-5)


@pytest.mark.parametrize(("clusters", "dim"), [(2, 4), (4, 8), (9, 8), (6, 16)])
def test_simplex_centres_are_equiangular_at_minus_one_over_k_minus_one(clusters, dim):
    centres = centres_of({"embedding_dim": dim, "topics.clusters": clusters, "topics.geometry": "simplex"})
    gram = centres @ centres.T
    expected = np.full((clusters, clusters), -1.0 / (clusters - 1))
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(gram, expected, atol=1e-5)
    np.testing.assert_allclose(centres.sum(axis=0), 0.0, atol=1e-5)  # centred at the origin


def test_random_centres_are_today_s_draw():
    scenario = tiny({"topics.clusters": 5})
    rng = np.random.default_rng(5)
    expected = np.random.default_rng(5).standard_normal((5, scenario.embedding_dim))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(topic_centres(scenario, rng), expected, rtol=1e-6)


@pytest.mark.parametrize(("geometry", "clusters", "needed"), [("orthogonal", 9, 9), ("simplex", 10, 9)])
def test_geometry_that_does_not_fit_the_dimension_is_refused_at_its_key(tmp_path, geometry, clusters, needed):
    path = tmp_path / "bad.yaml"
    path.write_text(f"embedding_dim: 8\ntopics:\n  clusters: {clusters}\n  geometry: {geometry}\n")
    (issue,) = issues_of(path)
    assert issue.key == "topics.geometry" and (issue.line, issue.column) == (4, 3)
    assert f"need embedding_dim ≥ {needed} (it is 8)" in issue.message


def test_a_misspelt_geometry_names_the_choices():
    (issue,) = issues_of(dict(TINY, topics={"geometry": "orthogonl"}))
    assert issue.key == "topics.geometry" and "did you mean 'orthogonal'" in issue.message


def test_random_niches_ignore_the_topic_centres_and_clustered_ones_follow_them():
    overrides = {
        "embedding_dim": 8,
        "topics.clusters": 2,
        "topics.geometry": "orthogonal",
        "population.creators.count": 4_000,
        "population.creators.topic_spread": 0.1,
    }
    clustered = fresh_state(tiny(overrides))
    spread = fresh_state(tiny({**overrides, "population.creators.niches": "random"}))
    best_cos = lambda state: (state.creators.topic[: state.creators_born] @ state.topic_centres.T).max(axis=1)  # noqa: E731
    assert best_cos(clustered).min() > 0.9
    random_best = best_cos(spread)
    assert np.median(random_best) < 0.6
    # uniform on the sphere: the cosine with any fixed direction has mean 0 and variance 1/d
    cos = spread.creators.topic[: spread.creators_born] @ spread.topic_centres[0]
    assert abs(cos.mean()) < 0.02 and abs(cos.var() - 1 / 8) < 0.01
    np.testing.assert_allclose(np.linalg.norm(spread.creators.topic[: spread.creators_born], axis=1), 1.0, atol=1e-5)


def test_random_niches_with_creator_weights_are_refused():
    (issue,) = issues_of(dict(TINY, topics={"clusters": 2, "creator_weights": [0.5, 0.5]}), {"population.creators.niches": "random"})
    assert issue.key == "population.creators.niches" and "creator_weights" in issue.message


# --- population.creators.exit: viability by engagement or exposure share ---------------------------------


def settle_ticks(scenario, shares: np.ndarray, ticks: int) -> list[set[int]]:
    """Settle `ticks` ticks with the same per-creator shares and zero profit; the rows alive after each."""
    state = fresh_state(scenario)
    alive = []
    for _ in range(ticks):
        _settle_creators(state, np.zeros(state.creators_born), scenario, shares)
        alive.append(set(np.flatnonzero(state.creators.alive[: state.creators_born]).tolist()))
    return alive


@pytest.mark.parametrize("rule", ["engagement_share", "exposure_share"])
def test_a_creator_just_below_the_threshold_leaves_after_patience_and_one_just_above_never(rule):
    nu, patience = 0.05, 4
    scenario = tiny({"population.creators.exit": {"rule": rule, "min_share": nu, "patience": patience, "smoothing": 0.3},
                     "population.goods.initial": 400})  # every creator has goods on offer
    count = scenario.population.creators.count
    shares = np.full(count, (1.0 - nu - 1e-4 - (nu - 1e-4)) / (count - 2))
    shares[0], shares[1] = nu + 1e-4, nu - 1e-4
    alive = settle_ticks(scenario, shares, 3 * patience)
    assert all(0 in tick for tick in alive)
    assert [1 in tick for tick in alive] == [True] * (patience - 1) + [False] * (2 * patience + 1)


def test_the_smoothed_share_forgives_a_short_dip_but_not_a_lasting_one():
    scenario = tiny({"population.creators.exit": {"rule": "engagement_share", "min_share": 0.04, "patience": 3, "smoothing": 0.5},
                     "population.goods.initial": 400})
    state = fresh_state(scenario)
    count = state.creators_born
    share = np.full(count, 1.0 / count)  # 0.05 each
    dip = share.copy()
    dip[0] = 0.02  # one bad tick: 0.05 -> 0.035 < 0.04, then back above: 0.0425
    for shares in [share, dip, share, share, share]:
        _settle_creators(state, np.zeros(count), scenario, shares)
    assert state.creators.alive[0]
    for _ in range(3):  # a lasting collapse: three ticks below
        _settle_creators(state, np.zeros(count), scenario, np.where(np.arange(count) == 0, 0.0, share))
    assert not state.creators.alive[0]


def test_viability_shares_are_each_creator_s_share_of_the_tick():
    scenario = tiny()
    state = fresh_state(scenario)
    outcome = run_stages(state, scenario, np.random.default_rng(3))
    allocation, consumption = outcome.allocation, outcome.consumption
    engaged = viability_shares(state, allocation, consumption, "engagement_share")
    exposed = viability_shares(state, allocation, consumption, "exposure_share")
    assert viability_shares(state, allocation, consumption, "profit") is None
    assert engaged.sum() == pytest.approx(1.0) and exposed.sum() == pytest.approx(1.0)
    owners = state.goods.owner[allocation.exposures[consumption.consumed]]
    assert engaged[3] == pytest.approx(np.count_nonzero(owners == 3) / len(owners))


def test_a_viability_exit_rule_in_a_run_removes_the_creators_below_the_threshold():
    def exits(exit_cfg):
        return int(run_metrics(tiny({"ticks": 12, "population.creators.exit": exit_cfg}))["creator_exits"].sum())

    strict = exits({"rule": "exposure_share", "min_share": 0.06, "patience": 3})  # 20 creators: 0.05 is an equal share
    lenient = exits({"rule": "exposure_share", "min_share": 0.0, "patience": 3})
    assert strict >= 8 > lenient


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused_at_its_key(tmp_path, value):
    path = tmp_path / "bad.yaml"
    path.write_text(f"population:\n  creators:\n    exit:\n      rule: engagement_share\n      min_share: {value}\n")
    (issue,) = issues_of(path)
    assert issue.key == "population.creators.exit.min_share" and issue.line == 5


# --- circulation.exposure_pay: a direct pay-per-exposure source -------------------------------------------


def test_pay_per_exposure_and_engagement_is_exact_and_conserves_money():
    rate, engaged_rate = 7, 11
    scenario = tiny({"circulation.exposure_pay": {"per_exposure": rate, "per_engagement": engaged_rate}, "population.goods.initial": 200})
    state = fresh_state(scenario)
    rng = np.random.default_rng(4)
    for _ in range(3):
        wallets_before = state.ledger.balances["creators"][: state.creators_born].copy()
        outcome = run_stages(state, scenario, rng)
        flows = state.ledger.take_flows()
        allocation, consumption = outcome.allocation, outcome.consumption
        exposures = np.count_nonzero(allocation.exposures >= 0)
        consumptions = np.count_nonzero(consumption.consumed)
        assert flows["exposure_pay"] == rate * exposures + engaged_rate * consumptions
        assert state.ledger.conservation_error() == 0
        # every creator's pay is its own goods' exposures and consumptions at the rates
        owners = state.goods.owner
        expected = rate * np.bincount(owners[allocation.exposures[allocation.exposures >= 0]], minlength=len(wallets_before))
        expected += engaged_rate * np.bincount(owners[allocation.exposures[consumption.consumed]], minlength=len(wallets_before))
        assert (outcome.settlement.creator_income[: len(wallets_before)] >= expected).all()
        assert outcome.settlement.exposure_pay_fill == 1.0


def test_a_binding_budget_is_paid_in_full_and_split_pro_rata_exactly():
    scenario = tiny({"circulation.exposure_pay": {"per_exposure": 50, "budget_per_tick": 1_001}})
    state = fresh_state(scenario)
    outcome = run_stages(state, scenario, np.random.default_rng(4))
    assert state.ledger.take_flows()["exposure_pay"] == 1_001
    owed = outcome.settlement.exposure_owed
    fill = outcome.settlement.exposure_pay_fill
    assert fill == pytest.approx(1_001 / owed.sum())
    per_creator = np.bincount(state.goods.owner[np.flatnonzero(owed)], weights=owed[np.flatnonzero(owed)], minlength=state.creators_born)
    paid = split_exactly(1_001, per_creator)
    assert paid.sum() == 1_001 and np.all(np.abs(paid - per_creator * fill) < 1)
    assert state.ledger.conservation_error() == 0


def test_pay_per_exposure_is_off_by_default_and_its_metric_is_recorded():
    default = run_metrics(tiny({"ticks": 3}))
    paid = run_metrics(tiny({"ticks": 3, "circulation.exposure_pay.per_exposure": 5}))
    assert (default["exposure_pay"] == 0).all()
    assert (paid["exposure_pay"] == 5 * paid["attention_allocated"] - 5 * paid["ad_impressions"]).all()
    assert (paid["money_conservation_error"] == 0).all()


def test_clones_and_creators_under_the_quality_bar_earn_no_pay_per_exposure():
    scenario = tiny({"circulation.exposure_pay.per_exposure": 5, "circulation.min_quality": 0.5, "population.goods.initial": 200})
    state = fresh_state(scenario)
    outcome = run_stages(state, scenario, np.random.default_rng(2))
    under = state.creators.quality[: state.creators_born] < 0.5
    assert under.any()
    earned = np.bincount(state.goods.owner[np.flatnonzero(outcome.settlement.exposure_owed)], minlength=state.creators_born)
    assert not earned[under].any() and earned[~under].any()


def market_model(scenario, per_exposure: int):
    """The adapting creators' market model after one tick of `scenario`, paid `per_exposure`."""
    scenario = with_overrides(scenario, {"circulation.exposure_pay.per_exposure": per_exposure})
    state = fresh_state(scenario)
    rules = RuleSet.of(scenario)
    outcome = advance(state, scenario, rules, np.random.default_rng(6))
    settlement = outcome.settlement
    rates = effective_rates(scenario.circulation.exposure_pay, settlement.exposure_pay_fill)
    rows = np.flatnonzero(state.creators.alive[: state.creators_born])
    owners, values = contributions(state, outcome.allocation, outcome.consumption)
    users = outcome.allocation.users
    return state, rows, _AudienceModel(state, rows, users, (owners, values), len(users), 0.0, rules, scenario, rates)


def test_an_adapting_creator_s_expected_gain_rises_with_per_exposure():
    scenario = tiny({"population.creators.adaptation.rule": "best_response"})
    gains = []
    for rate in (0, 5, 20):
        state, rows, model = market_model(scenario, rate)
        topics = state.creators.topic[rows][:, None, :]
        quality = state.creators.quality[rows][:, None].astype(np.float64)
        gains.append(model.expected_profit(topics, quality)[:, 0])
    exposures = (gains[1] - gains[0]) / 5
    assert (exposures > 0).all()  # every creator expects some exposure
    np.testing.assert_allclose(gains[2] - gains[0], 20 * exposures, rtol=1e-6)  # linear in the rate


def test_best_responding_creators_raise_effort_when_paid_per_engagement():
    """The incentive reaches the agents: paid per consumption (which rises with quality), creators
    that best-respond with no payout pool choose more effort than unpaid ones."""

    def mean_quality(per_engagement):
        overrides = {"ticks": 8, "population.creators.adaptation.rule": "best_response", "circulation.creator_payout.pool_share": 0.0,
                     "circulation.exposure_pay.per_engagement": per_engagement}
        model = AttentionMarket(tiny(overrides))
        for _ in range(8):
            model.step()
        creators, born = model.market.creators, model.market.creators_born
        return float(creators.quality[:born][creators.alive[:born]].mean())

    assert mean_quality(1_000) > mean_quality(0) + 0.05


def test_a_budget_without_a_rate_is_refused():
    (issue,) = issues_of(dict(TINY, circulation={"exposure_pay": {"budget_per_tick": 100}}))
    assert issue.key == "circulation.exposure_pay.budget_per_tick" and "pays nothing" in issue.message
