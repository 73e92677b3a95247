"""Concurrent calls, each thread on its own database connection: one member's lock, one key's effect."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection

from accounts.models import Member
from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.errors import InsufficientPoints, InvalidLedgerState
from ledger.models import Allocation, Balance, Entry, Hold, Lot, Operation

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("transactional_db")]

NOW = dt.datetime(2026, 5, 4, 9, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together; return each result or exception."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test sorts them out
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (a deadlock?)"
    return results


def outcomes(results: list[object]) -> Counter:
    expected = (InsufficientPoints, InvalidLedgerState)
    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, expected)]
    assert not unexpected, unexpected
    return Counter(type(r).__name__ for r in results)


def fresh(member: Member) -> Member:
    return Member.objects.select_related("program").get(pk=member.pk)


def test_concurrent_redemptions_never_overspend(member):
    for i, points in enumerate((40, 40, 40)):
        services.points_earn(member=member, points=points, key=f"earn-{i}", now=NOW - i * DAY)

    results = in_threads(32, lambda i: services.points_redeem(member=fresh(member), points=7, key=f"r{i}", now=NOW))

    assert outcomes(results) == {"Operation": 120 // 7, "InsufficientPoints": 32 - 120 // 7}
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.held, balance.lifetime_redeemed) == (120 % 7, 0, 7 * (120 // 7))
    assert Entry.objects.filter(member=member, kind="redeem").count() == 120 // 7
    assert sum(Allocation.objects.values_list("points", flat=True)) == 7 * (120 // 7)
    assert min(Lot.objects.filter(member=member).values_list("remaining", flat=True)) >= 0
    # soonest expiry first: the two older lots are spent out, the newest keeps the rest
    assert list(Lot.objects.filter(member=member).order_by("expires_at").values_list("remaining", flat=True)) == [
        0, 0, 120 % 7]
    assert run_audit() == []


def test_concurrent_earns_with_one_key_have_one_effect(member):
    results = in_threads(16, lambda i: services.points_earn(member=fresh(member), points=25, key="once", now=NOW))

    assert outcomes(results) == {"Operation": 16}
    assert len({r.pk for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 15
    assert Operation.objects.filter(key="once").count() == 1
    assert Lot.objects.filter(member=member).count() == 1
    assert Entry.objects.filter(member=member).count() == 1
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.lifetime_earned) == (25, 25)
    assert run_audit() == []


def test_concurrent_redemptions_with_one_key_have_one_effect(member):
    services.points_earn(member=member, points=100, key="earn", now=NOW)

    results = in_threads(16, lambda i: services.points_redeem(member=fresh(member), points=30, key="once", now=NOW))

    assert outcomes(results) == {"Operation": 16}
    assert len({r.pk for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 15
    assert Entry.objects.filter(member=member, kind="redeem").count() == 1
    assert Allocation.objects.count() == 1
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.lifetime_redeemed) == (70, 30)
    assert run_audit() == []


def test_concurrent_capture_and_void_of_one_hold_resolve_it_once(member):
    services.points_earn(member=member, points=100, key="earn", now=NOW)
    hold = services.points_hold(member=member, points=60, key="hold", now=NOW)

    def resolve(i: int):
        action = services.hold_capture if i % 2 else services.hold_void
        return action(hold=Hold.objects.get(pk=hold.pk), key=f"resolve-{i}", now=NOW)

    results = in_threads(16, resolve)

    assert outcomes(results) == {"Hold": 1, "InvalidLedgerState": 15}
    winner = next(r for r in results if isinstance(r, Hold))
    balance = Balance.objects.get(member=member)
    if winner.status == Hold.Status.CAPTURED:
        assert (balance.available, balance.held, balance.lifetime_redeemed) == (40, 0, 60)
    else:
        assert (balance.available, balance.held, balance.lifetime_redeemed) == (100, 0, 0)
    assert Hold.objects.get(pk=hold.pk).status == winner.status
    assert Operation.objects.filter(key__startswith="resolve-").count() == 1
    assert run_audit() == []


@pytest.fixture
def members_with_an_expiring_lot(make_program, make_member):
    """Six members, each with 50 points expiring at NOW and 50 expiring twenty days later."""
    program = make_program(expiry_days=30)
    members = [make_member(program) for _ in range(6)]
    for member in members:
        services.points_earn(member=member, points=50, key=f"old-{member.pk}", now=NOW - 30 * DAY)
        services.points_earn(member=member, points=50, key=f"new-{member.pk}", now=NOW - 10 * DAY)
    return members


def test_expiry_racing_with_redemptions_at_the_same_moment(members_with_an_expiring_lot):
    members = members_with_an_expiring_lot

    def work(i: int):
        if i < 3:
            return upkeep.lots_expire(now=NOW, batch_size=2)
        member = members[i % len(members)]
        return services.points_redeem(member=fresh(member), points=30, key=f"r{i}", now=NOW)

    results = in_threads(3 + 2 * len(members), work)

    # whoever comes first expires the old lot; then only the new lot's 50 can be spent: one 30 of two
    assert outcomes(results) == {"int": 3, "Operation": len(members), "InsufficientPoints": len(members)}
    for member in members:
        balance = Balance.objects.get(member=member)
        assert (balance.available, balance.lifetime_expired, balance.lifetime_redeemed) == (20, 50, 30)
        assert list(Entry.objects.filter(member=member, kind="expire").values_list("points", flat=True)) == [-50]
    assert run_audit() == []


def test_expiry_racing_with_redemptions_just_before_it(members_with_an_expiring_lot):
    """Redemptions stamped an hour before the expiry, arriving while it runs: either may go first,
    nothing is counted twice and no point is lost."""
    members = members_with_an_expiring_lot

    def work(i: int):
        if i < 3:
            return upkeep.lots_expire(now=NOW, batch_size=2)
        member = members[i % len(members)]
        return services.points_redeem(member=fresh(member), points=30, key=f"r{i}", now=NOW - dt.timedelta(hours=1))

    outcomes(in_threads(3 + 2 * len(members), work))

    for member in members:
        balance = Balance.objects.get(member=member)
        assert balance.lifetime_earned == 100
        assert balance.available + balance.lifetime_redeemed + balance.lifetime_expired == 100
        assert balance.lifetime_redeemed in (30, 60)
        per_lot = Counter(Entry.objects.filter(member=member, kind="expire").values_list("lot_id", flat=True))
        assert set(per_lot.values()) <= {1}
    assert run_audit() == []


def test_member_lock_finds_the_member_and_holds_its_balance_row(member, make_program, make_member):
    other = make_member(make_program(slug="elsewhere"), external_id=member.external_id + "-x")
    services.points_earn(member=fresh(member), points=70, key="seed-lock", now=NOW)
    assert services.member_lock(member.program_id, "nobody") is None
    assert services.member_lock(member.program_id, other.external_id) is None  # another program's
    held, released = threading.Event(), threading.Event()

    def hold() -> tuple:
        from django.db import transaction

        with transaction.atomic():
            found = services.member_lock(member.program_id, member.external_id)
            held.set()
            released.wait(timeout=30)
        return found

    def try_lock() -> dict:
        held.wait(timeout=30)
        try:
            from django.db import transaction

            with transaction.atomic():
                return services.members_lock([member.pk], skip_locked=True)
        finally:
            released.set()

    found, skipped = in_threads(2, lambda i: hold() if i == 0 else try_lock())
    locked_member, balance = found
    assert (locked_member.pk, locked_member.external_id, locked_member.attributes) == (
        member.pk, member.external_id, member.attributes)
    assert (balance.member_id, balance.available, balance.lifetime_earned) == (member.pk, 70, 70)
    assert skipped == {}  # the row was held by the first transaction
