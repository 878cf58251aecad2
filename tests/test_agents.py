"""Mesa agents as views over the arrays (simulator/agents.py): they agree with the state as
populations change, writes write through and keep invariants, money stays in the ledger, Mesa's
AgentSet idioms and DataCollector agent_reporters work, and a run nobody inspects is unchanged."""

from __future__ import annotations

import mesa
import numpy as np
import pytest

import simulator
from simulator.agents import Advertiser, AgentGone, Creator, Good, User
from simulator.model import AttentionMarket
from tests.conftest import tiny

# Arrivals, churn, creator entry and exit and goods expiring all happen within 40 ticks (at the
# default churn threshold 0–3 of the ~460 users leave, by chance of the draws: too few to count on).
CHURNING = {
    "ticks": 40,
    "population.users.arrivals_per_tick": 4.0,
    "population.creators.entry.rate": 0.2,
    "population.users.churn.threshold": 0.03,
}


def expected_keys(model: AttentionMarket) -> dict[type, set[int]]:
    market = model.market
    return {
        User: set(np.flatnonzero(market.users.alive[: market.users_born]).tolist()),
        Creator: set(np.flatnonzero(market.creators.alive[: market.creators_born]).tolist()),
        Good: set(market.goods.uid[market.goods.live].tolist()),
        Advertiser: set(range(market.advertisers.capacity())),
    }


def test_views_agree_with_the_arrays_through_arrivals_churn_entry_and_exit():
    model = AttentionMarket(tiny(CHURNING))
    seen: dict[type, set[int]] = {kind: set() for kind in (User, Creator, Good, Advertiser)}
    while model.running:
        model.step()
        if model.market.tick % 4:
            continue
        by_type = model.agents_by_type
        market = model.market
        for kind, keys in expected_keys(model).items():
            assert {agent.key for agent in by_type[kind]} == keys
            seen[kind] |= keys
        assert len(model.agents) == sum(len(keys) for keys in expected_keys(model).values())
        balances = market.ledger.balances
        for user in by_type[User]:
            assert user.budget == market.users.budget[user.key]
            assert user.wallet == balances["users"][user.key]
            np.testing.assert_array_equal(user.interest, market.users.interest[user.key])
        for creator in by_type[Creator]:
            assert creator.quality == pytest.approx(float(market.creators.quality[creator.key]))
            assert creator.wallet == balances["creators"][creator.key]
            owned = market.goods.live & (market.goods.owner == creator.key)
            assert creator.live_goods == int(owned.sum())
            assert creator.exposure == int(market.goods.exposures[owned].sum())
        for good in by_type[Good]:
            row = market.uids.row_of[good.uid]
            assert good.owner == market.goods.owner[row] and good.exposures == market.goods.exposures[row]
        for advertiser in by_type[Advertiser]:
            assert advertiser.wallet == balances["advertisers"][advertiser.key]
    market = model.market
    # the populations really changed: newcomers appeared, leavers disappeared
    assert market.users_born > 300 and not market.users.alive[: market.users_born].all()
    assert market.creators_born > 20 and not market.creators.alive[: market.creators_born].all()
    assert max(seen[User]) >= 300 and max(seen[Creator]) >= 20
    assert len(seen[User]) > len(expected_keys(model)[User])  # some seen users have left
    assert len(seen[Good]) > len(expected_keys(model)[Good])  # goods expired


def test_an_uninspected_run_has_no_views_and_inspection_changes_no_result():
    untouched = AttentionMarket(tiny(CHURNING))
    untouched.run_model()
    assert untouched._agent_views is None and len(untouched._all_agents) == 0

    inspected = AttentionMarket(tiny(CHURNING))
    while inspected.running:
        inspected.step()
        inspected.agents_by_type[User].shuffle_do(lambda user: user.wallet)
        inspected.agents.select(lambda agent: agent.alive).agg("key", sum)
    assert inspected.metrics.equals(untouched.metrics)


def test_sensible_writes_write_through_and_keep_invariants():
    model = AttentionMarket(tiny())
    model.step()
    user = model.agents_by_type[User].select(at_most=1).to_list()[0]
    user.interest = np.arange(8) + 1.0
    stored = model.market.users.interest[user.key]
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(stored, (np.arange(8) + 1.0) / np.linalg.norm(np.arange(8) + 1.0), rtol=1e-6)
    user.interest[0] = 99.0  # a copy: editing it cannot bypass the check
    np.testing.assert_array_equal(model.market.users.interest[user.key], stored)
    with pytest.raises(ValueError, match="expected 8 finite numbers"):
        user.interest = [1.0, 2.0]
    with pytest.raises(ValueError, match="zero vector"):
        user.interest = np.zeros(8)
    user.activity = 0.5
    assert model.market.users.activity[user.key] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"User.activity: 2.0 is outside \[0.05, 1.0\]"):
        user.activity = 2.0

    creator = model.agents_by_type[Creator].select(at_most=1).to_list()[0]
    creator.quality = 0.9
    assert model.market.creators.quality[creator.key] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="Creator.quality"):
        creator.quality = 1.5
    with pytest.raises(AttributeError, match="Creator.born_tick is read only; writable: publish_rate, quality, topic"):
        creator.born_tick = 0
    # writes reach the simulation: the next tick runs on them and the invariants hold
    model.step()
    assert model.latest_metrics["money_conservation_error"] == 0


