"""The database backend's health check (loyalty/dbbackend): a connection that answered a moment
ago is used without ``SELECT 1``; one idle for longer is checked, and a dead one replaced.

Each test plays requests the way Django does (``close_if_unusable_or_obsolete`` as a request
starts and as it ends) and kills the connection's server process in between."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError, connection

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
