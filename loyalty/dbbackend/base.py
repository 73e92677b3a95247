"""PostgreSQL, instrumented by django-prometheus, with a health check that costs no round trip
on a busy connection.

Django's ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every request that
reuses a connection: on a short request (a balance read is one statement) that is a second round
trip. Here a connection whose last request ran its queries without a connection error less than
``DB_HEALTH_CHECK_GRACE_SECONDS`` ago (default 1) is used without that check; one idle for longer
is checked as before. What that costs: a connection that breaks within that second (the database
restarted, the backend was killed) fails the request that finds it, as it would with health checks
off, and Django then drops it at the end of that request.
"""

from __future__ import annotations

import time

from django.conf import settings
from django_prometheus.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    answered_at = float("-inf")  # when a request last ran queries on this connection without a connection error

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

    def connect(self):
        self.answered_at = float("-inf")
        super().connect()
