"""`AllocationRule`: what an allocation rule is, declared in one class.

An allocation rule turns a block of users and the live catalogue into scores (log-weights); the
engine (`engine.py`) does the rest the same way for every rule: score modifiers, masks of
consumed goods, then the rule's `select` (softmax sampling without replacement by default, the
best k for deterministic rules). Everything else the system needs from a rule is declared here,
so nothing outside the rule looks at its name:

| member | what it declares | default |
| --- | --- | --- |
| `name`, `summary` | registry name and the line `attnsim rules` prints | required |
| `Params` | its own knobs, a pydantic model validated from `allocation.params` | no knobs |
| `from_scenario(scenario, params)` | build the rule for a run | required |
| `scores(state, catalogue, users, out)` | the score block | required |
| `audience_scores(state, users, keys, quality)` | the scores new goods with these keys and qualities would get: what adapting creators expect of the allocator | required |
| `audience_exposures(scores, owners, budgets)` | the exposures a new good with given scores would get among a sample of users, against this tick's catalogue: how adapting creators model the rule's selection | the new good joins the softmax |
| `candidate_mode`, `candidate_scores(...)` | scores of given catalogue positions, for the candidate mode of large catalogues | exact only |
| `routing_vectors(state, users)` | the vectors the candidate mode groups users by | the platform's profiles |
| `deterministic`, `needs_creators`, `select(...)` | how exposures are drawn from scores | softmax sampling |
| `prepare(state, scenario, rng)` | work once per tick before any block (refits) | nothing |
| `observe(state, feedback)` | what it learns after consumption | nothing |
| `state_dict()`, `load_state_dict(d)` | the state it keeps across ticks, for checkpoints | none |
| `block_bytes_per_element`, `state_bytes(scenario)` | its memory cost for the memory estimate | 6 bytes, no state |
| `population_problem(params, population)` | a scenario it cannot serve, refused before the run at `allocation.<key>` | none |
| `manifest_notes()` | what manifest.json records of the run's rule (e.g. runtime fallbacks) | nothing |

`check_rule` lists what a class lacks; the registry refuses an incomplete class at registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from simulator.market.catalogue import Catalogue
from simulator.market.state import MarketState
from simulator.market.streams import keyed_sample
from simulator.registry import define_kind
from simulator.rules.allocation.creators import CreatorSegments
from simulator.rules.allocation.selection import SelectionKeys, sample_positions, top_k_positions
from simulator.scenario.schema import Scenario


class NoParams(BaseModel):
    """A rule without knobs of its own: `params` must be empty."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class Feedback:
    """What users did with a tick's exposures: what the rule may learn from after consumption."""

    users: np.ndarray  # (b,) user rows, as in the allocation
    exposures: np.ndarray  # (b, K) catalogue rows shown, -1 padded
    consumed: np.ndarray  # (b, K) bool: the user consumed the exposure

    @property
    def shown(self) -> np.ndarray:
        return self.exposures >= 0