def test_leavers_refuse_writes_and_expired_goods_refuse_reads():
    model = AttentionMarket(tiny(CHURNING))
    model.step()
    users = list(model.agents_by_type[User])
    goods = list(model.agents_by_type[Good])
    while model.running:
        model.step()
    left = [user for user in users if not model.market.users.alive[user.key]]
    assert left, "someone churned"
    assert left[0].alive is False and left[0] not in model.agents
    assert left[0].budget == model.market.users.budget[left[0].key]  # its history still reads
    with pytest.raises(AttributeError, match="has left the market"):
        left[0].activity = 0.5
    gone = [good for good in goods if not good.alive]
    assert gone, "goods expired"
    with pytest.raises(AgentGone, match=f"good {gone[0].uid} has left the catalogue"):
        gone[0].quality  # noqa: B018


def test_no_agent_attribute_or_method_creates_money():
    model = AttentionMarket(tiny())
    model.step()
    ledger = model.market.ledger
    before = ledger.total()
    for agent in model.agents:
        if not isinstance(agent, Good):  # goods hold no money
            with pytest.raises(AttributeError, match="read of the ledger"):
                agent.wallet = agent.wallet + 1_000
        agent.step()  # Mesa's per-agent step: the market moves in model.step, not here
    model.agents_by_type[Creator].shuffle_do("step")
    model.agents_by_type[Creator].set("quality", 0.5)
    assert ledger.total() == before and ledger.conservation_error() == 0
    for kind in (User, Creator, Good, Advertiser):
        setters = [name for name in vars(kind) if isinstance(vars(kind)[name], property) and vars(kind)[name].fset]
        assert setters == [], f"{kind.__name__} has property setters outside the checked columns"


def test_mesa_agentset_idioms_and_datacollector_agent_reporters():
    model = AttentionMarket(tiny({"ticks": 6}))
    collector = mesa.DataCollector(
        agent_reporters={"key": "key", "kind": lambda agent: type(agent).__name__},
        agenttype_reporters={Creator: {"quality": "quality", "wallet": "wallet", "exposure": "exposure"}},
    )
    while model.running:
        model.step()
        collector.collect(model)
    creators = model.agents_by_type[Creator]
    qualities = model.market.creators.quality[list(creators.get("key"))]
    assert creators.agg("quality", max) == pytest.approx(float(qualities.max()))
    rich = creators.select(lambda creator: creator.wallet > 5_000)
    assert all(creator.wallet > 5_000 for creator in rich)
    by_kind = model.agents.groupby(type)
    assert set(by_kind.groups) == {User, Creator, Good, Advertiser}
    bumped = []
    model.agents_by_type[Advertiser].shuffle_do(lambda advertiser: bumped.append(advertiser.key))
    assert sorted(bumped) == list(range(4))

    frame = collector.get_agent_vars_dataframe()
    last = frame.xs(6, level="Step")
    assert len(last) == len(model.agents)
    assert last["key"].to_dict() == {agent.unique_id: agent.key for agent in model.agents}
    assert last["kind"].value_counts().to_dict() == {kind.__name__: len(agents) for kind, agents in model.agents_by_type.items() if len(agents)}
    creators_last = collector.get_agenttype_vars_dataframe(Creator).xs(6, level="Step")
    assert creators_last["wallet"].to_dict() == {creator.unique_id: creator.wallet for creator in creators}
    assert set(creators_last["quality"].round(6)) == set(np.round(qualities.astype(float), 6).tolist())


def test_views_survive_a_checkpoint(tmp_path):
    model = AttentionMarket(tiny({"ticks": 8}))
    for _ in range(3):
        model.step()
    before = {agent.key: agent.wallet for agent in model.agents_by_type[Creator]}
    simulator.save_checkpoint(model, tmp_path / "checkpoint.pkl")
    restored = simulator.load_checkpoint(tmp_path / "checkpoint.pkl")
    assert {agent.key: agent.wallet for agent in restored.agents_by_type[Creator]} == before
    restored.step()
    model.step()
    assert len(restored.agents) == len(model.agents)
