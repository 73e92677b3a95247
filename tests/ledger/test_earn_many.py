import datetime as dt

import pytest
from django.db import transaction

from ledger import services
from ledger.audit import run_audit
from ledger.errors import InvalidPoints
from ledger.models import Balance, Entry, Lot
from ledger.services import EarnRequest

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_batch_earn_matches_single_earns(program, make_member):
    a, b = make_member(program), make_member(program)
    requests = [EarnRequest(a.pk, 10, "k1"), EarnRequest(b.pk, 5, "k2"), EarnRequest(a.pk, 7, "k3")]
    created = services.points_earn_many(program=program, requests=requests, now=NOW)
    assert set(created) == {"k1", "k2", "k3"}
    assert Balance.objects.get(member=a).available == 17
    assert Balance.objects.get(member=b).available == 5
    assert Lot.objects.filter(member=a).count() == 2
    assert run_audit() == []


def test_batch_earn_skips_keys_used_before_and_repeated_in_batch(program, member):
    services.points_earn(member=member, points=10, key="k1", now=NOW)
    requests = [EarnRequest(member.pk, 10, "k1"), EarnRequest(member.pk, 3, "k2"), EarnRequest(member.pk, 3, "k2")]
    created = services.points_earn_many(program=program, requests=requests, now=NOW)
    assert list(created) == ["k2"]
    assert Balance.objects.get(member=member).available == 13
    assert Entry.objects.filter(member=member).count() == 2
    assert run_audit() == []


def test_batch_earn_settles_debt_and_respects_pending(make_program, make_member):
    program = make_program(pending_days=3, allow_negative_balance=True)
    member = make_member(program)
    earn = services.points_earn(member=member, points=10, key="e", now=NOW)
    later = NOW + dt.timedelta(days=4)
    services.points_redeem(member=member, points=10, key="r", now=later)
    services.points_reverse(earn=earn, points=10, key="rev", now=later)
    assert Balance.objects.get(member=member).available == -10
    services.points_earn_many(program=program, requests=[EarnRequest(member.pk, 25, "k")], now=later)
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.pending, balance.debt) == (-10 + 10, 15, 0)
    assert run_audit() == []


def test_batch_earn_with_the_callers_locks_settles_debt_and_refuses_other_programs(make_program, make_member):
    program = make_program(allow_negative_balance=True)
    member, stranger = make_member(program), make_member(make_program())
    earn = services.points_earn(member=member, points=10, key="e", now=NOW)
    services.points_redeem(member=member, points=10, key="r", now=NOW)
    services.points_reverse(earn=earn, points=10, key="rev", now=NOW)
    with transaction.atomic():
        locked = services.members_lock([member.pk, stranger.pk])
        services.points_earn_many(program=program, requests=[EarnRequest(member.pk, 25, "k")], now=NOW,
                                  locked=locked)
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt) == (-10 + 25, 0)
    with pytest.raises(InvalidPoints), transaction.atomic():
        services.points_earn_many(program=program, requests=[EarnRequest(stranger.pk, 5, "s")], now=NOW,
                                  locked=services.members_lock([stranger.pk]))
    assert run_audit() == []
