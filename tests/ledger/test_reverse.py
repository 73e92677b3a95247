"""Reversals (refunds) against points that come back, expire or are not yet available."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import F

from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.models import Allocation, Balance, Lot

T0 = dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HOLD_TIMEOUT = dt.timedelta(days=3)


def figures(member) -> tuple[int, int, int, int, int]:
    b = Balance.objects.get(member=member)
    return b.available, b.pending, b.held, b.debt, b.lifetime_expired


def checks_failing() -> set[str]:
    return {discrepancy.check for discrepancy in run_audit()}


# --- debt (negative balances allowed) ---------------------------------------------------


def test_a_cancelled_redemption_pays_the_debt_of_a_refund_and_leaves_nothing_to_expire(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=True, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="e", now=T0)
    redemption = services.points_redeem(member=member, points=100, key="r", now=T0)
    services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)
    assert figures(member) == (-100, 0, 0, 100, 0)

    cancel = services.redemption_cancel(redemption=redemption, key="c", now=T0 + 2 * DAY)

    assert figures(member) == (0, 0, 0, 0, 0)
    assert Lot.objects.get(operation=earn).remaining == 0
    assert cancel.result == {"redemption": redemption.pk, "returned": 100, "expired": 0, "refunds_paid": 100}
    assert run_audit() == []
    upkeep.lots_expire(now=T0 + 400 * DAY)
    assert figures(member) == (0, 0, 0, 0, 0)


def test_a_voided_hold_pays_the_debt_of_a_refund(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=True, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="e", now=T0)
    hold = services.points_hold(member=member, points=100, key="h", now=T0, timeout=HOLD_TIMEOUT)
    services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)
    assert figures(member) == (-100, 0, 100, 100, 0)

    services.hold_void(hold=hold, key="v", now=T0 + 2 * DAY)

    assert figures(member) == (0, 0, 0, 0, 0)
    assert run_audit() == []
    upkeep.lots_expire(now=T0 + 400 * DAY)
    assert figures(member) == (0, 0, 0, 0, 0)


def test_returned_points_pay_debt_from_live_lots_first_and_the_rest_back(make_program, make_member):
    """Of points coming back to a lot that expired and to one still live, the live ones pay the
    debt, as points just earned would; the others expire at once, as before."""
    member = make_member(make_program(allow_negative_balance=True, expiry_days=None))
    services.points_earn(member=member, points=100, key="never", now=T0)
    member.program.expiry_days = 10
    member.program.save(update_fields=["expiry_days"])
    soon = services.points_earn(member=member, points=100, key="soon", now=T0)
    redemption = services.points_redeem(member=member, points=200, key="r", now=T0)
    services.points_reverse(earn=soon, points=60, key="rev", now=T0 + DAY)
    assert figures(member) == (-60, 0, 0, 60, 0)

    services.redemption_cancel(redemption=redemption, key="c", now=T0 + 20 * DAY)

    assert figures(member) == (40, 0, 0, 0, 100)
    assert run_audit() == []


def test_a_refund_takes_points_not_yet_available_before_making_debt(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=True, pending_days=5, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="a", now=T0)
    services.points_redeem(member=member, points=100, key="r", now=T0 + 6 * DAY)
    services.points_earn(member=member, points=150, key="b", now=T0 + 6 * DAY)

    services.points_reverse(earn=earn, points=100, key="rev", now=T0 + 7 * DAY)

    assert figures(member) == (0, 50, 0, 0, 0)
    assert run_audit() == []
    upkeep.lots_mature(now=T0 + 20 * DAY)
    assert figures(member) == (50, 0, 0, 0, 0)


# --- uncollected reversals (no negative balances) ---------------------------------------


def test_a_cancelled_redemption_pays_what_a_refund_could_not_collect(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=False, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="e", now=T0)
    redemption = services.points_redeem(member=member, points=100, key="r", now=T0)
    reversal = services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)

    cancel = services.redemption_cancel(redemption=redemption, key="c", now=T0 + 2 * DAY)

    assert figures(member) == (0, 0, 0, 0, 0)
    assert Balance.objects.get(member=member).lifetime_redeemed == 0
    assert reversal.result == {"earn": earn.pk, "requested": 100, "reversed": 0, "uncollected": 100,
                               "claimed": 100, "expired": 0}
    assert cancel.result["refunds_paid"] == 100
    assert run_audit() == []


def test_a_voided_hold_pays_what_a_refund_could_not_collect(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=False, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="e", now=T0)
    hold = services.points_hold(member=member, points=100, key="h", now=T0, timeout=HOLD_TIMEOUT)
    reversal = services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)

    services.hold_void(hold=hold, key="v", now=T0 + 2 * DAY)

    assert figures(member) == (0, 0, 0, 0, 0)
    assert (reversal.result["uncollected"], reversal.result["claimed"]) == (100, 100)
    assert run_audit() == []


def test_a_claim_survives_the_capture_of_its_hold(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=False, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="e", now=T0)
    hold = services.points_hold(member=member, points=80, key="h", now=T0, timeout=HOLD_TIMEOUT)
    services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)  # 20 collected, 80 claimed
    services.hold_capture(hold=hold, key="cap", now=T0 + DAY)

    services.redemption_cancel(redemption=hold.operation, key="c", now=T0 + 2 * DAY)

    assert figures(member) == (0, 0, 0, 0, 0)
    assert run_audit() == []


def test_only_points_spent_before_the_refund_pay_it(make_program, make_member):
    """Points redeemed after the refund, and new earnings, owe it nothing when they come back."""
    member = make_member(make_program(allow_negative_balance=False, expiry_days=365))
    earn = services.points_earn(member=member, points=100, key="a", now=T0)
    before = services.points_redeem(member=member, points=100, key="r1", now=T0)
    services.points_reverse(earn=earn, points=100, key="rev", now=T0 + DAY)
    services.points_earn(member=member, points=70, key="b", now=T0 + DAY)
    after = services.points_redeem(member=member, points=70, key="r2", now=T0 + DAY)

    services.redemption_cancel(redemption=after, key="c2", now=T0 + 2 * DAY)
    assert figures(member)[0] == 70
    services.redemption_cancel(redemption=before, key="c1", now=T0 + 2 * DAY)
    assert figures(member)[0] == 70
    assert run_audit() == []


# --- lots that expired ------------------------------------------------------------------


def test_a_refund_of_an_expired_earn_takes_nothing_from_other_points(make_program, make_member):
    member = make_member(make_program(expiry_days=30))
    a = services.points_earn(member=member, points=100, key="a", now=T0)
    services.points_earn(member=member, points=100, key="b", now=T0 + 20 * DAY)
    upkeep.lots_expire(now=T0 + 31 * DAY)

    reversal = services.points_reverse(earn=a, points=100, key="rev", now=T0 + 32 * DAY)

    assert figures(member) == (100, 0, 0, 0, 100)
    assert reversal.result == {"earn": a.pk, "requested": 100, "reversed": 0, "uncollected": 0,
                               "claimed": 0, "expired": 100}
    assert run_audit() == []


def test_a_refund_of_a_partly_spent_expired_earn_takes_back_only_what_was_spent(make_program, make_member):
    member = make_member(make_program(expiry_days=30))
    a = services.points_earn(member=member, points=100, key="a", now=T0)
    services.points_redeem(member=member, points=60, key="r", now=T0)
    services.points_earn(member=member, points=100, key="b", now=T0 + 20 * DAY)
    upkeep.lots_expire(now=T0 + 31 * DAY)  # 40 of a expire

    first = services.points_reverse(earn=a, points=30, key="rev1", now=T0 + 32 * DAY)
    second = services.points_reverse(earn=a, points=70, key="rev2", now=T0 + 32 * DAY)

    assert figures(member) == (40, 0, 0, 0, 40)
    assert (first.result["expired"], first.result["reversed"]) == (30, 0)
    assert (second.result["expired"], second.result["reversed"]) == (10, 60)
    assert run_audit() == []


# --- the audit --------------------------------------------------------------------------


@pytest.fixture
def spent_member(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=True, expiry_days=365))
    services.points_earn(member=member, points=100, key="e", now=T0)
    services.points_redeem(member=member, points=40, key="r", now=T0)
    assert run_audit() == []
    return member


def test_the_audit_reports_debt_kept_next_to_points_in_lots(spent_member):
    Balance.objects.filter(member=spent_member).update(debt=10, available=F("available") - 10)
    assert "debt_paid_first" in checks_failing()


def test_the_audit_reports_points_kept_in_an_expired_lot(spent_member):
    Lot.objects.filter(member=spent_member).update(expired_at=T0 + DAY)
    assert "expired_lot_is_empty" in checks_failing()


def test_the_audit_reports_points_spent_from_a_lot_at_or_past_its_expiry(spent_member):
    Lot.objects.filter(member=spent_member).update(expires_at=T0)  # the redemption was made at T0
    assert "spent_before_expiry" in checks_failing()
    Lot.objects.filter(member=spent_member).update(expires_at=T0 + dt.timedelta(microseconds=1))
    assert "spent_before_expiry" not in checks_failing()


def test_the_audit_reports_a_claim_no_reversal_made(spent_member):
    Allocation.objects.filter(operation__member=spent_member).update(claimed=5)
    assert "reversal_claims" in checks_failing()


def test_the_audit_reports_a_claim_given_back_without_paying_its_refund(make_program, make_member):
    member = make_member(make_program(allow_negative_balance=False, expiry_days=365))
    services.points_earn(member=member, points=100, key="e", now=T0)
    redemption = services.points_redeem(member=member, points=100, key="r", now=T0)
    services.redemption_cancel(redemption=redemption, key="c", now=T0 + DAY)
    Allocation.objects.filter(operation=redemption).update(claimed=5)
    assert {"reversal_claims", "reversal_claims_paid"} <= checks_failing()
