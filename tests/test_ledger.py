"""The double-entry ledger: postings conserve money, refused postings change nothing, and the
largest-remainder split hands out exactly the total."""

from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from simulator.market.ledger import Ledger, LedgerError, split_exactly


def funded_ledger() -> Ledger:
    ledger = Ledger({"users": 5, "creators": 3, "advertisers": 2, "platform": 1})
    ledger.endow("users", np.arange(5), np.array([100, 200, 300, 400, 500]))
    ledger.endow("creators", np.arange(3), 50)
    ledger.endow("advertisers", np.arange(2), np.array([1_000, 0]))
    return ledger


def snapshot(ledger: Ledger) -> dict:
    return {
        "balances": {name: balance.copy() for name, balance in ledger.balances.items()},
        "initial": ledger.initial,
        "injected": ledger.injected,
        "removed": ledger.removed,
        "flows": dict(ledger.flows),
    }


def assert_unchanged(ledger: Ledger, before: dict) -> None:
    after = snapshot(ledger)
    for name, balance in before["balances"].items():
        np.testing.assert_array_equal(after["balances"][name], balance, err_msg=name)
    assert (after["initial"], after["injected"], after["removed"]) == (before["initial"], before["injected"], before["removed"])
    # defaultdict reads may add zero entries; only non-zero flows matter.
    assert {k: v for k, v in after["flows"].items() if v} == {k: v for k, v in before["flows"].items() if v}


def test_endowment_is_initial_money():
    ledger = funded_ledger()
    assert ledger.initial == 1_500 + 150 + 1_000
    assert ledger.total() == ledger.initial
    assert ledger.conservation_error() == 0


def test_transfer_moves_exact_amounts_and_conserves():
    ledger = funded_ledger()
    before = ledger.total()
    payers = np.array([0, 1, 1, 4])
    payees = np.array([2, 2, 0, 2])
    amounts = np.array([10, 20, 30, 499])
    ledger.transfer("sales", "users", payers, "creators", payees, amounts)
    np.testing.assert_array_equal(ledger.balances["users"], [90, 150, 300, 400, 1])
    np.testing.assert_array_equal(ledger.balances["creators"], [80, 50, 579])
    assert ledger.total() == before
    assert ledger.conservation_error() == 0
    assert ledger.take_flows() == {"sales": 559}
    assert ledger.take_flows() == {}  # taking resets


def test_transfer_can_empty_an_account_exactly():
    ledger = funded_ledger()
    ledger.transfer("x", "users", np.array([0, 0]), "platform", np.array([0, 0]), np.array([60, 40]))
    assert ledger.balances["users"][0] == 0
    assert ledger.balances["platform"][0] == 100


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_transfers_conserve_money(data):
    ledger = funded_ledger()
    for _ in range(data.draw(st.integers(1, 6))):
        n = data.draw(st.integers(0, 8))
        payers = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.int64)
        payees = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
        amounts = np.array(data.draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)), dtype=np.int64)
        before = snapshot(ledger)
        try:
            ledger.transfer("f", "users", payers, "creators", payees, amounts)
        except LedgerError:
            assert_unchanged(ledger, before)
            demand = np.bincount(payers, weights=amounts, minlength=5)
            assert (demand > before["balances"]["users"]).any()  # refused only when really short
        assert ledger.conservation_error() == 0
        assert all((balance >= 0).all() for balance in ledger.balances.values())


def test_inject_and_remove_keep_the_books_balanced():
    ledger = funded_ledger()
    ledger.inject("income", "users", np.arange(5), 7)
    ledger.remove("costs", "creators", np.array([0, 2]), np.array([50, 13]))
    assert ledger.injected == 35 and ledger.removed == 63
    assert ledger.total() == ledger.initial + 35 - 63
    assert ledger.conservation_error() == 0
    assert ledger.take_flows() == {"income": 35, "costs": 63}


def test_conservation_error_detects_money_created_outside_postings():
    ledger = funded_ledger()
    ledger.balances["users"][3] += 1  # a bug elsewhere writing a balance directly
    assert ledger.conservation_error() == 1


def test_overdraft_raises_and_changes_nothing():
    ledger = funded_ledger()
    ledger.transfer("warm", "users", np.array([0]), "platform", np.array([0]), 5)
    before = snapshot(ledger)
    # Each posting alone is covered (95 held), together they are not.
    with pytest.raises(LedgerError, match=r"users\[0\]"):
        ledger.transfer("sales", "users", np.array([1, 0, 0]), "creators", np.array([0, 1, 2]), np.array([10, 60, 40]))
    assert_unchanged(ledger, before)


