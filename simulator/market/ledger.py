"""A double-entry ledger in integer minor units.

Every balance lives here, in int64 arrays per account class (users, creators, advertisers,
platform, and the fraud operator of `adversaries`). Money only moves by postings: a transfer debits one account and credits another by
the same integer amount; an injection brings money from outside the economy (user income,
entrants' capital) and a removal sends it out (production costs). So at every moment

    sum of all balances == initial money + injected - removed,

and `conservation_error()` checks exactly that. Postings are batched: one call moves a whole
vector of amounts, and the ledger keeps per-flow totals for the tick's metrics.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

ACCOUNTS = ("users", "creators", "advertisers", "platform", "fraudsters")  # fraudsters: the fraud operator, one row


class LedgerError(RuntimeError):
    """A posting that would break an invariant (negative amount or an overdrawn account)."""


class Ledger:
    def __init__(self, sizes: dict[str, int]):
        self.balances: dict[str, np.ndarray] = {name: np.zeros(sizes.get(name, 0), dtype=np.int64) for name in ACCOUNTS}
        self.initial = 0
        self.injected = 0
        self.removed = 0
        self.flows: dict[str, int] = defaultdict(int)

    def ensure_capacity(self, account: str, rows: int) -> None:
        current = self.balances[account]
        if rows > len(current):
            grown = np.zeros(max(rows, 2 * len(current)), dtype=np.int64)
            grown[: len(current)] = current
            self.balances[account] = grown

    def endow(self, account: str, rows: np.ndarray, amounts: np.ndarray | int) -> None:
        """Money that exists before the first tick."""
        amounts = self._checked(amounts, rows)
        self._check_rows(account, rows)
        np.add.at(self.balances[account], rows, amounts)
        self.initial += int(amounts.sum())

    def inject(self, flow: str, account: str, rows: np.ndarray, amounts: np.ndarray | int) -> None:
        """Money entering the economy from outside (income, entrants' capital)."""
        amounts = self._checked(amounts, rows)
        self._check_rows(account, rows)
        np.add.at(self.balances[account], rows, amounts)
        total = int(amounts.sum())
        self.injected += total
        self.flows[flow] += total

    def remove(self, flow: str, account: str, rows: np.ndarray, amounts: np.ndarray | int) -> None:
        """Money leaving the economy (costs paid to the outside world)."""
        amounts = self._checked(amounts, rows)
        self._debit(account, rows, amounts)
        total = int(amounts.sum())
        self.removed += total
        self.flows[flow] += total

    def transfer(
        self,
        flow: str,
        payer: str,
        payer_rows: np.ndarray,
        payee: str,
        payee_rows: np.ndarray,
        amounts: np.ndarray | int,
    ) -> None:
        """Move `amounts[i]` from payer row `payer_rows[i]` to payee row `payee_rows[i]`."""
        amounts = self._checked(amounts, payer_rows)
        if len(payee_rows) != len(amounts):
            raise LedgerError(f"{flow}: {len(amounts)} amounts for {len(payee_rows)} payees")
        self._check_rows(payee, payee_rows)
        self._debit(payer, payer_rows, amounts)
        np.add.at(self.balances[payee], payee_rows, amounts)
        self.flows[flow] += int(amounts.sum())

    def total(self) -> int:
        return sum(int(balance.sum()) for balance in self.balances.values())

    def conservation_error(self) -> int:
        return self.total() - (self.initial + self.injected - self.removed)

    def take_flows(self) -> dict[str, int]:
        """The flow totals since the last call (one tick's worth), resetting them."""
        flows, self.flows = dict(self.flows), defaultdict(int)
        return flows

    def _check_rows(self, account: str, rows: np.ndarray) -> None:
        """Refuse unknown accounts and rows outside the account (numpy would wrap -1 around)."""
        if account not in self.balances:
            raise LedgerError(f"no account class {account!r}; the ledger has {ACCOUNTS}")
        rows = np.asarray(rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.balances[account])):
            raise LedgerError(f"{account}: rows outside 0..{len(self.balances[account]) - 1}")

    def _debit(self, account: str, rows: np.ndarray, amounts: np.ndarray) -> None:
        self._check_rows(account, rows)
        balance = self.balances[account]
        demand = np.zeros(len(balance), dtype=np.int64)
        np.add.at(demand, rows, amounts)
        short = demand > balance
        if short.any():
            row = int(np.flatnonzero(short)[0])
            raise LedgerError(f"{account}[{row}] would be overdrawn: owes {int(demand[row])}, holds {int(balance[row])}")
        balance -= demand

    @staticmethod
    def _checked(amounts: np.ndarray | int, rows: np.ndarray) -> np.ndarray:
        amounts = np.asarray(amounts)
        if not np.issubdtype(amounts.dtype, np.integer):
            raise LedgerError(f"amounts must be whole minor units, got {amounts.dtype}")
        amounts = np.broadcast_to(amounts.astype(np.int64), np.shape(rows))
        if amounts.size and amounts.min() < 0:
            raise LedgerError("a posting amount is negative")
        return amounts


def split_exactly(total: int, weights: np.ndarray) -> np.ndarray:
    """Split `total` minor units in proportion to `weights`, summing to `total` exactly.

    Largest-remainder (Hamilton) apportionment: floor each share, then hand the leftover units
    to the largest fractional remainders, ties to the lower index. Zero weights get nothing;
    all-zero weights get nothing at all (the caller keeps the total).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size and not (np.isfinite(weights).all() and weights.min() >= 0):
        raise ValueError("split weights must be finite and non-negative")
    result = np.zeros(len(weights), dtype=np.int64)
    mass = weights.sum()
    if total <= 0 or mass <= 0 or len(weights) == 0:
        return result
    exact = weights / mass * total
    result = np.floor(exact).astype(np.int64)
    leftover = int(total - result.sum())
    if leftover > 0:
        remainders = np.where(weights > 0, exact - result, -1.0)
        order = np.lexsort((np.arange(len(weights)), -remainders))
        result[order[:leftover]] += 1
    return result
