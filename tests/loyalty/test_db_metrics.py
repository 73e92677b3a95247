"""django-prometheus's database series, kept up by ``loyalty.dbbackend.metrics`` for Django's
cursors and for the prepared ones (``loyalty.db.prepared_cursor``)."""

import pytest
from django.db import DatabaseError, connection
from prometheus_client import REGISTRY

from loyalty.db import prepared_cursor

pytestmark = pytest.mark.django_db

LABELS = {"alias": "default", "vendor": "postgresql"}


def value(name: str, **extra) -> float:
    return REGISTRY.get_sample_value(name, {**LABELS, **extra}) or 0.0


def figures(**extra) -> tuple[float, ...]:
    return (value("django_db_execute_total"), value("django_db_query_duration_seconds_count"),
            value("django_db_query_duration_seconds_sum"), value("django_db_errors_total", type="UndefinedColumn"),
            value("django_db_execute_many_total"))


@pytest.mark.parametrize("cursor_of", [connection.cursor, prepared_cursor], ids=["django", "prepared"])
def test_each_statement_is_counted_and_timed(cursor_of):
    executed, timed, seconds, errors, many = figures()
    with cursor_of() as cursor:
        cursor.execute("SELECT pg_sleep(0.01)")
        cursor.execute("SELECT 1")
    after = figures()
    assert after[0] - executed == 2
    assert after[1] - timed == 2
    assert after[2] - seconds >= 0.01
    assert (after[3], after[4]) == (errors, many)


@pytest.mark.parametrize("cursor_of", [connection.cursor, prepared_cursor], ids=["django", "prepared"])
def test_a_failed_statement_is_counted_by_its_error_and_timed(cursor_of):
    # By the type of psycopg's exception, as django-prometheus counts it (Django wraps it later).
    executed, timed, _seconds, errors, _many = figures()
    with pytest.raises(DatabaseError), cursor_of() as cursor:
        cursor.execute("SELECT no_such_column FROM accounts_member")
    after = figures()
    assert (after[0] - executed, after[1] - timed, after[3] - errors) == (1, 1, 1)


def test_executemany_counts_every_row():
    executed, timed, _seconds, _errors, many = figures()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE metrics_probe (n int)")
        cursor.executemany("INSERT INTO metrics_probe VALUES (%s)", ((n,) for n in range(3)))
        cursor.execute("SELECT count(*) FROM metrics_probe")
        assert cursor.fetchone() == (3,)
    after = figures()
    assert after[0] - executed == 2 + 3
    assert after[4] - many == 3
    assert after[1] - timed == 3
