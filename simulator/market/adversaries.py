"""Adversaries in the populations: which users are bots, which creators are sybil identities or
hire engagement farms (see docs/adversarial.md).

Everything here is drawn only when its section is on, so a scenario without adversaries draws
exactly the random numbers it drew before they existed (the same seed gives the same bytes).
"""

from __future__ import annotations

import numpy as np

from simulator.market.state import MarketState
from simulator.scenario.schema import Scenario


def draw_bots(state: MarketState, rows: np.ndarray, scenario: Scenario, rng: np.random.Generator) -> None:
    """Mark a `bots.share` of the new user `rows` as bots, each with a sponsoring advertiser."""
    share = scenario.adversaries.bots.share
    if share == 0 or len(rows) == 0:
        return
    users = state.users
    bots = rows[rng.random(len(rows)) < share]
    users.bot[bots] = True
    advertisers = state.advertisers.capacity()
    users.sponsor[bots] = rng.integers(advertisers, size=len(bots)) if advertisers else -1


def draw_creator_identities(state: MarketState, rows: np.ndarray, scenario: Scenario, rng: np.random.Generator) -> None:
    """New creators are their own owners; the identity gate's wrongful refusals are drawn once per creator."""
    creators = state.creators
    creators.owner[rows] = rows
    gate = scenario.defences.identity_gate
    if gate is not None and gate.verified and gate.failure_rate > 0:
        creators.verification_failed[rows] = rng.random(len(rows)) < gate.failure_rate


def draw_sybils_and_clients(state: MarketState, rows: np.ndarray, scenario: Scenario, rng: np.random.Generator) -> None:
    """Among the creators at tick 0: group `owners × identities` of them under sybil owners (the
    identities copy the owner's niche, up to `clone_noise`, and its quality, pace and clickbait),
    and mark a `farms.share` of them as farm clients."""
    cfg = scenario.adversaries
    creators = state.creators
    sybils = cfg.sybils
    if sybils.owners:
        chosen = rng.choice(rows, size=sybils.owners * sybils.identities, replace=False).reshape(sybils.owners, sybils.identities)
        first = chosen[:, :1]
        creators.owner[chosen] = np.broadcast_to(first, chosen.shape)
        identities = chosen[:, 1:].ravel()
        principal = np.repeat(first[:, 0], sybils.identities - 1)
        noise = rng.standard_normal((len(identities), creators.topic.shape[1])) / np.sqrt(creators.topic.shape[1])
        moved = creators.topic[principal] + sybils.clone_noise * noise
        creators.topic[identities] = (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(creators.topic.dtype)
        for name in ("quality", "publish_rate", "clickbait"):
            getattr(creators, name)[identities] = getattr(creators, name)[principal]
    if cfg.farms.share:
        creators.farm_client[rows] = rng.random(len(rows)) < cfg.farms.share


def is_sybil(state: MarketState) -> np.ndarray:
    """Per creator row born so far: an identity of an owner operating more than one."""
    owner = state.creators.owner[: state.creators_born]
    counts = np.bincount(np.maximum(owner, 0), minlength=state.creators_born)
    return (owner >= 0) & (counts[np.maximum(owner, 0)] > 1)


def is_fraudulent(state: MarketState) -> np.ndarray:
    """Per creator row born so far: a sybil identity or a farm client (what audits look for)."""
    return is_sybil(state) | state.creators.farm_client[: state.creators_born]
