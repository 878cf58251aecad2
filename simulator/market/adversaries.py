"""Adversaries in the populations: which users are bots, which creators are sybil identities or
hire engagement farms (see docs/adversarial.md).

Everything here is drawn only when its section is on, and from its own generator (seeded from
the scenario's seed and what is being drawn), never from the run's: a scenario without
adversaries draws exactly the random numbers it drew before they existed, and turning
adversaries on leaves the honest population as it was (the same users, creators, goods and
advertisers at tick 0), so a run with adversaries is paired with the clean run of its seed.
"""

from __future__ import annotations

import numpy as np

from simulator.market.state import MarketState
from simulator.scenario.schema import Scenario

BOTS, IDENTITIES, SYBILS = 0x424F54, 0x494400, 0x535942  # the adversary generators' stream tags


def _stream(scenario: Scenario, tag: int, at: int) -> np.random.Generator:
    """The generator for one draw of adversaries: (scenario seed, what, where), apart from the run's."""
    return np.random.default_rng([scenario.seed, tag, at])


def draw_bots(state: MarketState, rows: np.ndarray, scenario: Scenario) -> None:
    """Mark a `bots.share` of the new user `rows` as bots, each with a sponsoring advertiser."""
    share = scenario.adversaries.bots.share
    if share == 0 or len(rows) == 0:
        return
    rng = _stream(scenario, BOTS, int(rows[0]))
    users = state.users
    bots = rows[rng.random(len(rows)) < share]
    users.bot[bots] = True
    advertisers = state.advertisers.capacity()
    users.sponsor[bots] = rng.integers(advertisers, size=len(bots)) if advertisers else -1


def draw_creator_identities(state: MarketState, rows: np.ndarray, scenario: Scenario) -> None:
    """New creators are their own owners; the identity gate's wrongful refusals are drawn once per creator."""
    creators = state.creators
    creators.owner[rows] = rows
    gate = scenario.defences.identity_gate
    if gate is not None and gate.verified and gate.failure_rate > 0:
        rng = _stream(scenario, IDENTITIES, int(rows[0]) if len(rows) else 0)
        creators.verification_failed[rows] = rng.random(len(rows)) < gate.failure_rate


def draw_sybils_and_clients(state: MarketState, rows: np.ndarray, scenario: Scenario) -> None:
    """Among the creators at tick 0: group `owners × identities` of them under sybil owners (the
    identities copy the owner's niche, up to `clone_noise`, and its quality, pace and clickbait),
    and mark a `farms.share` of them as farm clients."""
    cfg = scenario.adversaries
    creators = state.creators
    sybils = cfg.sybils
    rng = _stream(scenario, SYBILS, 0)
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
