"""A member's recent history reads only the monthly partitions its time range reaches."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.db import connection

from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.models import Entry
from ledger.partitions import ENTRY_TABLE, add_months, ensure_partitions, existing_partitions, partition_name

RECENT_HISTORY = (
    "SELECT id, created_at, kind, points FROM ledger_entry "
    "WHERE member_id = %s AND created_at >= %s ORDER BY created_at DESC, id DESC LIMIT 20"
)


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=dt.UTC)


def relation_names(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["Relation Name"]} if "Relation Name" in node else set()
        return found.union(*(relation_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(relation_names(item) for item in node))
    return set()


def scanned_by_recent_history(member, since: dt.datetime) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {RECENT_HISTORY}", [member.pk, since])
        plan = cursor.fetchone()[0]
    return relation_names(json.loads(plan) if isinstance(plan, str) else plan)


def partitions_reaching(since: dt.datetime) -> set[str]:
    """The partitions whose upper bound lies after ``since``, read from the catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [ENTRY_TABLE],
        )
        bounds = cursor.fetchall()
    reaching = set()
    for name, bound in bounds:
        upper = re.search(r"TO \('([^']+)'\)", bound).group(1)
        if dt.datetime.fromisoformat(upper.replace("+00", "+00:00")) > since:
            reaching.add(name)
    return reaching


@pytest.fixture
def half_a_year(make_program, make_member):
    """A member (and a neighbour) with earns, redemptions and expiries from January to June 2026."""
    program = make_program(expiry_days=45)
    member, neighbour = make_member(program), make_member(program)
    for month in range(1, 7):
        for who in (member, neighbour):
            services.points_earn(member=who, points=100, key=f"earn-{who.pk}-{month}", now=at(2026, month))
            services.points_redeem(member=who, points=10, key=f"redeem-{who.pk}-{month}", now=at(2026, month, 10))
        upkeep.lots_expire(now=at(2026, month, 20))
    return member


def test_entries_landed_in_their_months_partitions(half_a_year):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text, count(*) FROM ledger_entry WHERE member_id = %s GROUP BY 1",
            [half_a_year.pk],
        )
        per_partition = dict(cursor.fetchall())
    assert set(per_partition) == {partition_name(dt.date(2026, month, 1)) for month in range(1, 7)}
    assert sum(per_partition.values()) == Entry.objects.filter(member=half_a_year).count()
    assert run_audit() == []


@pytest.mark.parametrize("since", [at(2026, 4, 15), at(2026, 6, 1), at(2026, 2, 28)], ids=str)
def test_recent_history_skips_older_partitions(half_a_year, since):
    scanned = scanned_by_recent_history(half_a_year, since)

    assert scanned == partitions_reaching(since)
    assert partition_name(since.date()) in scanned
    older = {partition_name(dt.date(2026, month, 1)) for month in range(1, since.month)}
    assert older and not scanned & older
    assert "ledger_entry_y2025m12" not in scanned


def test_recent_history_returns_the_newest_rows_of_the_range(half_a_year):
    since = at(2026, 4, 15)
    with connection.cursor() as cursor:
        cursor.execute(RECENT_HISTORY, [half_a_year.pk, since])
        rows = cursor.fetchall()
    expected = (
        Entry.objects.filter(member=half_a_year, created_at__gte=since)
        .order_by("-created_at", "-id").values_list("id", "created_at", "kind", "points")[:20]
    )
    assert rows == list(expected)
    assert {kind for _id, _at, kind, _points in rows} == {"earn", "redeem", "expire"}


def test_new_partitions_are_pruned_alike(make_program, make_member):
    """Partitions created later (here past the test range) take part in pruning like the first ones."""
    created = ensure_partitions(start=dt.date(2032, 1, 1), months_ahead=2)
    assert created == [partition_name(dt.date(2032, month, 1)) for month in (1, 2, 3)]
    assert ensure_partitions(start=dt.date(2032, 1, 1), months_ahead=2) == []
    member = make_member(make_program(expiry_days=None))
    for month in (1, 2, 3):
        services.points_earn(member=member, points=5, key=f"earn-{month}", now=at(2032, month, 5))

    since = at(2032, 2, 10)
    assert scanned_by_recent_history(member, since) == {"ledger_entry_y2032m02", "ledger_entry_y2032m03"}
    assert scanned_by_recent_history(member, at(2032, 3, 31)) == {"ledger_entry_y2032m03"}


@pytest.mark.django_db
@pytest.mark.parametrize(("arguments", "message"), [
    (["--months-ahead", "100000"], "--months-ahead must be between 0 and 1200"),
    (["--months-ahead", "-1"], "--months-ahead must be between 0 and 1200"),
    (["--since", "1900-01"], "--since must be a month from 2000"),
    (["--since", "9999-12"], "--since must be a month from 2000"),
])
def test_ledger_partitions_refuses_months_it_should_not_create(arguments, message):
    from django.core.management import CommandError, call_command

    before = set(existing_partitions())
    with pytest.raises(CommandError, match=message):
        call_command("ledger_partitions", *arguments)
    assert set(existing_partitions()) == before


@pytest.mark.django_db
def test_ledger_audit_refuses_a_limit_below_one():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--limit must be at least 1"):
        call_command("ledger_audit", "--limit", "-1")


@pytest.mark.django_db(transaction=True)
def test_two_creators_of_the_same_months_at_once_both_succeed():
    import threading

    months = [partition_name(add_months(dt.date(2301, 1, 1), n)) for n in range(25)]
    with connection.cursor() as cursor:  # what an interrupted earlier run may have left
        for name in months:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
    results: dict = {}

    def create(name):
        try:
            results[name] = ensure_partitions(start=dt.date(2301, 1, 1), months_ahead=24)
        except Exception as exc:  # noqa: BLE001 - reported below
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(isinstance(r, Exception) for r in results.values()), results
    assert sorted(results["a"] + results["b"]) == sorted(months)
    with connection.cursor() as cursor:
        for name in results["a"] + results["b"]:
            cursor.execute(f'DROP TABLE "{name}"')
