"""Database helpers shared by the apps."""

from __future__ import annotations

from django.db import connection

_server_binding_cursor = None


def prepared_cursor():
    """A cursor of Django's connection that binds parameters on the server, so that psycopg
    prepares its statements once per connection (``DB_PREPARED_STATEMENTS``, on by default;
    Django's own cursors bind on the client and never prepare). For the hottest statements,
    whose planning cost about as much as running them; their parameters must be typed
    (``%s::bigint``). Query logging, error wrapping and the query metrics work as usual."""
    global _server_binding_cursor
    if _server_binding_cursor is None:
        from django.db.backends.postgresql.base import ServerBindingCursor
        from django_prometheus.db.common import ExportingCursorWrapper

        _server_binding_cursor = ExportingCursorWrapper(ServerBindingCursor, connection.alias, connection.vendor)
    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = _server_binding_cursor(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
