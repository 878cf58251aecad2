"""Platform defences against bots, farms and sybils: market rules with a cost and an error rate.

Each defence is a small self-describing class (`Defence`: `name`, a one-line `summary`, `Params`
the pydantic model of its config under `defences.<name>` in the scenario) registered in the
`defence` kind of the rule registry (`simulator/registry.py`, `registry("defence")`). A defence whose section is null is off; the ones that are on compose, each acting at
its own point of the tick:

| defence | acts | cost and error |
| --- | --- | --- |
| `click_filter` | after ads are charged: flagged billable events are refunded to the advertiser (platform → advertiser) | misses a bot event with probability 1 − detection; refunds an honest one with probability false_positive, which costs the platform or the creator pool (`refunds_from`) |
| `clone_detection` | when goods are published: a good ≥ threshold cosine-similar to a live good of another creator earns no payout for its life | honest goods that happen to sit close to another creator's (crowded niches, imitating entrants) are flagged too |
| `identity_gate` | when the pool is split: creators younger than `min_tenure` and identities without a verified person earn nothing | newcomers wait; honest creators who fail verification (`failure_rate`) earn nothing |
| `audits` | after payouts: audited creators found at fault pay a fine to the platform | each audit costs the platform `cost` (leaves the economy); honest creators are fined with probability false_positive |

What each costs is measured by the metrics `defence_false_positives`, `honest_refunds`,
`audit_fines` and `audit_costs` (docs/metrics.md); docs/adversarial.md has measured trade-offs.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from simulator.market.adversaries import is_fraudulent
from simulator.market.state import MarketState
from simulator.registry import define_kind
from simulator.scenario.schema import (
    AuditConfig,
    ClickFilterConfig,
    CloneDetectionConfig,
    DefencesConfig,
    IdentityGateConfig,
    Scenario,
)

SIMILARITY_BLOCK = 1 << 22  # new goods × live goods similarities held at once by clone detection


class Defence(ABC):
    """A platform defence: `name` (its key under `defences`), `summary` (what it does, one line) and
    `Params` (the pydantic model of its section). Each acts through its function below, at its
    point of the tick."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    @classmethod
    def settings(cls, scenario: Scenario) -> BaseModel | None:
        """This defence's config in `scenario`, None when it is off."""
        return getattr(scenario.defences, cls.name)


def check_defence(cls: type) -> list[str]:
    """What `cls` lacks to be a defence (empty when complete). A defence's section is a field of
    `DefencesConfig`, so only the built-in ones have a place in a scenario."""
    if not (isinstance(cls, type) and issubclass(cls, Defence)):
        return ["the base class simulator.rules.defences.Defence"]
    missing = [f"`{name}`" for name in ("name", "summary") if not isinstance(getattr(cls, name, None), str)]
    if not (isinstance(getattr(cls, "Params", None), type) and issubclass(cls.Params, BaseModel)):
        missing.append("`Params` as a pydantic model")
    if getattr(cls, "name", None) not in DefencesConfig.model_fields:
        missing.append(f"a section under `defences` (one of {', '.join(DefencesConfig.model_fields)})")
    return missing


DEFENCES = define_kind("defence", check_defence)


class ClickFilter(Defence):
    name = "click_filter"
    summary = "refunds advertisers for the billable ad events it flags as fraud (detection rate, false-positive rate)"
    Params = ClickFilterConfig


class CloneDetection(Defence):
    name = "clone_detection"
    summary = "demonetises new goods whose key is near-identical to a live good of another creator"
    Params = CloneDetectionConfig


class IdentityGate(Defence):
    name = "identity_gate"
    summary = "pays only creators with enough tenure and, if required, a verified identity (one per person)"
    Params = IdentityGateConfig


class Audits(Defence):
    name = "audits"
    summary = "audits a share of creators each tick and fines those found at fault (sybils, farm clients)"
    Params = AuditConfig


for _defence in (ClickFilter, CloneDetection, IdentityGate, Audits):
    DEFENCES.register(_defence)


def active(scenario: Scenario) -> list[type[Defence]]:
    """The defences that are on in `scenario`, in the order of their sections."""
    return [DEFENCES.rules[name] for name in DefencesConfig.model_fields if name in DEFENCES.rules and DEFENCES.rules[name].settings(scenario) is not None]


@dataclass(frozen=True)
class Refunds:
    """What the click filter refunded this tick (minor units) and how many honest events it flagged."""

    to_bots: int = 0  # refunds of bots' events: fraud caught
    to_humans: int = 0  # refunds of humans' events: the filter's false positives
    honest_flagged: int = 0

    @property
    def total(self) -> int:
        return self.to_bots + self.to_humans


