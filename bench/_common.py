"""What every benchmark shares: its own database on the configured server, Django pointed at it.

The server is the one ``settings.DATABASES['default']`` names: the embedded PostgreSQL on its
Unix socket when ``DATABASE_URL`` is unset, else the server ``DATABASE_URL`` points at. Each
benchmark creates a database of its own there (``bench_<name>``, dropped first if left over),
points Django at it before ``django.setup()``, migrates it, and drops it at the end unless
``--keep`` is given. The project's own database is never touched.

Benchmarks run with ``settings.DEBUG`` turned off after the settings are read (``DEBUG=1`` is only
needed to start without production settings): with DEBUG on, Django logs every query, which a
production process does not pay for. ``--django-debug`` keeps it on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import time

# Options of Django's PostgreSQL backend that are not libpq connection parameters.
_DJANGO_ONLY_OPTIONS = {"isolation_level", "server_side_binding", "assume_role", "pool"}


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--full", action="store_true", help="the issue's full size (slow)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database at the end")
    parser.add_argument("--db", default=f"bench_{name}", help="name of the benchmark database (default: %(default)s)")
    parser.add_argument("--django-debug", action="store_true",
                        help="keep settings.DEBUG on (Django then logs every query: slower)")
    return parser


# --- the database -----------------------------------------------------------------------


def connection_params(db: dict, dbname: str | None = None) -> dict:
    """libpq parameters for a Django DATABASES entry, built the way Django's backend builds them."""
    params = {k: v for k, v in db.get("OPTIONS", {}).items() if k not in _DJANGO_ONLY_OPTIONS}
    params["dbname"] = dbname or db["NAME"]
    for key, name in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if db.get(key):
            params[name] = db[key]
    return params


class BenchDatabase:
    """The benchmark's own database. ``setup()`` creates it and points Django at it."""

    def __init__(self, name: str, *, keep: bool = False, django_debug: bool = False):
        if not name.startswith("bench_"):
            raise SystemExit(f"refusing to use {name!r}: benchmark databases are named bench_*")
        self.name = name
        self.keep = keep
        self.django_debug = django_debug
        self.admin_params: dict = {}
        self.params: dict = {}

    def _admin(self):
        import psycopg

        return psycopg.connect(**self.admin_params, autocommit=True)

    def setup(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")
        from django.conf import settings

        db = settings.DATABASES["default"]  # reading the settings starts the embedded server if needed
        if db["NAME"] == self.name:
            raise SystemExit(f"refusing to use {self.name!r}: it is the project's configured database")
        self.admin_params = connection_params(db)
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        db["NAME"] = self.name
        self.params = connection_params(db)
        if not self.django_debug:
            settings.DEBUG = False
        import django

        django.setup()
        from django.core.management import call_command

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        print(f"database {self.name} created and migrated in {time.perf_counter() - started:.1f} s "
              f"on {self.describe_server()}")

    def describe_server(self) -> str:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version'), current_setting('shared_buffers'), "
                           "current_setting('synchronous_commit'), current_setting('fsync')")
            version, shared_buffers, sync_commit, fsync = cursor.fetchone()
        where = self.params.get("host") or "localhost"
        return (f"PostgreSQL {version} at {where}:{self.params.get('port', 5432)} "
                f"(shared_buffers={shared_buffers}, synchronous_commit={sync_commit}, fsync={fsync})")

    def teardown(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.keep:
            print(f"database {self.name} kept (--keep)")
            return
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        print(f"database {self.name} dropped")

    def pg_command_args(self) -> tuple[list[str], dict]:
        """Connection arguments and environment for a libpq command-line tool (pgbench, psql)."""
        args, env = [], dict(os.environ)
        if self.params.get("host"):
            args += ["-h", str(self.params["host"])]
        if self.params.get("port"):
            args += ["-p", str(self.params["port"])]
        if self.params.get("user"):
            args += ["-U", str(self.params["user"])]
        if self.params.get("password"):
            env["PGPASSWORD"] = str(self.params["password"])
        for option, variable in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):
            if self.params.get(option):
                env[variable] = str(self.params[option])
        return args + [self.name], env


@contextlib.contextmanager
def bench_database(args: argparse.Namespace):
    database = BenchDatabase(args.db, keep=args.keep, django_debug=args.django_debug)
    database.setup()
    try:
        yield database
    finally:
        database.teardown()


# --- CPU of a local process -------------------------------------------------------------


def proc_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a local process (a PostgreSQL backend), None when unreadable
    (a server on another machine)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- SQL helpers ------------------------------------------------------------------------


