"""``loyalty.prepared``: a statement sent straight through libpq gives the rows, row counts and errors
a psycopg cursor gives, is counted in the query metrics, runs in the transaction that is open, and
leaves the work to a cursor where only a cursor does what is expected."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import OperationalError, ProgrammingError, close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY
from psycopg import pq

from loyalty.db import transient
from loyalty.prepared import prepared_cursor
from tests.api.test_database_interruptions import end_connection

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as a request runs

SQL = ("SELECT %s::bigint, %s::text, %s::timestamptz, %s::numeric, NULL::int, v "
       "FROM unnest(ARRAY[2, 1]) AS v ORDER BY v")
PARAMS = [9007199254740993, "ação ✓", dt.datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=dt.UTC), Decimal("12.50")]
LABELS = {"alias": "default", "vendor": "postgresql"}


def prepared_here() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'loyalty\\_%%'")
        return {row[0] for row in cursor.fetchall()}


def fetch_prepared(sql: str, params) -> list[tuple]:
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def sample(name: str, **extra) -> float:
    return REGISTRY.get_sample_value(name, {**LABELS, **extra}) or 0.0


def test_gives_the_rows_and_types_a_cursor_gives():
    rows = fetch_prepared(SQL, PARAMS)
    with connection.cursor() as cursor:
        cursor.execute(SQL, PARAMS)
        assert rows == cursor.fetchall()
    assert rows == [
        (9007199254740993, "ação ✓", dt.datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=dt.UTC), Decimal("12.50"),
         None, 1),
        (9007199254740993, "ação ✓", dt.datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=dt.UTC), Decimal("12.50"),
         None, 2),
    ]
    assert fetch_prepared(SQL.replace("ARRAY[2, 1]", "ARRAY[]::int[]"), PARAMS) == []


def test_is_prepared_once_on_each_connection():
    fetch_prepared(SQL, PARAMS)
    names = prepared_here()
    assert len(names) == 1
    fetch_prepared(SQL, [*PARAMS[:3], Decimal(1)])
    assert prepared_here() == names
    connection.close()
    assert fetch_prepared(SQL, PARAMS)[0][0] == 9007199254740993  # prepared again on the new one
    assert prepared_here() == names


def test_null_json_and_percent():
    assert fetch_prepared("SELECT %s::text IS NULL, %s::jsonb ->> 'a', '100%%'", [None, '{"a": "b"}']) == [
        (True, "b", "100%")]


def test_is_counted_and_timed():
    fetch_prepared("SELECT 1", [])  # the connection made (its own statements counted) and the statement prepared
    executed, timed = sample("django_db_execute_total"), sample("django_db_query_duration_seconds_count")
    seconds = sample("django_db_query_duration_seconds_sum")
    fetch_prepared("SELECT pg_sleep(%s::float8)", [0.01])
    assert sample("django_db_execute_total") - executed == 1
    assert sample("django_db_query_duration_seconds_count") - timed == 1
    assert sample("django_db_query_duration_seconds_sum") - seconds >= 0.01


def test_a_failed_statement_raises_what_a_cursor_raises_and_is_counted():
    errors = sample("django_db_errors_total", type="UndefinedColumn")
    with pytest.raises(ProgrammingError, match="no_such_column"):
        fetch_prepared("SELECT no_such_column FROM accounts_member WHERE id = %s::bigint", [1])
    assert sample("django_db_errors_total", type="UndefinedColumn") - errors == 1
    assert fetch_prepared("SELECT %s::int + 1", [1]) == [(2,)]  # the connection goes on


def test_a_connection_the_server_ended_is_a_transient_error_and_the_next_one_serves():
    fetch_prepared(SQL, PARAMS)
    end_connection()
    with pytest.raises(OperationalError) as raised:
        fetch_prepared(SQL, PARAMS)
    assert transient(raised.value)
    close_old_connections()  # what the end of a request runs: the broken connection is dropped
    assert connection.connection is None
    assert len(fetch_prepared(SQL, PARAMS)) == 2


def test_inside_a_transaction_it_runs_in_that_transaction():
    fetch_prepared("SELECT 1", [])
    before = prepared_here()
    with transaction.atomic():
        # The transaction's first statement: begun with BEGIN through libpq, then straight through.
        assert connection.connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
        assert fetch_prepared("SELECT %s::int", [3]) == [(3,)]
        assert connection.connection.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        assert len(prepared_here() - before) == 1
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE fetched (v int) ON COMMIT DROP")
        with prepared_cursor() as cursor:  # the transaction is open: straight through libpq
            cursor.execute("INSERT INTO fetched SELECT unnest(%s::int[])", ["{7,8,9}"])
            assert (cursor.rowcount, cursor.description) == (3, None)
            cursor.execute("UPDATE fetched SET v = v + %(by)s::int WHERE v > %(above)s::int RETURNING v",
                           {"by": 10, "above": 7})
            assert cursor.rowcount == 2 and cursor.description == ["v"]
            assert cursor.fetchone() == (18,)
            assert cursor.fetchall() == [(19,)]
            assert cursor.fetchone() is None
        assert len(prepared_here() - before) == 3
        transaction.set_rollback(True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.fetched')")
        assert cursor.fetchone() == (None,)  # rolled back with the transaction


def test_a_transaction_is_committed_through_libpq_and_a_refused_commit_raises():
    from django.db import IntegrityError

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE parent (id int PRIMARY KEY)")
        cursor.execute("CREATE TEMPORARY TABLE child (parent int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)")
    try:
        with transaction.atomic():
            with prepared_cursor() as cursor:
                cursor.execute("INSERT INTO parent VALUES (%s::int)", [1])
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM parent")
            assert cursor.fetchone() == (1,)
        assert connection.connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
        # A deferred foreign key is checked at COMMIT: the commit fails, and nothing of it stays.
        with pytest.raises(IntegrityError, match="foreign key"), transaction.atomic():
            with prepared_cursor() as cursor:
                cursor.execute("INSERT INTO parent VALUES (%s::int)", [2])
                cursor.execute("INSERT INTO child VALUES (%s::int)", [99])
        with connection.cursor() as cursor:
            cursor.execute("SELECT (SELECT count(*) FROM parent), (SELECT count(*) FROM child)")
            assert cursor.fetchone() == (1, 0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE child, parent")


def test_a_transaction_with_an_isolation_level_is_begun_by_psycopg_with_it():
    from psycopg import IsolationLevel

    connection.ensure_connection()
    connection.connection.isolation_level = IsolationLevel.SERIALIZABLE
    try:
        with transaction.atomic():
            assert fetch_prepared("SELECT current_setting(%s::text)", ["transaction_isolation"]) == [
                ("serializable",)]
            with connection.cursor() as cursor:  # and later statements run in that transaction
                cursor.execute("SHOW transaction_isolation")
                assert cursor.fetchone() == ("serializable",)
    finally:
        connection.connection.isolation_level = None


def test_a_failed_statement_in_a_transaction_breaks_it_as_a_cursor_does():
    from django.db import DatabaseError, InternalError

    with transaction.atomic():
        fetch_prepared("SELECT 1", [])
        with pytest.raises(DatabaseError, match="division by zero"):
            fetch_prepared("SELECT 1 / %s::int", [0])
        with pytest.raises(InternalError, match="current transaction is aborted"):
            fetch_prepared("SELECT 1", [])
        transaction.set_rollback(True)
    assert fetch_prepared("SELECT %s::int", [1]) == [(1,)]


def test_statements_dropped_by_the_server_are_prepared_again():
    fetch_prepared("SELECT %s::int", [1])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as a pooler's reset, or psycopg's own rollback, does
    assert fetch_prepared("SELECT %s::int", [2]) == [(2,)]
    assert len(prepared_here()) == 1


def test_logged_queries_see_it():
    with CaptureQueriesContext(connection) as queries:
        assert fetch_prepared("SELECT %s::int * 2", [21]) == [(42,)]
    assert [query["sql"] for query in queries.captured_queries] == ["SELECT $1::int * 2"]  # as the server binds it


def test_with_prepared_statements_off_nothing_is_prepared():
    # DB_PREPARED_STATEMENTS=0 (a pooler that cannot keep them) leaves psycopg's prepare_threshold None.
    fetch_prepared("SELECT 1", [])  # the connection made
    before = prepared_here()
    connection.connection.prepare_threshold = None
    try:
        for _ in range(3):
            assert fetch_prepared("SELECT %s::int * 3", [5]) == [(15,)]
        assert prepared_here() == before
    finally:
        connection.close()


def test_past_the_statements_limit_new_ones_go_through_a_cursor(monkeypatch):
    from loyalty import prepared

    fetch_prepared("SELECT 1", [])
    before = prepared_here()
    monkeypatch.setattr(prepared, "MAX_STATEMENTS", len(prepared._statements))
    for n in range(3):
        assert fetch_prepared(f"SELECT %s::int + {n} -- a text no other test runs", [1]) == [(1 + n,)]
    assert prepared_here() == before  # none of ours (psycopg prepares its own after two runs)
    assert fetch_prepared("SELECT 1", []) == [(1,)]  # those known before still go straight through
