"""Earn throughput: points_earn (one earn per transaction) and points_earn_many (1,000 earns per
transaction) against pgbench on the plain shape (one entry row + one balance update per earn)
on the same PostgreSQL server, in the same run, on one connection each.

    DEBUG=1 .venv/bin/python -m bench.earn_throughput            # quick: 10,000 members
    DEBUG=1 .venv/bin/python -m bench.earn_throughput --full     # the issue's size: 100,000 members

Goals: batched >= 8,000 earns/s and >= 0.2 x pgbench batched; single >= 800 earns/s.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import random
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import _common as c

GOAL_SINGLE = 800
GOAL_BATCHED = 8_000
GOAL_RATIO_BATCHED = 0.2
PGBENCH_BATCH_ROWS = 100

PLAIN_SCHEMA = """
DROP TABLE IF EXISTS bench_plain_entry, bench_plain_balance;
CREATE TABLE bench_plain_entry (
    id bigserial PRIMARY KEY,
    member_id bigint NOT NULL,
    points int NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE bench_plain_balance (
    member_id bigint PRIMARY KEY,
    available int NOT NULL
);
"""

PGBENCH_SINGLE = """\\set mid random(1, :nmembers)
\\set pts random(1, 500)
BEGIN;
INSERT INTO bench_plain_entry (member_id, points, created_at) VALUES (:mid, :pts, now());
UPDATE bench_plain_balance SET available = available + :pts WHERE member_id = :mid;
COMMIT;
"""

# 100 earns per transaction: 100 entry rows for random members, and 100 random balances updated
# (one index probe each, as ledger_balance is updated by member_id).
PGBENCH_BATCHED = f"""\\set pts random(1, 500)
BEGIN;
INSERT INTO bench_plain_entry (member_id, points, created_at)
  SELECT 1 + (random() * (:nmembers - 1))::bigint, :pts, now() FROM generate_series(1, {PGBENCH_BATCH_ROWS});
UPDATE bench_plain_balance SET available = available + :pts
  WHERE member_id = ANY (ARRAY(SELECT 1 + (random() * (:nmembers - 1))::bigint
                               FROM generate_series(1, {PGBENCH_BATCH_ROWS})));
COMMIT;
"""

# Variant (--pgbench-range): the 100 members are a random contiguous range.
PGBENCH_BATCHED_RANGE = f"""\\set pts random(1, 500)
\\set first random(1, :nmembers - {PGBENCH_BATCH_ROWS - 1})
BEGIN;
INSERT INTO bench_plain_entry (member_id, points, created_at)
  SELECT :first + g, :pts, now() FROM generate_series(0, {PGBENCH_BATCH_ROWS - 1}) g;
UPDATE bench_plain_balance SET available = available + :pts
  WHERE member_id BETWEEN :first AND :first + {PGBENCH_BATCH_ROWS - 1};
COMMIT;
"""


def setup_plain(members: int) -> None:
    c.execute(PLAIN_SCHEMA)
    c.execute("INSERT INTO bench_plain_balance SELECT g, 0 FROM generate_series(1, %s) g", [members])
    c.execute("VACUUM ANALYZE bench_plain_balance")
    c.execute("VACUUM ANALYZE bench_plain_entry")


class CpuMeter:
    """CPU seconds of this process and of its PostgreSQL backend over a block: unlike wall time,
    they hardly change when other processes compete for the CPUs."""

    def __enter__(self):
        (self.pid,), = c.fetchall("SELECT pg_backend_pid()")
        self.client0, self.server0 = time.process_time(), c.proc_cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc):
        self.client = time.process_time() - self.client0
        server1 = c.proc_cpu_seconds(self.pid)
        self.server = None if server1 is None or self.server0 is None else server1 - self.server0
        return False


@dataclass
class PgbenchRun:
    tps: float
    line: str
    transactions: int
    client_cpu: float  # seconds, pgbench itself
    server_cpu: float | None  # seconds, its backend (sampled until it exits)


def run_pgbench(database: c.BenchDatabase, script: str, seconds: int, members: int) -> PgbenchRun:
    import psycopg

    from loyalty import embedded

    conn_args, env = database.pg_command_args()
    env["PGAPPNAME"] = "bench_pgbench"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(**database.params, autocommit=True) as watcher:
        path = Path(tmp) / "script.sql"
        path.write_text(script)
        command = [str(embedded.postgres_bin("pgbench")), "-n", "-c", "1", "-j", "1", "-T", str(seconds),
                   "-f", str(path), "-D", f"nmembers={members}", *conn_args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # pgbench first opens a short connection of its own, then the client's: follow the backend
        # pid until the end, starting over when it changes.
        backend, first_cpu, last_cpu = None, None, None
        while process.poll() is None:
            row = watcher.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'bench_pgbench' "
                                  "AND datname = current_database() ORDER BY backend_start DESC LIMIT 1").fetchone()
            if row and row[0] != backend:
                backend = row[0]
                first_cpu = last_cpu = c.proc_cpu_seconds(backend)
            cpu = c.proc_cpu_seconds(backend)
            last_cpu = cpu if cpu is not None else last_cpu
            time.sleep(0.1)
        stdout, stderr = process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^tps = ([\d.]+)", stdout, re.M)
    if process.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{stdout}\n{stderr}")
    failed = re.search(r"^number of failed transactions: (\d+)", stdout, re.M)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench had failed transactions:\n{stdout}")
    processed = re.search(r"^number of transactions actually processed: (\d+)", stdout, re.M)
    # The backend's CPU before the first sample (its start-up) is left out: it is not per transaction.
    server_cpu = None if first_cpu is None or last_cpu is None else last_cpu - first_cpu
    return PgbenchRun(
        tps=float(match.group(1)), line=match.group(0), transactions=int(processed.group(1)) if processed else 0,
        client_cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), server_cpu=server_cpu,
    )


class TimeSplit:
    """Where the wall time of a run goes: inside ``cursor.execute`` (psycopg's client-side quoting of
    the parameters, the round trip and the server's work), inside COMMIT (WAL flush and the deferred
    foreign-key checks), and the rest (Python: Django, the service, building the requests)."""

    def __init__(self):
        self.execute = self.commit = 0.0
        self.statements = self.commits = 0

    def _wrapper(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.execute += time.perf_counter() - started
            self.statements += 1

    @contextlib.contextmanager
    def installed(self):
        from django.db import connection

        original = connection._commit

        def timed_commit():
            started = time.perf_counter()
            try:
                return original()
            finally:
                self.commit += time.perf_counter() - started
                self.commits += 1

        connection._commit = timed_commit
        try:
            with connection.execute_wrapper(self._wrapper):
                yield self
        finally:
            del connection._commit


@contextlib.contextmanager
def variant(*, session: list[str] = (), options: dict | None = None):
    """Run with session settings and/or connection OPTIONS (Django's server_side_binding, psycopg's
    prepare_threshold), on a fresh connection (diagnostics only)."""
    from django.db import connection

    settings_options = connection.settings_dict["OPTIONS"]
    saved = dict(settings_options)
    settings_options.update(options or {})
    connection.close()
    for statement in session:
        c.execute(statement)
    try:
        yield
    finally:
        settings_options.clear()
        settings_options.update(saved)
        connection.close()  # a fresh connection: session settings and cursor class back to normal


def statements_per_call(func) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        func()
    return len(captured.captured_queries)


def profile(func, label: str, lines: int = 25) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    func()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    print(f"\n--- cProfile: {label} (sorted by own time) ---")
    print(out.getvalue())


def diagnose(single_earns, batched_earns, *, n_single: int, n_batches: int, batch_size: int) -> None:
    """The same two runs under variants that each remove one cost, with the time split of each."""
    prepared = {"server_side_binding": True, "prepare_threshold": 1}
    no_fk, no_flush = "SET session_replication_role = replica", "SET synchronous_commit = off"
    variants = [
        ("as configured", {}),
        ("FK triggers off (session_replication_role=replica)", {"session": [no_fk]}),
        ("synchronous_commit off", {"session": [no_flush]}),
        ("server-side binding + prepared statements", {"options": prepared}),
        ("all three", {"session": [no_fk, no_flush], "options": prepared}),
        ("single as points_earn_many([one request])", {"single_via_many": True}),
        ("  the same + server-side binding + prepared", {"single_via_many": True, "options": prepared}),
    ]
    print()
    print(f"DIAGNOSIS (not results): {n_single} single earns and {n_batches} batches of {batch_size:,} per variant;")
    print("  ms per earn / per batch = inside execute (quoting + round trip + server) + commit (flush + deferred FK "
          "checks) + rest (Python)")
    rows = [("variant", "single/s", "ms/earn: exec+commit+rest", "CPU us/earn", "stmts", "batched/s",
             "ms/batch: exec+commit+rest", "CPU us/earn")]
    for label, kwargs in variants:
        via_many = kwargs.pop("single_via_many", False)
        try:
            with variant(**kwargs):
                go_single = single_earns(n_single, f"d{len(rows)}s", via_many=via_many)
                go_batched = batched_earns(n_batches, f"d{len(rows)}b")
                c.checkpoint()
                with TimeSplit().installed() as split_s, c.Stopwatch() as watch_s, CpuMeter() as cpu_s:
                    go_single()
                if not via_many:
                    c.checkpoint()
                    with TimeSplit().installed() as split_b, c.Stopwatch() as watch_b, CpuMeter() as cpu_b:
                        go_batched()
        except Exception as exc:  # e.g. not allowed to set session_replication_role
            rows.append((label, "n/a", f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}", "", "", "", "", ""))
            continue

        def split(watch, s, n):
            rest = watch.seconds - s.execute - s.commit
            return f"{s.execute / n * 1000:.2f} + {s.commit / n * 1000:.2f} + {rest / n * 1000:.2f}"

        def cpu(meter, n):
            server = "?" if meter.server is None else f"{meter.server / n * 1e6:,.0f}"
            return f"{meter.client / n * 1e6:,.0f} + {server}"

        n_batched = n_batches * batch_size
        batched = (("-", "-", "-") if via_many else
                   (c.num(n_batched / watch_b.seconds), split(watch_b, split_b, n_batches), cpu(cpu_b, n_batched)))
        rows.append((label, c.num(n_single / watch_s.seconds), split(watch_s, split_s, n_single), cpu(cpu_s, n_single),
                     f"{split_s.statements / n_single:.0f}", *batched))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)))


def main(argv=None) -> None:
    parser = c.make_parser("earn_throughput", __doc__)
    parser.add_argument("--scale", type=int, help="members (default 10,000; --full: 100,000)")
    parser.add_argument("--single", type=int, help="single earns timed (default 1,000; --full: 5,000)")
    parser.add_argument("--batches", type=int, help="batches timed (default 20; --full: 100)")
    parser.add_argument("--batch-size", type=int, default=1_000, help="earns per batch (default %(default)s)")
    parser.add_argument("--pgbench-seconds", type=int, help="seconds per pgbench run (default 5; --full: 15)")
    parser.add_argument("--pgbench-range", action="store_true",
                        help="pgbench batched script on a random contiguous range of 100 members "
                             "instead of 100 random members")
    parser.add_argument("--diagnose", action="store_true",
                        help="after the results, time variants (FK triggers off, synchronous_commit off, "
                             "server-side binding with prepared statements, single earns through "
                             "points_earn_many) with a split of where the time goes")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed runs, cProfile 500 single earns and 5 batches")
    args = parser.parse_args(argv)
    members = args.scale or (100_000 if args.full else 10_000)
    n_single = args.single or (5_000 if args.full else 1_000)
    n_batches = args.batches or (100 if args.full else 20)
    batch_size = args.batch_size
    seconds = args.pgbench_seconds or (15 if args.full else 5)

    c.banner(f"earn throughput: {members:,} members, {n_single:,} single earns, "
             f"{n_batches} batches of {batch_size:,}, pgbench {seconds} s per script")
    with c.bench_database(args) as database:
        from django.db import transaction

        from accounts.models import Member
        from ledger.services import EarnRequest, Source, points_earn, points_earn_many

        program = c.create_program(expiry_days=365, pending_days=0)
        with c.step(f"creating {members:,} members and balances (set-based)"), c.bulk_load_session():
            c.create_members(program, members)
            c.execute("ANALYZE accounts_member")
            c.execute("ANALYZE ledger_balance")
        with c.step(f"creating the plain shape ({members:,} balance rows)"):
            setup_plain(members)

        rng = random.Random(20261123)
        run = f"{int(time.time())}"

        def single_earns(count: int, prefix: str, via_many: bool = False):
            ids = [rng.randint(1, members) for _ in range(count)]
            cache = Member.objects.select_related("program").in_bulk(set(ids))
            calls = [(cache[m], rng.randint(1, 500), f"{prefix}-{run}-{i}") for i, m in enumerate(ids)]

            def go():
                for member, points, key in calls:
                    with transaction.atomic():
                        points_earn(member=member, points=points, key=key, description="Bench purchase",
                                    source=Source("order", key))

            def go_via_many():  # diagnostics: the set-based path, one request per transaction
                for member, points, key in calls:
                    with transaction.atomic():
                        points_earn_many(program=program, requests=[EarnRequest(
                            member_id=member.pk, points=points, key=key, description="Bench purchase",
                            source=Source("order", key))])
            return go_via_many if via_many else go

        def batched_earns(count: int, prefix: str):
            batches = [
                [EarnRequest(member_id=rng.randint(1, members), points=rng.randint(1, 500),
                             key=f"{prefix}-{run}-{b}-{j}", description="Bench purchase",
                             source=Source("order", f"{prefix}-{run}-{b}-{j}"))
                 for j in range(batch_size)]
                for b in range(count)
            ]

            def go():
                for batch in batches:
                    points_earn_many(program=program, requests=batch)
            return go

        # Warm-up (not timed): connection, statement caches, buffers; and statement counts.
        single_earns(100, "warm-s")()
        batched_earns(2, "warm-b")()
        per_single = statements_per_call(single_earns(1, "count-s"))
        per_batch = statements_per_call(batched_earns(1, "count-b"))
        print(f"  SQL statements per single earn (inside the caller's transaction): {per_single}; "
              f"per batch of {batch_size:,}: {per_batch}")

        # Each of ours is followed at once by its pgbench baseline, so a pair sees the same machine.
        batched_script = PGBENCH_BATCHED_RANGE if args.pgbench_range else PGBENCH_BATCHED
        go = single_earns(n_single, "s")
        c.checkpoint()
        with c.step(f"ours single: {n_single:,} x points_earn, one transaction each") as single_watch, \
                CpuMeter() as single_cpu:
            go()
        single_rate = n_single / single_watch.seconds
        c.checkpoint()
        with c.step(f"pgbench plain single, -c 1 -j 1 -T {seconds}"):
            pg_single = run_pgbench(database, PGBENCH_SINGLE, seconds, members)

        go = batched_earns(n_batches, "b")
        c.checkpoint()
        with c.step(f"ours batched: {n_batches} x points_earn_many({batch_size:,})") as batched_watch, \
                CpuMeter() as batched_cpu:
            go()
        n_batched = n_batches * batch_size
        batched_rate = n_batched / batched_watch.seconds
        c.checkpoint()
        with c.step(f"pgbench plain batched ({PGBENCH_BATCH_ROWS} rows/tx), -c 1 -j 1 -T {seconds}"):
            pg_batched = run_pgbench(database, batched_script, seconds, members)
        pg_single_rate = pg_single.tps
        pg_batched_rate = pg_batched.tps * PGBENCH_BATCH_ROWS
        print(f"  pgbench single:  {pg_single.line}, {pg_single.transactions:,} transactions")
        print(f"  pgbench batched: {pg_batched.line}, {pg_batched.transactions:,} transactions "
              f"(x {PGBENCH_BATCH_ROWS} rows each)")

        def cpu_us(client: float, server: float | None, n: int) -> str:
            server_text = "?" if server is None else f"{server / n * 1e6:,.0f}"
            return f"{client / n * 1e6:,.0f} + {server_text}"

        ratio_batched = batched_rate / pg_batched_rate
        ratio_single = single_rate / pg_single_rate
        pg_batched_rows = max(pg_batched.transactions * PGBENCH_BATCH_ROWS, 1)
        pg_single_rows = max(pg_single.transactions, 1)
        print()
        print(f"RESULTS earn_throughput ({members:,} members, one connection each; {c.load()})")
        c.table([
            ("measure", "value", "CPU us/earn: client + server", "baseline / goal"),
            ("ours single earns/s (points_earn, 1 tx/earn)", c.num(single_rate),
             cpu_us(single_cpu.client, single_cpu.server, n_single),
             f"goal >= {GOAL_SINGLE:,}/s: {c.verdict(single_rate >= GOAL_SINGLE)}"),
            (f"ours batched earns/s (points_earn_many, {batch_size:,}/tx)", c.num(batched_rate),
             cpu_us(batched_cpu.client, batched_cpu.server, n_batched),
             f"goal >= {GOAL_BATCHED:,}/s: {c.verdict(batched_rate >= GOAL_BATCHED)}"),
            ("pgbench plain single rows/s (1 row/tx)", c.num(pg_single_rate),
             cpu_us(pg_single.client_cpu, pg_single.server_cpu, pg_single_rows), "same-run baseline"),
            (f"pgbench plain batched rows/s ({PGBENCH_BATCH_ROWS} rows/tx)", c.num(pg_batched_rate),
             cpu_us(pg_batched.client_cpu, pg_batched.server_cpu, pg_batched_rows), "same-run baseline"),
            ("ratio ours batched / pgbench batched", f"{ratio_batched:.3f}", "",
             f"goal >= {GOAL_RATIO_BATCHED}: {c.verdict(ratio_batched >= GOAL_RATIO_BATCHED)}"),
            ("ratio ours single / pgbench single", f"{ratio_single:.3f}", "", "(no goal; for reference)"),
        ])
        print("  (CPU: this process / its PostgreSQL backend, per earn or row; it hardly depends on the machine's "
              "load, the rates do)")

        if args.diagnose:
            diagnose(single_earns, batched_earns, n_single=max(n_single // 4, 200), n_batches=max(n_batches // 4, 5),
                     batch_size=batch_size)

        if args.profile:
            profile(single_earns(500, "prof-s"), "500 single earns")
            profile(batched_earns(5, "prof-b"), f"5 batches of {batch_size:,}")


if __name__ == "__main__":
    main()
