"""Database helpers shared by the apps."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

_server_binding_cursor = None


def prepared_cursor():
    """A cursor of Django's connection that binds parameters on the server, so that psycopg
    prepares its statements once per connection (``DB_PREPARED_STATEMENTS``, on by default;
    Django's own cursors bind on the client and never prepare). For the hottest statements,
    whose planning cost about as much as running them; their parameters must be typed
    (``%s::bigint``). The connection's health check, query logging, error wrapping and the
    query metrics work as for Django's cursors."""
    global _server_binding_cursor
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute read through ``connection`` costs a lookup
    if _server_binding_cursor is None:
        from django.db.backends.postgresql.base import ServerBindingCursor
        from django_prometheus.db.common import ExportingCursorWrapper

        _server_binding_cursor = ExportingCursorWrapper(ServerBindingCursor, db.alias, db.vendor)
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    cursor = _server_binding_cursor(db.connection)
    return db.make_debug_cursor(cursor) if db.queries_logged else db.make_cursor(cursor)
