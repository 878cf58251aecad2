"""Agent panels: per-agent time series for a fixed, seeded sample of users, creators and advertisers.

Metrics describe the market as a whole; panels follow individual agents, for questions like
"who wins attention, and why?" or "what did users live through before they churned?". Turn them
on in the scenario (off by default, and then they cost nothing):

    metrics:
      agent_panels: {every: 5, sample: 200}     # or --set metrics.agent_panels.sample=200

Every `every` ticks (on tick 1, every `every` ticks after it and on the last tick) the recorder
takes one row per sampled agent. The sample is drawn once, at tick 0, with a generator of its own
(`numpy.random.SeedSequence(seed, spawn_key=(PANEL_STREAM,))`), so it is fixed by the scenario's
seed and never touches the simulation's random stream: a run's metrics are byte-identical with
panels on or off. `sample` agents are drawn from each population (all of a smaller one); users
and creators who join later enter the sample with the same probability, decided by the same
generator as they appear, so imitating entrants show up in the panels too.

Frames are long: one row per (tick, agent). Columns, by population:

- users: `tick`, `agent` (the user's row), `status` (`active` showed up this tick, `alive` has not
  churned but stayed away, `churned` left for good this tick or before), `wallet` (minor units),
  `budget` (attention units brought this tick), `exposures` (goods shown), `ads` (ads shown),
  `consumptions`, `purchases`, `utility` (realised this tick; NaN when the user did not show up,
  so a user's tick of churning has its utility and status `churned`),
  `utility_ema` (the smoothed utility churn watches), `interest_0 ... interest_{d-1}`;
- creators: `tick`, `agent`, `status` (`active` or `exited`), `born_tick`, `wallet`, `exposure`
  (exposures of its goods this tick), `income` (sales + payouts this tick, minor units),
  `quality`, `clickbait`, `profit_ema`, `live_goods`, `topic_0 ... topic_{d-1}`;
- advertisers: `tick`, `agent`, `wallet`, `impressions`, `clicks`, `spend` (paid this tick),
  `value` (value of its clicks this tick), `bid`, `multiplier` (bid / value per click).

`attnsim run` writes them to `agents/<population>.parquet` in the run directory; read them back
with `load_panels(DIR)`. In Python, `AttentionMarket.panels` is the recorder (None when off) and
`model.panels.frames()` the frames so far.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.files import atomic_write_bytes
from simulator.market.state import MarketState
from simulator.scenario.schema import Scenario

PANEL_STREAM = 0x70616E656C  # "panel": the spawn key of the panels' own random stream
AGENTS_DIR = "agents"
USERS, CREATORS, ADVERTISERS = "users", "creators", "advertisers"
POPULATIONS = (USERS, CREATORS, ADVERTISERS)

USER_STATUSES = ("active", "alive", "churned")
CREATOR_STATUSES = ("active", "exited")

# Scalar columns per population (vectors follow as <prefix>_0 ... <prefix>_{d-1}), with dtypes.
_SCALARS: dict[str, tuple[tuple[str, Any], ...]] = {
    USERS: (
        ("tick", np.int64),
        ("agent", np.int64),
        ("status", object),
        ("wallet", np.int64),
        ("budget", np.int64),
        ("exposures", np.int64),
        ("ads", np.int64),
        ("consumptions", np.int64),
        ("purchases", np.int64),
        ("utility", np.float64),
        ("utility_ema", np.float64),
    ),
    CREATORS: (
        ("tick", np.int64),
        ("agent", np.int64),
        ("status", object),
        ("born_tick", np.int64),
        ("wallet", np.int64),
        ("exposure", np.int64),
        ("income", np.int64),
        ("quality", np.float64),
        ("clickbait", np.float64),
        ("profit_ema", np.float64),
        ("live_goods", np.int64),
    ),
    ADVERTISERS: (
        ("tick", np.int64),
        ("agent", np.int64),
        ("wallet", np.int64),
        ("impressions", np.int64),
        ("clicks", np.int64),
        ("spend", np.int64),
        ("value", np.int64),
        ("bid", np.int64),
        ("multiplier", np.float64),
    ),
}
VECTOR_PREFIX = {USERS: "interest", CREATORS: "topic", ADVERTISERS: None}


def panel_row_bytes(population: str, dim: int) -> int:
    """Bytes of one panel row of `population` as recorded (an object column holds a pointer)."""
    scalars = sum(np.dtype(dtype).itemsize for _, dtype in _SCALARS[population])
    return scalars + (4 * dim if VECTOR_PREFIX[population] else 0)


def vector_columns(prefix: str, dim: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(dim)]


def columns(population: str, dim: int) -> list[str]:
    """The columns of one population's panel, in order."""
    names = [name for name, _ in _SCALARS[population]]
    prefix = VECTOR_PREFIX[population]
    return names + (vector_columns(prefix, dim) if prefix else [])


