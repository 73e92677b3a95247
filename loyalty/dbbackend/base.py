"""PostgreSQL, instrumented by django-prometheus, with a health check that costs no round trip
on a busy connection, prepared statements that outlive a rollback, and ``timestamptz`` values
parsed by psycopg's C loader (``adapters.py``).

Django's ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every request that
reuses a connection: on a short request (a balance read is one statement) that is a second round
trip. Here a connection whose last request ran its queries without a connection error less than
``DB_HEALTH_CHECK_GRACE_SECONDS`` ago (default 1) is used without that check; one idle for longer
is checked as before. What that costs: a connection that breaks within that second (the database
restarted, the backend was killed) fails the request that finds it, as it would with health checks
off, and Django then drops it at the end of that request.

``COMMIT`` goes straight to libpq, as ``loyalty.prepared`` sends the ``BEGIN`` (see there). A
transaction may give its ``COMMIT`` statements to carry (``run_with_commit``): they run last in the
transaction, sent with the ``COMMIT`` in one round trip.

psycopg forgets every statement it prepared on a connection at each ``ROLLBACK`` and ``ROLLBACK TO
SAVEPOINT`` (and sends ``DEALLOCATE ALL``), in case the transaction created an object a statement
was prepared against. Every refused request rolls back (a redemption over the balance, a reward out
of stock), so the connection that served it prepared its hot statements again, two round trips
each, and PostgreSQL parsed and planned them again: in ``bench.api_redemptions``, with about a third
of the requests refused, PostgreSQL spent 2.4-2.5 ms of CPU a request instead of 1.5-1.7, and the
server answered 9-20% fewer requests a second (``bench/RESULTS.md``). Here both rollbacks go
straight to libpq, past that cache, so the statements stay prepared. PostgreSQL's prepared
statements belong to the session, not to the transaction: a rollback leaves them in place, and
PostgreSQL itself re-plans one whose tables changed. What psycopg guards against (a statement
prepared against a table created in the transaction that rolled back) does not happen here:
requests run no DDL, and the partition and schema changes (migrations, ``ledger_partitions``)
commit. If libpq's rollback fails, psycopg's runs, and raises.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base as postgresql
from django.db.backends.utils import debug_transaction
from django.db.transaction import TransactionManagementError
from django_prometheus.db.backends.postgresql import base
from psycopg import pq

from loyalty.dbbackend.adapters import with_utc_loader
from loyalty.dbbackend.metrics import exporting_cursor
from loyalty.prepared import check_result, forget_prepared


class DatabaseWrapper(base.DatabaseWrapper):
    answered_at = float("-inf")  # when a request last ran queries on this connection without a connection error
    _with_commit: tuple[bytes, ...] = ()  # statements the open transaction's COMMIT carries

    def run_with_commit(self, sql: bytes) -> None:
        """Run ``sql`` in the open transaction, last: complete statements, each ended by a
        semicolon, with their values written in (``psycopg.pq.Escaping.escape_literal``). In the outermost
        ``atomic`` block they are sent with its ``COMMIT`` as one simple query, so they cost no
        round trip of their own; if one fails, the transaction does not commit (the commit raises
        and the transaction rolls back, as for a refused commit). Forgotten if the transaction
        rolls back. In a nested block (a savepoint, as under a test's transaction) they run now."""
        if not self.in_atomic_block:
            raise TransactionManagementError("run_with_commit() needs an atomic block.")
        if self.savepoint_ids:
            with self.cursor() as cursor:
                cursor.execute(sql.decode())
            return
        self._with_commit = (*self._with_commit, sql)

    def close_if_unusable_or_obsolete(self):
        # Django calls this as a request starts and as it ends. ``health_check_done`` is still set
        # at the end of a request that used the connection; it is cleared below for the next one.
        if self.connection is not None and self.health_check_done and not self.errors_occurred:
            self.answered_at = time.monotonic()
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.connection.broken
            and time.monotonic() - self.answered_at < settings.DB_HEALTH_CHECK_GRACE_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def get_connection_params(self):
        # Django's parameters, and django-prometheus's metrics from a cursor class whose labelled
        # series are looked up once (``metrics.py``), instead of django-prometheus's own wrapper.
        params = postgresql.DatabaseWrapper.get_connection_params(self)
        params["cursor_factory"] = exporting_cursor(params["cursor_factory"], self.alias, self.vendor)
        params["context"] = with_utc_loader(params["context"])
        return params

    def connect(self):
        self.answered_at = float("-inf")
        super().connect()

    def _commit(self):
        # Through libpq, as ``loyalty.prepared`` begins the transaction: psycopg's own commit waits
        # for the answer through its generator, about twice the CPU of the round trip. A commit the
        # server refuses (a deferred constraint) raises what psycopg's would.
        carried, self._with_commit = self._with_commit, ()
        connection = self.connection
        if (connection is None or connection.closed or getattr(connection, "_num_transactions", 0)
                or getattr(connection, "_tpc", None) is not None or getattr(connection, "_pipeline", None) is not None):
            if carried and connection is not None and not connection.closed:
                with self.wrap_database_errors, connection.cursor() as cursor:
                    cursor.execute(b"".join(carried).decode())
            return super()._commit()
        if connection.pgconn.transaction_status == pq.TransactionStatus.IDLE and not carried:
            return  # nothing to commit: no round trip (as psycopg's own commit)
        with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
            check_result(connection, connection.pgconn.exec_(b"".join((*carried, b"COMMIT"))))

    def _rollback(self):
        self._with_commit = ()
        if not self._rollback_past_prepared_cache(b"ROLLBACK"):
            forget_prepared(self)  # psycopg's rollback may send DEALLOCATE ALL
            super()._rollback()

    def _close(self):
        self._with_commit = ()
        super()._close()

    def _savepoint_rollback(self, sid):
        if not self._rollback_past_prepared_cache(self.ops.savepoint_rollback_sql(sid).encode()):
            forget_prepared(self)
            super()._savepoint_rollback(sid)

    def _rollback_past_prepared_cache(self, sql: bytes) -> bool:
        """Run ``sql`` (a rollback) through libpq itself; False if it did not succeed."""
        connection = self.connection
        if connection is None or connection.closed:
            return False
        if connection.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            return True  # nothing to roll back: no round trip (as psycopg's own rollback)
        with debug_transaction(self, sql.decode()), self.wrap_database_errors:
            result = connection.pgconn.exec_(sql)
        return result.status == pq.ExecStatus.COMMAND_OK
