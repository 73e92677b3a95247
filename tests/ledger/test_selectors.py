"""The API's one-query balance read gives what the ORM read gives."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from ledger import services
from ledger.models import Balance
from ledger.selectors import balance_by_external_id, balance_output, balance_read, expiring_by_member


def test_one_query_balance_equals_the_orm_read(program, make_member, django_assert_num_queries):
    now = timezone.now()
    rich = make_member(program, external_id="rich")
    for days, points in ((300, 10), (200, 20), (100, 30)):
        services.points_earn(member=rich, points=points, key=f"e{days}", now=now - dt.timedelta(days=days))
    services.points_redeem(member=rich, points=15, key="r1", now=now)  # empties the oldest lot, dents the next
    services.points_hold(member=rich, points=5, key="h1", now=now)
    bare = make_member(program, external_id="bare")
    Balance.objects.filter(member=bare).delete()  # a member with no balance row reads as zeros

    for member in (rich, bare):
        orm = balance_output(Balance.objects.filter(member=member).first(), expiring_by_member([member.pk])[member.pk])
        with django_assert_num_queries(1):
            assert balance_by_external_id(program.pk, member.external_id) == orm
        with django_assert_num_queries(1):
            assert balance_read(member) == orm
    assert [lot["points"] for lot in balance_by_external_id(program.pk, "rich")["expiring"]] == [10, 30]
    assert balance_by_external_id(program.pk, "nobody") is None


def test_another_programs_member_is_not_found(program, make_program, make_member):
    make_member(program, external_id="c-1")
    assert balance_by_external_id(make_program().pk, "c-1") is None
