"""django-prometheus's database metrics, with each cursor class's labelled series looked up once.

django-prometheus's cursor wrapper (``django_prometheus.db.common.ExportingCursorWrapper``) looks up
the labelled series of ``execute_total`` and ``query_duration_seconds`` on every statement
(``labels()`` checks its arguments and takes a lock) and wraps each one in two context managers.
This one updates the same series, under the same names and labels, through children looked up
when the class is made: a statement costs a few microseconds less, on every path that talks to
PostgreSQL.
"""

from __future__ import annotations

import time

from django_prometheus.db import errors_total, execute_many_total, execute_total, query_duration_seconds


def exporting_cursor(cursor_class, alias: str, vendor: str):
    """A subclass of ``cursor_class`` that counts and times its statements."""
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    def measured(run, *args, **kwargs):
        """``run(*args, **kwargs)`` timed, and counted by its error's type if it raises."""
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        except BaseException as exc:
            errors_total.labels(alias, vendor, type(exc).__name__).inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)

    class ExportingCursor(cursor_class):
        def execute(self, *args, **kwargs):
            executed.inc()
            return measured(super().execute, *args, **kwargs)

        def executemany(self, query, params_seq, *args, **kwargs):
            params_seq = list(params_seq)  # counted first, as django-prometheus does
            executed.inc(len(params_seq))
            executed_many.inc(len(params_seq))
            return measured(super().executemany, query, params_seq, *args, **kwargs)

    return ExportingCursor



class StatementMeasured:
    """Counts and times the statements sent around a cursor (``loyalty.prepared``), as
    ``exporting_cursor``'s cursors do theirs: ``with measured: ...`` around each one."""

    def __init__(self, alias: str, vendor: str):
        self.alias, self.vendor = alias, vendor
        self.executed = execute_total.labels(alias, vendor)
        self.duration = query_duration_seconds.labels(alias, vendor)
        self.started = 0.0

    def __enter__(self):
        self.executed.inc()
        self.started = time.perf_counter()

    def __exit__(self, exc_type, exc, traceback):
        self.duration.observe(time.perf_counter() - self.started)
        if exc_type is not None:
            errors_total.labels(self.alias, self.vendor, exc_type.__name__).inc()