def filter_clicks(
    state: MarketState,
    cfg: ClickFilterConfig | None,
    advertiser: np.ndarray,
    charge: np.ndarray,
    by_bot: np.ndarray,
    rng: np.random.Generator,
) -> Refunds:
    """Judge each charged ad event (`advertiser`, `charge`, `by_bot`, one entry per event) and
    refund the flagged ones' charges from the platform to the advertiser."""
    if cfg is None or len(charge) == 0:
        return Refunds()
    flag_rate = np.where(by_bot, cfg.detection, cfg.false_positive)
    flagged = (rng.random(len(charge)) < flag_rate) & (charge > 0)
    refund = np.where(flagged, charge, 0)
    paid = np.flatnonzero(refund)
    state.ledger.transfer("fraud_refunds", "platform", np.zeros(len(paid), dtype=np.int64), "advertisers", advertiser[paid], refund[paid])
    return Refunds(int(refund[by_bot].sum()), int(refund[~by_bot].sum()), int(np.count_nonzero(flagged & ~by_bot)))


def flag_clones(state: MarketState, cfg: CloneDetectionConfig | None, published: np.ndarray) -> tuple[int, int]:
    """Flag the newly `published` goods that are `threshold`-similar to a live good of another
    creator (published earlier, or earlier in this batch). Returns (flagged, flagged whose
    creator is not a sybil: false positives)."""
    if cfg is None or len(published) == 0:
        return 0, 0
    goods = state.goods
    live = np.flatnonzero(goods.live)
    # Earlier goods first: a batch's own goods are compared only with those placed before them.
    place = np.full(goods.capacity(), -1, dtype=np.int64)
    place[published] = np.arange(len(published))
    position = place[live]
    step = max(1, SIMILARITY_BLOCK // max(len(live), 1))
    flagged = np.zeros(len(published), dtype=bool)
    for start in range(0, len(published), step):
        batch = published[start : start + step]
        similarity = goods.key[batch] @ goods.key[live].T
        other_creator = goods.owner[batch][:, None] != goods.owner[live][None, :]
        earlier = (position[None, :] < 0) | (position[None, :] < np.arange(start, start + len(batch))[:, None])
        flagged[start : start + len(batch)] = ((similarity >= cfg.threshold) & other_creator & earlier).any(axis=1)
    goods.clone[published[flagged]] = True
    owner = state.creators.owner[goods.owner[published[flagged]]]
    counts = np.bincount(state.creators.owner[: state.creators_born], minlength=state.creators_born)
    honest = counts[owner] <= 1
    return int(flagged.sum()), int(honest.sum())


def payable_goods(state: MarketState, scenario: Scenario) -> np.ndarray | None:
    """Per catalogue row: False for goods clone detection flagged (they earn no payout); None when off."""
    if scenario.defences.clone_detection is None:
        return None
    return ~state.goods.clone


def payable_creators(state: MarketState, cfg: IdentityGateConfig | None) -> np.ndarray | None:
    """Per creator row: whether the identity gate lets it be paid; None when the gate is off.

    A verified person holds one identity: of a sybil owner's identities only its first (the
    owner's own row) verifies."""
    if cfg is None:
        return None
    creators = state.creators
    born = state.creators_born
    rows = np.arange(born)
    ok = state.tick - creators.born_tick[:born] >= cfg.min_tenure
    if cfg.verified:
        ok &= (creators.owner[:born] == rows) & ~creators.verification_failed[:born]
    return ok


@dataclass(frozen=True)
class AuditOutcome:
    audited: int = 0
    wrongly_fined: int = 0  # honest creators found at fault
    cost: int = 0  # money the audits cost the platform
    fined: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # creator rows fined
    fines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # their fines (minor units)

    def fines_per_creator(self, creators: int) -> np.ndarray:
        return np.bincount(self.fined, weights=self.fines, minlength=creators).astype(np.int64)


def run_audits(state: MarketState, cfg: AuditConfig | None, spare: np.ndarray, rng: np.random.Generator) -> AuditOutcome:
    """Audit each alive creator with probability `rate`; fine those found at fault (at most
    `spare`, what each can pay beyond this tick's production costs) and charge the platform
    for the audits it can pay for."""
    if cfg is None:
        return AuditOutcome()
    born = state.creators_born
    alive = np.flatnonzero(state.creators.alive[:born])
    audited = alive[rng.random(len(alive)) < cfg.rate]
    fraud = is_fraudulent(state)[audited]
    caught = rng.random(len(audited)) < np.where(fraud, cfg.detection, cfg.false_positive)
    fined_rows = audited[caught]
    fines = np.minimum(cfg.fine, np.maximum(spare[fined_rows], 0)).astype(np.int64)
    ledger = state.ledger
    ledger.transfer("audit_fines", "creators", fined_rows, "platform", np.zeros(len(fined_rows), dtype=np.int64), fines)
    cost = min(cfg.cost * len(audited), int(ledger.balances["platform"][0]))
    ledger.remove("audit_costs", "platform", np.zeros(1, dtype=np.int64), np.array([cost], dtype=np.int64))
    return AuditOutcome(len(audited), int(np.count_nonzero(caught & ~fraud)), cost, fined_rows, fines)