def execute(sql: str, params=None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetchall(sql: str, params=None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def try_execute(sql: str) -> bool:
    """Run a statement that needs privileges the server may not give us (outside a transaction)."""
    from django.db import DatabaseError

    try:
        execute(sql)
        return True
    except DatabaseError:
        return False


@contextlib.contextmanager
def bulk_load_session():
    """For generating data only: no wait for WAL flush, more memory, and (for a superuser)
    no foreign-key triggers, since the generated rows are consistent by construction."""
    execute("SET synchronous_commit = off")
    execute("SET work_mem = '256MB'")
    execute("SET maintenance_work_mem = '1GB'")
    replica = try_execute("SET session_replication_role = replica")
    try:
        yield replica
    finally:
        if replica:
            execute("SET session_replication_role = DEFAULT")
        execute("SET synchronous_commit = DEFAULT")
        execute("SET work_mem = DEFAULT")
        execute("SET maintenance_work_mem = DEFAULT")


@contextlib.contextmanager
def without_secondary_indexes(*tables: str, enabled: bool = True):
    """For a bulk load: drop the tables' indexes that back no constraint, and build them again
    afterwards from their own definitions (so the schema ends up as the migrations made it; an
    index on a partitioned table is built on every partition again)."""
    if not enabled:
        yield
        return
    definitions = []
    for table in tables:
        definitions += fetchall(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY 1",
            [table],
        )
    for name, _definition in definitions:
        execute(f"DROP INDEX {name}")
    try:
        yield
    finally:
        with step(f"building {len(definitions)} indexes of {', '.join(tables)} again"):
            for _name, definition in definitions:
                # pg_get_indexdef says "ON ONLY" for a partitioned table's index: that would build
                # the parent's index alone (invalid, no partition indexes).
                execute(definition.replace(" ON ONLY ", " ON ", 1))
        for table in tables:
            (invalid,), = fetchall("SELECT count(*) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indrelid "
                                   "WHERE h.inhparent = %s::regclass AND NOT i.indisvalid", [table])
            (parent_invalid,), = fetchall("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass "
                                          "AND NOT indisvalid", [table])
            if invalid or parent_invalid:
                raise RuntimeError(f"{table}: {invalid + parent_invalid} invalid indexes after the rebuild")


def checkpoint() -> None:
    """Start a measurement from a fresh checkpoint when we may (superuser or pg_checkpoint)."""
    try_execute("CHECKPOINT")


def set_sequence(table: str, column: str = "id") -> None:
    execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")


def create_program(*, slug: str = "bench", expiry_days: int | None = 365, pending_days: int = 0):
    from accounts.models import Program

    return Program.objects.create(name=f"Bench {slug}", slug=slug, expiry_days=expiry_days,
                                  pending_days=pending_days)


def ensure_partitions_between(first: dt.datetime, last: dt.datetime) -> list[str]:
    """The monthly ledger_entry partitions from ``first``'s month through ``last``'s."""
    from ledger.partitions import ensure_partitions

    months = (last.year * 12 + last.month) - (first.year * 12 + first.month)
    return ensure_partitions(start=first.date(), months_ahead=months)


def create_members(program, count: int, *, first_id: int = 1, enrolled_at: str = "now()",
                   balances: bool = True) -> None:
    """``count`` members with ids ``first_id..``, set-based, each with an empty balance row
    unless ``balances`` is false (the caller then inserts the balance rows itself)."""
    last = first_id + count - 1
    execute(
        "INSERT INTO accounts_member (id, program_id, external_id, email, attributes, status, tier, enrolled_at) "
        f"SELECT g, %s, 'bench-' || g, 'm' || g || '@bench.invalid', '{{}}'::jsonb, 'active', '', {enrolled_at} "
        "FROM generate_series(%s::bigint, %s::bigint) g",
        [program.pk, first_id, last],
    )
    set_sequence("accounts_member")
    if not balances:
        return
    execute(
        "INSERT INTO ledger_balance (member_id, program_id, available, pending, held, debt, "
        "lifetime_earned, lifetime_redeemed, lifetime_expired) "
        "SELECT id, program_id, 0, 0, 0, 0, 0, 0, 0 FROM accounts_member WHERE id BETWEEN %s AND %s",
        [first_id, last],
    )


# --- timing and printing ----------------------------------------------------------------


class Stopwatch:
    def __enter__(self):
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        return False


def step(label: str):
    """Print ``label ... 1.23 s`` around a block."""

    @contextlib.contextmanager
    def block():
        print(f"  {label} ...", end="", flush=True)
        with Stopwatch() as watch:
            yield watch
        print(f" {watch.seconds:.1f} s", flush=True)

    return block()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def table(rows: list[tuple[str, ...]]) -> None:
    """Print rows of cells as aligned columns: the first and the last left-aligned, the others right."""
    count = max(map(len, rows))
    rows = [tuple(row) + ("",) * (count - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    for row in rows:
        cells = [cell.ljust(widths[i]) if i in (0, count - 1) else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        print("  " + "  ".join(cells).rstrip())


def load() -> str:
    """The machine's load, printed next to the figures: a loaded machine makes them noisy."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def banner(title: str) -> None:
    print()
    print("=" * 78)
    print(title)
    print(load())
    print("=" * 78)
    sys.stdout.flush()