def test_overdrawing_removal_raises_and_changes_nothing():
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises(LedgerError):
        ledger.remove("costs", "creators", np.array([0, 1]), np.array([50, 51]))
    assert_unchanged(ledger, before)


def test_empty_account_cannot_pay_a_single_unit():
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises(LedgerError):
        ledger.transfer("ad_spend", "advertisers", np.array([1]), "platform", np.array([0]), 1)
    assert_unchanged(ledger, before)


@pytest.mark.parametrize(
    "posting",
    [
        lambda l: l.transfer("f", "users", np.array([0, 1]), "creators", np.array([0, 1]), np.array([5, -1])),
        lambda l: l.inject("f", "users", np.array([0]), -3),
        lambda l: l.remove("f", "users", np.array([0]), np.array([-3])),
        lambda l: l.endow("users", np.array([0]), -3),
    ],
    ids=["transfer", "inject", "remove", "endow"],
)
def test_negative_amounts_are_refused(posting):
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises(LedgerError, match="negative"):
        posting(ledger)
    assert_unchanged(ledger, before)


def test_mismatched_payees_are_refused_before_any_money_moves():
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises(LedgerError):
        ledger.transfer("f", "users", np.array([0, 1]), "creators", np.array([0]), np.array([1, 1]))
    assert_unchanged(ledger, before)


@pytest.mark.parametrize(("payee", "row"), [("creators", 99), ("nobody", 0)])
def test_a_posting_that_fails_on_the_payee_side_changes_nothing(payee, row):
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises((LedgerError, IndexError, KeyError)):
        ledger.transfer("f", "users", np.array([0]), payee, np.array([row]), np.array([10]))
    assert_unchanged(ledger, before)


def test_negative_row_indices_are_refused():
    ledger = funded_ledger()
    before = snapshot(ledger)
    with pytest.raises((LedgerError, IndexError)):
        ledger.transfer("f", "users", np.array([-1]), "creators", np.array([0]), np.array([10]))
    assert_unchanged(ledger, before)


def test_capacity_growth_keeps_balances():
    ledger = funded_ledger()
    ledger.ensure_capacity("users", 40)
    assert len(ledger.balances["users"]) >= 40
    np.testing.assert_array_equal(ledger.balances["users"][:5], [100, 200, 300, 400, 500])
    assert ledger.balances["users"][5:].sum() == 0
    assert ledger.conservation_error() == 0


# --- split_exactly ---------------------------------------------------------------------------


def exact_shares(total: int, weights: list) -> list[Fraction]:
    exact = [Fraction(w) for w in weights]
    mass = sum(exact)
    return [w / mass * total for w in exact]


weight_lists = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 10**12), weights=weight_lists)
def test_split_exactly_sums_to_total_and_is_proportional(total, weights):
    result = split_exactly(total, np.array(weights))
    assert result.dtype == np.int64 and len(result) == len(weights)
    assert (result >= 0).all()
    zero = np.array(weights) == 0
    assert (result[zero] == 0).all(), "zero weights get nothing"
    if total == 0 or zero.all():
        assert result.sum() == 0
        return
    assert int(result.sum()) == total
    for share, exact in zip(result.tolist(), exact_shares(total, weights)):
        assert abs(share - exact) < 1, (share, float(exact))


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 10**9), weights=st.lists(st.integers(0, 1000), min_size=1, max_size=60))
def test_split_exactly_with_integer_weights(total, weights):
    assume(sum(weights) > 0)
    result = split_exactly(total, np.array(weights))
    assert int(result.sum()) == total
    for share, exact in zip(result.tolist(), exact_shares(total, weights)):
        # Hamilton apportionment: each share is the floor or the ceiling of its exact quota.
        assert share in (exact.__floor__(), exact.__ceil__())


def test_split_exactly_leftover_goes_to_largest_remainders_then_lower_index():
    np.testing.assert_array_equal(split_exactly(2, np.array([1.0, 1.0, 1.0])), [1, 1, 0])
    np.testing.assert_array_equal(split_exactly(10, np.array([1.0, 2.0, 0.0, 3.0])), [2, 3, 0, 5])  # 1.67, 3.33, 5
    np.testing.assert_array_equal(split_exactly(1, np.array([0.0, 0.0, 5.0])), [0, 0, 1])


def test_split_exactly_all_zero_or_empty_pays_nothing():
    assert split_exactly(100, np.zeros(4)).sum() == 0
    assert split_exactly(0, np.ones(4)).sum() == 0
    assert len(split_exactly(100, np.zeros(0))) == 0


def test_split_exactly_does_not_modify_its_input():
    weights = np.array([3.0, 1.0, 0.0])
    kept = copy.deepcopy(weights)
    split_exactly(7, weights)
    np.testing.assert_array_equal(weights, kept)
