"""Prepared statements on Django's connection, sent straight through libpq where no cursor is needed.

``prepared_cursor()`` gives the hot paths' cursor. Its statements are prepared once per connection
(planning them had cost about as much as running them; Django's own cursors bind on the client and
never prepare), and each runs as one blocking libpq call: a psycopg cursor waits for the answer
through its generator and wait loop, and spent about twice the CPU on the same round trip inside a
request (``bench/round_trip_cost.py``). Parameters are dumped and rows loaded by psycopg's own
adapters on the connection, so values come back as a psycopg cursor gives them. Django's health
check, thread check, broken-transaction check and error wrapping apply, and the query metrics count
each statement.

A transaction Django opened (``atomic``) and psycopg has yet to begin is begun here with psycopg's
own ``BEGIN``, through libpq too; psycopg then sees it open and sends none of its own. Its commit
goes through libpq as well (``loyalty.dbbackend.base``).

A statement runs through a psycopg server-binding cursor instead, with the same results, where
only a cursor does what is expected: queries logged or wrapped (``DEBUG``, the tests' query counts),
prepared statements off (``DB_PREPARED_STATEMENTS=0``, for a pooler that cannot keep them), or a
transaction to begin with options (an isolation level, read-only or deferrable: psycopg's cursor
begins it with them).
"""

from __future__ import annotations

import hashlib
import re

from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import OperationalError, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


class _Statement:
    """A statement as libpq prepares it: its name (the same on every connection), its text with
    ``$1``, ``$2`` ... for ``%s`` or ``%(name)s``, and the names in the order of their numbers."""

    __slots__ = ("name", "query", "names", "formats")

    def __init__(self, sql: str):
        names: list[str] = []
        positional = 0

        def number(match: re.Match) -> str:
            nonlocal positional
            if match.group(0) == "%%":
                return "%"
            name = match.group(1)
            if name is None:
                positional += 1
                return f"${positional}"
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        query = _PLACEHOLDER.sub(number, sql)
        if positional and names:
            raise ValueError("a statement takes %s or %(name)s placeholders, not both")
        self.name = b"loyalty_" + hashlib.blake2b(sql.encode(), digest_size=12).hexdigest().encode()
        self.query = query.encode()
        self.names = names or None
        # Every value as text: the statement's casts (``%s::bigint``) give each parameter its type.
        self.formats = [PyFormat.TEXT] * (len(names) or positional)


_statements: dict[str, _Statement] = {}
# Each connection keeps every statement it prepared. The hot paths' statements are fixed texts, a
# few dozen; past this many (a statement built with a varying number of placeholders, say) the
# others run through psycopg's cursor, whose own cache keeps at most ``prepared_max`` of them.
MAX_STATEMENTS = 200


class _Direct:
    """What the direct path keeps for one of Django's connections (one thread's): the psycopg
    connection it was made for, the statements prepared on it, an adapter context, its metrics."""

    def __init__(self, db, conn):
        from loyalty.dbbackend.metrics import StatementMeasured

        self.conn = conn
        self.prepared: set[bytes] = set()
        self.transformer = Transformer(conn)
        self.measured = StatementMeasured(db.alias, db.vendor)


_server_binding_cursor = None


