"""The database backend's health check (loyalty/dbbackend): a connection that answered a moment
ago is used without ``SELECT 1``; one idle for longer is checked, and a dead one replaced.

Each test plays requests the way Django does (``close_if_unusable_or_obsolete`` as a request
starts and as it ends) and kills the connection's server process in between."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import DataError, OperationalError, connection, transaction

from loyalty.db import prepared_cursor

pytestmark = pytest.mark.django_db(transaction=True)


def _request(cursor_of=None) -> int:
    """One request that runs a query; the server process id that answered it."""
    connection.close_if_unusable_or_obsolete()
    try:
        with (cursor_of or connection.cursor)() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        connection.close_if_unusable_or_obsolete()


def _kill(pid: int) -> None:
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.autocommit = True
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        for _ in range(200):
            if not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.01)
        raise AssertionError(f"backend {pid} is still there")
    finally:
        other.close()


def test_health_checks_are_on():
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    assert connection.settings_dict["ENGINE"] == "loyalty.dbbackend"


def test_a_connection_that_just_answered_is_not_checked(settings):
    settings.DB_HEALTH_CHECK_GRACE_SECONDS = 60
    pid = _request()
    _kill(pid)
    # No SELECT 1 first: the request finds the dead connection itself...
    with pytest.raises(OperationalError):
        _request()
    # ...and Django drops it at the end of that request, so the next one is served.
    assert _request() != pid


def test_an_idle_connection_is_checked_and_replaced(settings):
    settings.DB_HEALTH_CHECK_GRACE_SECONDS = 0
    pid = _request()
    _kill(pid)
    assert _request() != pid


def test_a_prepared_statement_gets_the_health_check_too(settings):
    settings.DB_HEALTH_CHECK_GRACE_SECONDS = 0
    pid = _request(prepared_cursor)
    _kill(pid)
    assert _request(prepared_cursor) != pid


def test_a_request_that_ran_no_query_does_not_extend_the_trust(settings):
    settings.DB_HEALTH_CHECK_GRACE_SECONDS = 0.5
    pid = _request()
    _kill(pid)
    # Requests that touch no database (a health probe, a static file) for longer than the grace.
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        connection.close_if_unusable_or_obsolete()
        connection.close_if_unusable_or_obsolete()
        time.sleep(0.05)
    assert _request() != pid


# --- prepared statements outlive a rollback ---------------------------------------------------


class Refused(Exception):
    pass


def _prepared_names() -> set[str]:
    """The statements psycopg and ``loyalty.prepared`` prepared on this session (PostgreSQL's own list)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements "
                       "WHERE name LIKE '\\_pg3\\_%%' OR name LIKE 'loyalty\\_%%'")
        return {name for (name,) in cursor.fetchall()}


def _answer(n: int) -> int:
    """A typed statement run often enough for psycopg to prepare it."""
    with prepared_cursor() as cursor:
        cursor.execute("SELECT %s::bigint * 2", [n])
        return cursor.fetchone()[0]


def _write(name: str) -> None:
    from accounts.models import Program

    Program.objects.create(name=name, slug=name)


def _programs() -> set[str]:
    from accounts.models import Program

    return set(Program.objects.values_list("slug", flat=True))


def test_a_rollback_undoes_the_writes_and_keeps_the_prepared_statements():
    for n in range(3):
        assert _answer(n) == 2 * n
    prepared = _prepared_names()
    assert prepared, "the statement should be prepared by now"
    with pytest.raises(Refused), transaction.atomic():
        _write("refused")
        assert _answer(21) == 42
        raise Refused
    assert "refused" not in _programs()
    assert _prepared_names() == prepared
    assert _answer(50) == 100  # and they still run


def test_a_savepoint_rollback_undoes_its_writes_only_and_keeps_the_prepared_statements():
    for n in range(3):
        _answer(n)
    prepared = _prepared_names()
    with transaction.atomic():
        _write("kept")
        with pytest.raises(Refused), transaction.atomic():
            _write("inner")
            raise Refused
        assert _answer(4) == 8
    assert {"kept"} <= _programs() and "inner" not in _programs()
    assert _prepared_names() == prepared


def test_a_rollback_after_a_database_error_still_works():
    from django.db import IntegrityError

    _answer(1), _answer(2), _answer(3)
    with transaction.atomic():
        _write("dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        _write("dup")
    assert _programs() >= {"dup"} and _answer(6) == 12


def test_a_rollback_on_a_dead_connection_drops_it_and_the_next_query_reconnects():
    with pytest.raises(Refused), transaction.atomic():
        _write("lost")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        _kill(pid)
        raise Refused
    # libpq's rollback failed, psycopg's raised, and Django dropped the connection and opened another.
    assert _request() != pid
    assert "lost" not in _programs()


# --- timestamptz values, parsed in C ------------------------------------------------------

TIMESTAMPS = ["2027-03-05 15:26:00.06958+00", "2027-03-05 15:26:00+00", "2026-03-29 01:30:00.5+01",
              "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "2024-02-29 12:00:00-03:30"]


def test_timestamps_load_in_c_with_the_values_djangos_loader_gives():
    from django.db.backends.postgresql.psycopg_any import get_adapters_template
    from psycopg import pq

    from loyalty.dbbackend.adapters import TIMESTAMPTZ_OID, UtcTimestamptzLoader, in_c

    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, pq.Format.TEXT)
    assert in_c() and loader is UtcTimestamptzLoader
    params = {**connection.get_connection_params(), "context": get_adapters_template(True, connection.timezone)}
    djangos = connection.get_new_connection(params)  # Django's own loader, in Python
    try:
        djangos.execute("SET TIME ZONE 'UTC'")
        sql = "SELECT unnest(%s::timestamptz[])"
        with connection.cursor() as cursor:
            cursor.execute(sql, [TIMESTAMPS])
            ours = [row[0] for row in cursor.fetchall()]
        expected = [row[0] for row in djangos.execute(sql, [TIMESTAMPS]).fetchall()]
    finally:
        djangos.close()
    assert ours == expected and [value.tzinfo for value in ours] == [dt.UTC] * len(TIMESTAMPS)
    assert ours[0] == dt.datetime(2027, 3, 5, 15, 26, 0, 69580, dt.UTC)


def test_a_timestamp_python_cannot_hold_is_refused_as_before():
    with connection.cursor() as cursor, pytest.raises(DataError):
        cursor.execute("SELECT 'infinity'::timestamptz")
        cursor.fetchone()