class AllocationRule(ABC):
    """Scores for a block of users over the catalogue; higher means more attention (see the module doc)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    deterministic: ClassVar[bool] = False  # select the best k instead of sampling
    needs_creators: ClassVar[bool] = False  # `select` needs the catalogue grouped by creator
    candidate_mode: ClassVar[bool] = False  # implements `candidate_scores`
    block_bytes_per_element: ClassVar[int] = 6  # memory per users × goods element of a score block

    @classmethod
    @abstractmethod
    def from_scenario(cls, scenario: Scenario, params: BaseModel) -> AllocationRule:
        """The rule for a run of `scenario`; `params` is `allocation.params` validated by `Params`."""

    @abstractmethod
    def scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(len(users), len(catalogue.rows)) float32 scores, written into `out` when given (the
        engine reuses one block buffer: a fresh 16 MB array per block costs page faults)."""

    @abstractmethod
    def audience_scores(self, state: MarketState, users: np.ndarray, keys: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """(len(users), n) scores that n new goods with `keys` (n, d) and `quality` (n,) would get
        for `users`, on the scale of `scores`: how adapting creators model this rule."""

    def audience_exposures(
        self, scores: np.ndarray, owners: np.ndarray, budgets: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        """How adapting creators model this rule's selection. `scores` (U, G) are this tick's
        catalogue's scores for a sample of users, `owners` (G,) the goods' creators, `budgets` (U,)
        the users' units; returns a function from a new good's scores (U, N) (`audience_scores`)
        to its expected exposures per user (U, N). Default: the new good joins the softmax over
        the catalogue, budget × w / (Σ + w)."""
        top = np.max(scores, axis=1, keepdims=True) if scores.shape[1] else np.zeros((len(scores), 1))
        top = np.where(np.isfinite(top), top, 0.0)
        partition = np.exp(scores - top).sum(axis=1, keepdims=True)

        def exposures(candidates: np.ndarray) -> np.ndarray:
            weight = np.exp(candidates - top)
            return weight / (partition + weight) * budgets[:, None]

        return exposures

    def candidate_scores(self, state: MarketState, catalogue: Catalogue, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The scores of catalogue `positions` only: (C,) shared by the block or (b, C) per user
        (every entry valid); (b, C). Rules with `candidate_mode = True` implement it."""
        raise TypeError(f"the {self.name} rule has no candidate scores (candidate_mode is False): it runs exact only")

    def routing_vectors(self, state: MarketState, users: np.ndarray) -> np.ndarray:
        """The vectors the candidate mode groups users by: the platform's profiles."""
        return state.users.query[users]

    def prepare(self, state: MarketState, scenario: Scenario, rng: np.random.Generator) -> None:
        """Called once per tick before any block (stateful rules refit here)."""

    def select(
        self,
        scores: np.ndarray,
        counts: np.ndarray,
        segments: CreatorSegments | None,
        rng: np.random.Generator,
        keys: SelectionKeys | None = None,
    ) -> np.ndarray:
        """counts[i] catalogue positions per row, in feed order, -1 padded. With `keys` (the exact
        mode) the sampling noise is keyed by user and good (common random numbers across arms)."""
        if self.deterministic:
            return top_k_positions(scores, counts)
        if keys is not None:
            return keyed_sample(scores, counts, keys.draws, keys.users, keys.goods)
        return sample_positions(scores, counts, rng)

    def observe(self, state: MarketState, feedback: Feedback) -> None:
        """What the rule learns from a tick's consumption (after the consumption stage)."""

    def state_dict(self) -> dict[str, Any]:
        """The state kept across ticks, as arrays, numbers, strings and lists/dicts of them."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint)."""
        if state:
            raise ValueError(f"the {self.name} rule keeps no state, but the checkpoint has {sorted(state)}")

    @classmethod
    def state_bytes(cls, scenario: Scenario, active_users: int, users: int, goods: int) -> int:
        """Memory the rule's state across ticks takes, for a tick's active users and the rows of
        users and goods the populations may hold (the memory estimate)."""
        return 0

    @classmethod
    def population_problem(cls, params: BaseModel, population: Any) -> tuple[str, str] | None:
        """(key under `allocation`, message) when the rule cannot serve these populations (the
        scenario's `population` section), checked when the scenario is validated; None if it can."""
        return None

    def manifest_notes(self) -> dict[str, Any]:
        """What manifest.json records about the rule after a run (`allocation_rule_notes`), if anything."""
        return {}


def check_rule(cls: type) -> list[str]:
    """What `cls` lacks to be an allocation rule (empty when it is complete)."""
    if not (isinstance(cls, type) and issubclass(cls, AllocationRule)):
        return ["the base class simulator.rules.allocation.base.AllocationRule"]
    missing = [f"`{name}`" for name in ("name", "summary") if not isinstance(getattr(cls, name, None), str)]
    missing += [f"`{name}()`" for name in sorted(cls.__abstractmethods__)]
    if cls.candidate_mode and cls.candidate_scores is AllocationRule.candidate_scores:
        missing.append("`candidate_scores()` (it declares candidate_mode)")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        missing.append("`Params` as a pydantic model")
    return missing


ALLOCATION_RULES = define_kind("allocation", check_rule)