def prepared_cursor() -> PreparedCursor:
    """The cursor for the hottest statements (this module's docstring). Their parameters must be
    typed (``%s::bigint``)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each attribute read through ``connection`` costs a lookup
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    return PreparedCursor(db)


class PreparedCursor:
    """``execute``, ``fetchone``, ``fetchall``, ``rowcount`` and ``description`` (truthy when the
    statement returns rows) of a cursor, and a context manager."""

    def __init__(self, db):
        self.db = db
        self.rowcount = -1
        self.description = None
        self._rows: list[tuple] | None = None
        self._at = 0
        self._cursor = None  # Django's cursor, made when a statement needs one
        self._last_ran_on_cursor = False

    def __enter__(self) -> PreparedCursor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._cursor is not None:
            try:
                self._cursor.close()
            except self.db.Database.Error:  # as Django's cursor wrapper: the connection is gone
                pass

    def execute(self, sql: str, params=None) -> None:
        db = self.db
        conn = db.connection
        statement = _statements.get(sql)
        if statement is None and len(_statements) < MAX_STATEMENTS:
            statement = _statements[sql] = _Statement(sql)
        direct = _direct(db, conn) if statement is not None else None
        if direct is None:
            cursor = self._cursor
            if cursor is None:
                cursor = self._cursor = _cursor_of(db)
            cursor.execute(sql, params)
            self.rowcount, self.description, self._last_ran_on_cursor = cursor.rowcount, cursor.description, True
            return
        self._last_ran_on_cursor = False
        if statement.names is None:
            values = params or ()
        else:
            values = [params[name] for name in statement.names]
        db.validate_no_broken_transaction()
        pgconn = conn.pgconn
        if not conn.autocommit and pgconn.transaction_status == pq.TransactionStatus.IDLE:
            # Django opened a transaction that psycopg would begin with its first statement: begun
            # here with psycopg's own command, and psycopg, seeing it open, sends no BEGIN of its own.
            with db.wrap_database_errors:
                check_result(conn, pgconn.exec_(b"BEGIN"))
        with db.wrap_database_errors, direct.measured:
            if statement.name not in direct.prepared:
                check_result(conn, pgconn.prepare(statement.name, statement.query))
                direct.prepared.add(statement.name)
            transformer = direct.transformer
            dumped = transformer.dump_sequence(values, statement.formats)
            result = pgconn.exec_prepared(statement.name, dumped)
            if _dropped(result):
                # The session lost its statements (``DEALLOCATE ALL``, ``DISCARD ALL``): prepared
                # again, and outside a transaction run again; inside one the error stands.
                direct.prepared.clear()
                if conn.autocommit:
                    check_result(conn, pgconn.prepare(statement.name, statement.query))
                    direct.prepared.add(statement.name)
                    result = pgconn.exec_prepared(statement.name, dumped)
            check_result(conn, result)
            tuples = result.command_tuples
            self.rowcount = -1 if tuples is None else tuples
            if result.nfields:
                transformer.set_pgresult(result)
                self._rows, self._at = transformer.load_rows(0, result.ntuples, tuple), 0
                self.description = [field.decode() for field in map(result.fname, range(result.nfields))]
            else:
                self._rows, self.description = None, None

    def fetchone(self) -> tuple | None:
        if self._last_ran_on_cursor:
            return self._cursor.fetchone()
        self._check_rows()
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        if self._last_ran_on_cursor:
            return self._cursor.fetchall()
        self._check_rows()
        rows, self._at = self._rows[self._at:], len(self._rows)
        return rows

    def _check_rows(self) -> None:
        if self._rows is None:
            from django.db import ProgrammingError

            raise ProgrammingError("the last statement returned no rows")


def _direct(db, conn) -> _Direct | None:
    """The connection's direct path, or None where a cursor must run the statement."""
    if db.queries_logged or db.execute_wrappers or conn.prepare_threshold is None:
        return None
    if not conn.autocommit and not _in_or_plainly_begun(conn):
        return None  # psycopg's cursor opens the transaction (``BEGIN ...``) with its first statement
    direct = getattr(db, "_loyalty_direct", None)
    if direct is None or direct.conn is not conn:
        direct = db._loyalty_direct = _Direct(db, conn)
    return direct


def _in_or_plainly_begun(conn) -> bool:
    """Whether the transaction Django opened on ``conn`` is open, or may be begun with a bare
    ``BEGIN`` (psycopg's own command when no isolation level, read-only or deferrable mode is set,
    and neither a pipeline nor a two-phase transaction is in use)."""
    status = conn.pgconn.transaction_status
    if status == pq.TransactionStatus.INTRANS:
        return True
    return (status == pq.TransactionStatus.IDLE and conn.isolation_level is None and conn.read_only is None
            and conn.deferrable is None and getattr(conn, "_pipeline", None) is None
            and getattr(conn, "_tpc", None) is None)


def _cursor_of(db):
    """Django's cursor around a psycopg cursor that binds on the server (so it prepares too),
    counted by the query metrics."""
    global _server_binding_cursor
    if _server_binding_cursor is None:
        from django.db.backends.postgresql.base import ServerBindingCursor

        from loyalty.dbbackend.metrics import exporting_cursor

        _server_binding_cursor = exporting_cursor(ServerBindingCursor, db.alias, db.vendor)
    cursor = _server_binding_cursor(db.connection)
    return db.make_debug_cursor(cursor) if db.queries_logged else db.make_cursor(cursor)


def _dropped(result) -> bool:
    """Whether ``result`` is PostgreSQL not knowing the prepared statement (SQLSTATE 26000)."""
    return result.status == pq.ExecStatus.FATAL_ERROR and result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"


def forget_prepared(db) -> None:
    """Forget what the direct path prepared on ``db``'s connection, when the session dropped it."""
    db.__dict__.pop("_loyalty_direct", None)


def check_result(conn, result) -> None:
    """Raise what psycopg raises for a failed statement: the server's error, or the connection's."""
    if result.status in _OK:
        return
    if conn.pgconn.status == pq.ConnStatus.BAD:
        raise OperationalError(conn.pgconn.get_error_message())
    raise error_from_result(result, encoding=conn.info.encoding)
