"""The choice among what is shown (`population.users.choice`): which shown exposures a user takes.

Each shown exposure carries the user's random utility of taking it, its promised value less its
price in value units plus a logistic taste shock, to be compared with the outside option.

- `independent`: each exposure is taken on its own when its utility beats the outside option
  (a logit choice per exposure, the simulator's original model).
- `top_n`: many recommender papers (T-RECS; Chaney, Stewart & Engelhardt 2018) have each user
  pick at most n of the k items shown, with a position bias. Of the exposures that beat the
  outside option, the user takes the n with the largest surplus (utility − outside option)
  × rank^−a, rank 1 the top of the feed and a = `position_bias`; ties go to the higher position.

Both only decide what is chosen: what is bought and paid for, the attention each exposure held,
fatigue and money are the consumption stage's, unchanged, so budgets, overload and the ledger
stay exact. The selection is vectorised over users (one sort of the tick's shown entries).
"""

from __future__ import annotations

import numpy as np

from simulator.scenario.schema import ChoiceConfig


def choose(utility: np.ndarray, outside: float, user: np.ndarray, column: np.ndarray, users: int, cfg: ChoiceConfig) -> np.ndarray:
    """Per shown entry (flat, sorted by user then feed position): whether the user takes it.

    `utility` is each entry's random utility, `user` its row among the tick's `users` active
    users, `column` its feed position (0 the top)."""
    beats = utility > outside
    if cfg.model == "independent":
        return beats
    weight = (column.astype(np.float64) + 1.0) ** -cfg.position_bias
    score = np.where(beats, (utility.astype(np.float64) - outside) * weight, -np.inf)
    order = np.lexsort((-score, user))  # by user, best score first; stable, so ties keep feed order
    counts = np.bincount(user, minlength=users)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(order)) - starts[user[order]]
    chosen = np.zeros(len(utility), dtype=bool)
    chosen[order] = beats[order] & (rank < cfg.n)
    return chosen


def expected_beats(promised_surplus: np.ndarray, noise: float) -> np.ndarray:
    """Probability that each exposure beats the outside option under the logistic taste shock,
    given its surplus before the shock (promised value − price − outside option); any shape."""
    return 1.0 / (1.0 + np.exp(-promised_surplus.astype(np.float64) / noise))


def chosen_share(beats_per_user: np.ndarray, cfg: ChoiceConfig) -> np.ndarray:
    """Per user, the share of the exposures that beat the outside option that the user takes, in
    expectation: 1 under `independent`; under `top_n`, min(1, n / expected number that beat it), a
    mean-field estimate that ignores which positions they hold (what adapting creators use to
    predict a new good's consumption when the cap binds)."""
    if cfg.model == "independent":
        return np.ones(len(beats_per_user))
    return np.minimum(1.0, cfg.n / np.maximum(beats_per_user, 1e-12))
