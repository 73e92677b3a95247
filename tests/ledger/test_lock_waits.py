"""A spend that waits for the member's lock decides on the ledger as the transaction it waited for
left it, not as it was when the spend's statement began: what that transaction gave back to a lot
since past its expiry expires before it is spent, and an operation it made with the same key is
found, not made again."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import transaction

from accounts.models import Member
from campaigns import services as campaigns
from campaigns.models import Redemption, Reward
from ledger import services
from ledger.audit import run_audit
from ledger.models import Balance, Hold, Lot
from tests.api.fixtures import in_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NOW = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def _fresh(member: Member) -> Member:
    return Member.objects.select_related("program").get(pk=member.pk)


def _while_locked(hold_lock, then):
    """Run ``hold_lock`` (which sets the event it is given once it holds the member's lock, and
    keeps it a moment) and, once it holds the lock, ``then``, which waits for it."""
    results: dict = {}
    locked = threading.Event()
    first = in_thread(lambda: hold_lock(locked), results, "first")
    assert locked.wait(10)
    second = in_thread(then, results, "second")
    time.sleep(0.3)
    assert "second" not in results, results.get("second")  # still waiting for the lock
    first.join(30)
    second.join(30)
    return results


@pytest.mark.parametrize("spend", ["redeem", "redeem-by-external-id"])
def test_points_given_back_to_a_lot_while_a_spend_waits_expire_if_the_lot_is_past_expiry(
        make_program, make_member, spend):
    program = make_program(expiry_days=30)
    member = make_member(program, external_id="c-1")
    services.points_earn(member=member, points=100, key="old", now=NOW)  # expires at NOW + 30 days
    services.points_earn(member=member, points=100, key="new", now=NOW + 10 * DAY)
    expiry = NOW + 30 * DAY
    hold = services.points_hold(member=_fresh(member), points=100, key="h", now=expiry - DAY,
                                timeout=dt.timedelta(days=5))  # all of the old lot

    def void(locked):
        with transaction.atomic():
            services.hold_void(hold=Hold.objects.get(pk=hold.pk), key="v", now=expiry - SECOND)
            locked.set()
            time.sleep(1.0)
        return "voided"

    def redeem():
        if spend == "redeem":
            return services.points_redeem(member=_fresh(member), points=100, key="r", now=expiry + SECOND)
        return campaigns.redemption_create(program=program, member_external_id="c-1", points=100, key="r",
                                           now=expiry + SECOND)

    results = _while_locked(void, redeem)
    assert results["first"] == "voided"
    assert not isinstance(results["second"], Exception), results["second"]
    old, new = Lot.objects.get(operation__key="old"), Lot.objects.get(operation__key="new")
    assert (old.remaining, old.expired_at is not None, new.remaining) == (0, True, 0)  # the new lot paid
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.lifetime_expired, balance.lifetime_redeemed) == (0, 100, 100)
    assert run_audit() == []


@pytest.mark.parametrize("by", ["member", "external-id"])
def test_the_same_key_sent_while_its_first_redemption_holds_the_lock_gets_that_redemption(
        make_program, make_member, by):
    program = make_program()
    member = make_member(program, external_id="c-1")
    services.points_earn(member=member, points=1000, key="e", now=NOW)
    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=100, stock=10)

    def redeem(**extra):
        who = {"member": _fresh(member)} if by == "member" else {"program": program, "member_external_id": "c-1"}
        return campaigns.redemption_create(**who, reward_code="coffee", key="web-redeem:twice", now=NOW + DAY,
                                           **extra)

    def first(locked):
        def slow(_outcome):  # in the redemption's transaction, under the member's lock
            locked.set()
            time.sleep(1.0)

        return redeem(before_commit=slow)

    results = _while_locked(first, redeem)
    assert isinstance(results["first"], Redemption), results["first"]
    assert isinstance(results["second"], Redemption), results["second"]
    assert results["second"].pk == results["first"].pk
    assert Redemption.objects.filter(member=member).count() == 1
    assert Reward.objects.get(program=program, code="coffee").stock == 9
    assert Balance.objects.get(member=member).available == 900
    assert run_audit() == []