def empty_frame(population: str, dim: int) -> pd.DataFrame:
    data: dict[str, Any] = {name: np.zeros(0, dtype=dtype) for name, dtype in _SCALARS[population]}
    prefix = VECTOR_PREFIX[population]
    if prefix:
        for name in vector_columns(prefix, dim):
            data[name] = np.zeros(0, dtype=np.float32)
    return pd.DataFrame(data, columns=columns(population, dim))


def panel_generator(seed: int) -> np.random.Generator:
    """The panels' own generator: derived from the scenario seed, independent of the model's stream."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PANEL_STREAM,)))


class PanelRecorder:
    """Records the sampled agents' panels while a model runs; `frames()` gives them as DataFrames.

    Built by `AttentionMarket` from `metrics.agent_panels` before the first tick; `record(state,
    outcome)` is called at the end of every tick with that tick's stage outputs (`TickOutcome`).
    """

    def __init__(self, scenario: Scenario, state: MarketState):
        config = scenario.metrics.agent_panels
        if config is None:
            raise ValueError("metrics.agent_panels is off in this scenario")
        self.every = config.every
        self.size = config.sample
        self.last_tick = scenario.ticks
        self.dim = scenario.embedding_dim
        self.rng = panel_generator(scenario.seed)
        advertisers = state.advertisers.capacity() if scenario.population.advertisers.count else 0
        born = {USERS: state.users_born, CREATORS: state.creators_born, ADVERTISERS: advertisers}
        self.rows: dict[str, np.ndarray] = {}
        self.rate: dict[str, float] = {}
        for population in POPULATIONS:
            count = born[population]
            take = min(self.size, count)
            chosen = np.sort(self.rng.choice(count, size=take, replace=False)) if take else np.zeros(0, dtype=np.int64)
            self.rows[population] = chosen.astype(np.int64)
            self.rate[population] = take / count if count else 0.0
        self._seen = {USERS: state.users_born, CREATORS: state.creators_born}
        self._chunks: dict[str, list[dict[str, np.ndarray]]] = {population: [] for population in POPULATIONS}
        self.ticks: list[int] = []

    # --- sampling --------------------------------------------------------------------------------

    def _admit_newcomers(self, state: MarketState) -> None:
        """Users and creators born since the last tick join the sample with the sampling rate."""
        for population, born in ((USERS, state.users_born), (CREATORS, state.creators_born)):
            seen = self._seen[population]
            if born > seen:
                joined = np.arange(seen, born, dtype=np.int64)
                keep = joined[self.rng.random(len(joined)) < self.rate[population]]
                if len(keep):
                    self.rows[population] = np.concatenate([self.rows[population], keep])
                self._seen[population] = born

    def due(self, tick: int) -> bool:
        return (tick - 1) % self.every == 0 or tick == self.last_tick

    # --- recording -------------------------------------------------------------------------------

    def record(self, state: MarketState, outcome: Any) -> None:
        """Take this tick's rows if it is a recording tick (after the tick's four stages)."""
        self._admit_newcomers(state)
        tick = state.tick
        if not self.due(tick):
            return
        chunks = {
            USERS: self._users(state, outcome, tick),
            CREATORS: self._creators(state, outcome, tick),
            ADVERTISERS: self._advertisers(state, outcome, tick),
        }
        for population, chunk in chunks.items():  # appended together: a tick is all in or all out
            self._chunks[population].append(chunk)
        self.ticks.append(tick)

    def _users(self, state: MarketState, outcome: Any, tick: int) -> dict[str, np.ndarray]:
        rows = self.rows[USERS]
        users = state.users
        allocation, consumption, arrivals = outcome.allocation, outcome.consumption, outcome.arrivals
        position = np.full(state.users_born, -1, dtype=np.int64)
        position[allocation.users] = np.arange(len(allocation.users))
        at = position[rows]
        active = at >= 0
        idx = np.where(active, at, 0)

        def per_user(values: np.ndarray, fill: Any) -> np.ndarray:
            if len(values) == 0:
                return np.full(len(rows), fill, dtype=np.asarray(values).dtype)
            return np.where(active, values[idx], fill)

        alive = users.alive[rows]
        status = np.where(~alive, "churned", np.where(active, "active", "alive")).astype(object)
        chunk = {
            "tick": np.full(len(rows), tick, dtype=np.int64),
            "agent": rows.copy(),
            "status": status,
            "wallet": state.ledger.balances["users"][rows].astype(np.int64),
            "budget": per_user(arrivals.budgets.astype(np.int64), 0),
            "exposures": per_user(np.count_nonzero(allocation.exposures >= 0, axis=1).astype(np.int64), 0),
            "ads": per_user(np.count_nonzero(allocation.ads >= 0, axis=1).astype(np.int64), 0),
            "consumptions": per_user(np.count_nonzero(consumption.consumed, axis=1).astype(np.int64), 0),
            "purchases": per_user(np.count_nonzero(consumption.bought, axis=1).astype(np.int64), 0),
            "utility": per_user(consumption.utility.astype(np.float64), np.nan),
            "utility_ema": users.utility_ema[rows].astype(np.float64),
        }
        chunk["interest"] = users.interest[rows].astype(np.float32)
        return chunk

    def _creators(self, state: MarketState, outcome: Any, tick: int) -> dict[str, np.ndarray]:
        rows = self.rows[CREATORS]
        creators = state.creators
        settlement = outcome.settlement
        goods = state.goods
        live_owner = goods.owner[goods.live]
        live_goods = np.bincount(live_owner[live_owner >= 0], minlength=state.creators_born)

        def per_creator(values: np.ndarray) -> np.ndarray:
            values = np.asarray(values)
            padded = np.zeros(state.creators_born, dtype=values.dtype)
            padded[: min(len(values), state.creators_born)] = values[: state.creators_born]
            return padded[rows]

        return {
            "tick": np.full(len(rows), tick, dtype=np.int64),
            "agent": rows.copy(),
            "status": np.where(creators.alive[rows], "active", "exited").astype(object),
            "born_tick": creators.born_tick[rows].astype(np.int64),
            "wallet": state.ledger.balances["creators"][rows].astype(np.int64),
            "exposure": np.rint(per_creator(settlement.creator_exposure)).astype(np.int64),
            "income": per_creator(settlement.creator_income).astype(np.int64),
            "quality": creators.quality[rows].astype(np.float64),
            "clickbait": creators.clickbait[rows].astype(np.float64),
            "profit_ema": creators.profit_ema[rows].astype(np.float64),
            "live_goods": live_goods[rows].astype(np.int64),
            "topic": creators.topic[rows].astype(np.float32),
        }

    def _advertisers(self, state: MarketState, outcome: Any, tick: int) -> dict[str, np.ndarray]:
        rows = self.rows[ADVERTISERS]
        ads = state.advertisers
        allocation, consumption = outcome.allocation, outcome.consumption
        capacity = ads.capacity()
        shown = allocation.ads[allocation.ads >= 0]
        clicked = allocation.ads[consumption.clicked]
        return {
            "tick": np.full(len(rows), tick, dtype=np.int64),
            "agent": rows.copy(),
            "wallet": state.ledger.balances["advertisers"][rows].astype(np.int64),
            "impressions": np.bincount(shown, minlength=capacity)[rows].astype(np.int64),
            "clicks": np.bincount(clicked, minlength=capacity)[rows].astype(np.int64),
            "spend": ads.spent_last[rows].astype(np.int64),
            "value": ads.value_last[rows].astype(np.int64),
            "bid": ads.bid[rows].astype(np.int64),
            "multiplier": ads.multiplier[rows].astype(np.float64),
        }

    # --- output ----------------------------------------------------------------------------------

    def frame(self, population: str) -> pd.DataFrame:
        """One population's panel so far: one row per (recorded tick, sampled agent)."""
        chunks = self._chunks[population]
        if not chunks:
            return empty_frame(population, self.dim)
        data: dict[str, Any] = {}
        prefix = VECTOR_PREFIX[population]
        for name, dtype in _SCALARS[population]:
            data[name] = np.concatenate([chunk[name] for chunk in chunks]).astype(dtype)
        if prefix:
            vectors = np.concatenate([chunk[prefix] for chunk in chunks]).reshape(-1, self.dim)
            for i, name in enumerate(vector_columns(prefix, self.dim)):
                data[name] = vectors[:, i]
        return pd.DataFrame(data, columns=columns(population, self.dim))

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every population's panel so far, keyed `users`, `creators`, `advertisers`."""
        return {population: self.frame(population) for population in POPULATIONS}


