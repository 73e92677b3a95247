"""A ``timestamptz`` loader in C for Django's connections.

Django loads every ``timestamptz`` with a subclass of psycopg's pure-Python loader (to set the
time zone it wants), even when psycopg's C implementation is installed: each value is parsed in
Python. Its connections run with ``TimeZone`` UTC and want UTC, which is what psycopg's C loader
gives on such a connection. This loader hands the text to the C loader and sets the time zone
Django would set, so the values are the same and parsing costs a fraction. It keeps Django's
``timezone`` attribute, which Django reads on each new cursor.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from psycopg import adapt, adapters, postgres
from psycopg.pq import Format

TIMESTAMPTZ_OID = postgres.types["timestamptz"].oid
_loader_in_c = adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)


class UtcTimestamptzLoader(adapt.Loader):
    timezone = dt.UTC

    def __init__(self, oid: int, context=None):
        super().__init__(oid, context)
        self._load = _loader_in_c(oid, context).load

    def load(self, data):
        return self._load(data).replace(tzinfo=dt.UTC)


def in_c() -> bool:
    """Whether psycopg's C implementation is installed (psycopg[binary] or psycopg[c])."""
    return _loader_in_c.__module__.startswith(("psycopg_binary", "psycopg_c"))


@lru_cache
def with_utc_loader(template: adapt.AdaptersMap) -> adapt.AdaptersMap:
    """Django's adapters for its connections, with the C timestamptz loader where Django wants UTC."""
    django_loader = template.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if not in_c() or getattr(django_loader, "timezone", None) != dt.UTC:
        return template
    context = adapt.AdaptersMap(template)
    context.register_loader("timestamptz", UtcTimestamptzLoader)
    return context