# --- files ---------------------------------------------------------------------------------------


def panel_parquet_bytes(frame: pd.DataFrame) -> bytes:


    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_panels(directory: str | Path, frames: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write `frames` as `DIRECTORY/agents/<population>.parquet`, each atomically; returns the paths."""

    folder = Path(directory) / AGENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for population, frame in frames.items():
        path = folder / f"{population}.parquet"
        atomic_write_bytes(path, panel_parquet_bytes(frame))
        written.append(path)
    return written


def load_panels(directory: str | Path) -> dict[str, pd.DataFrame]:
    """The agent panels of a run directory, keyed `users`, `creators`, `advertisers`.

    Empty when the run recorded none (`metrics.agent_panels` off). Raises FileNotFoundError when
    `directory` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a run directory (no such directory)")
    folder = directory / AGENTS_DIR
    frames: dict[str, pd.DataFrame] = {}
    for population in POPULATIONS:
        path = folder / f"{population}.parquet"
        if path.is_file():
            frames[population] = pd.read_parquet(path)
    return frames


def available(directory: str | Path) -> list[str]:
    """The populations whose panels a run directory holds."""
    folder = Path(directory) / AGENTS_DIR
    return [population for population in POPULATIONS if (folder / f"{population}.parquet").is_file()]


# --- analysis helpers ----------------------------------------------------------------------------


def vectors(frame: pd.DataFrame, prefix: str | None = None) -> np.ndarray:
    """The (rows, d) vectors of a panel: `topic_*` for creators, `interest_*` for users."""
    if prefix is None:
        prefix = "topic" if "topic_0" in frame.columns else "interest"
    names = [c for c in frame.columns if c.startswith(f"{prefix}_") and c[len(prefix) + 1 :].isdigit()]
    names.sort(key=lambda c: int(c[len(prefix) + 1 :]))
    if not names:
        raise KeyError(f"the frame has no {prefix}_0 ... columns")
    return frame[names].to_numpy(dtype=np.float64)


def last_tick(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last recorded tick."""
    if frame.empty:
        return frame
    return frame[frame["tick"] == frame["tick"].max()]


def creator_totals(creators: pd.DataFrame) -> pd.DataFrame:
    """Per creator over the recorded ticks: total `exposure` and `income`, `ticks` recorded,
    `active_ticks`, `exposure_per_tick` and `income_per_tick` (per active recorded tick, which
    compares creators who entered late fairly), and the last recorded `quality`, `clickbait`,
    `status`, `wallet`, `topic_*` and other columns.

    With `every > 1` the totals are over the recorded ticks only (a systematic sample of ticks).
    """
    if creators.empty:
        return pd.DataFrame(columns=["agent", "exposure", "income", "ticks", "active_ticks"])
    ordered = creators.sort_values(["agent", "tick"])
    grouped = ordered.groupby("agent", sort=True)
    totals = grouped[["exposure", "income"]].sum()
    totals["ticks"] = grouped.size()
    totals["active_ticks"] = grouped["status"].agg(lambda s: int((s == "active").sum()))
    per_tick = totals["active_ticks"].where(totals["active_ticks"] > 0)
    totals["exposure_per_tick"] = totals["exposure"] / per_tick
    totals["income_per_tick"] = totals["income"] / per_tick
    last = grouped.tail(1).set_index("agent")
    keep = [c for c in last.columns if c not in ("tick", "exposure", "income")]
    return totals.join(last[keep]).reset_index()


def topic_fit(creators: pd.DataFrame, users: pd.DataFrame, sharpness: float = 4.0) -> pd.Series:
    """How well each creator row's niche matches the audience at the same tick: the mean, over the
    sampled users who have not churned, of `exp(sharpness × (cos(topic, interest) − 1))`, in (0, 1]
    (1 when every user's taste points at the niche; NaN where no such user was recorded).

    With `sharpness = √d / temperature` this mirrors the weight `attention_softmax` gives the
    niche's goods (up to each user's normaliser); with `population.users.taste_sharpness` it
    mirrors the taste match in the value users get from them.
    """
    result = pd.Series(np.nan, index=creators.index, name="topic_fit")
    if creators.empty or users.empty:
        return result
    present = users[users["status"] != "churned"]
    for tick, group in creators.groupby("tick"):
        audience = present[present["tick"] == tick]
        if audience.empty:
            continue
        cos = vectors(group, "topic") @ vectors(audience, "interest").T
        result.loc[group.index] = np.exp(sharpness * (cos - 1.0)).mean(axis=1)
    return result
