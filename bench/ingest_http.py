"""Batch ingest over HTTP, end to end: POST /api/v1/events/batch until every event is processed.

Runs the platform as ``make run`` does (``bench/_server.py``) on a database of its own, seeds
100,000 members, 10 active rules and a partner key, then POSTs the events in batches of 1,000
from several client threads and measures from the first POST until the last event is
``processed`` (polling ``rules_inboundevent``). Baseline, same run, same PostgreSQL: ``pgbench``
running the bare accrual (a transaction inserting 100 entry rows and updating 100 of 100,000
balance rows), i.e. the database's ceiling for what one batch earn has to write.

    .venv/bin/python -m bench.ingest_http                      # quick: 20,000 events
    .venv/bin/python -m bench.ingest_http --events 100000      # full scale

Goals: >= 5,000 events/s on 2 cores, and >= 0.12 of the pgbench ceiling. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import queue
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import BenchServer, CpuMeter, percentile, purchase_event, pyspy_summary, seed  # noqa: E402

GOAL_EVENTS_PER_SECOND = 5000
GOAL_RATIO = 0.12


def build_bodies(*, events: int, batch: int, members: int, seed_value: int) -> list[bytes]:
    rng = random.Random(seed_value)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run = f"{seed_value:x}{int(time.time()):x}"
    bodies = []
    for start in range(0, events, batch):
        chunk = [purchase_event(f"ing-{run}-{i}", rng, members, now) for i in range(start, min(start + batch, events))]
        bodies.append(json.dumps({"events": chunk}, separators=(",", ":")).encode())
    return bodies


class Sender:
    """Client threads POSTing prepared batch bodies, one keep-alive connection each."""

    def __init__(self, *, port: int, key: str, bodies: list[bytes], threads: int):
        self.port, self.key, self.threads = port, key, threads
        self.work: queue.Queue[int] = queue.Queue()
        for index in range(len(bodies)):
            self.work.put(index)
        self.bodies = bodies
        self.lock = threading.Lock()
        self.accepted = self.duplicates = self.rejected = self.answered = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.reconnects = 0
        self.done_at: float | None = None
        self._pool = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self._pool:
            thread.start()

    def join(self) -> None:
        for thread in self._pool:
            thread.join()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._pool)

    def _run(self) -> None:
        try:
            self._send_all()
        except Exception as exc:  # a thread that dies must not look like one that finished
            with self.lock:
                self.errors.append(f"client thread died: {exc!r}")
            raise

    def _send_all(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}",
                   "Connection": "keep-alive"}
        while True:
            try:
                index = self.work.get_nowait()
            except queue.Empty:
                break
            started = time.perf_counter()
            try:
                if conn.sock is None:
                    with self.lock:
                        self.reconnects += 1
                conn.request("POST", "/api/v1/events/batch", body=self.bodies[index], headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with self.lock:
                    self.errors.append(f"batch {index}: {exc!r}")
                continue
            elapsed = time.perf_counter() - started
            with self.lock:
                self.latencies.append(elapsed)
                if response.status != 202:
                    self.errors.append(f"batch {index}: HTTP {response.status} {data[:300]!r}")
                    continue
                body = json.loads(data)
                self.answered += 1
                self.accepted += body["accepted"]
                self.duplicates += body["duplicates"]
                self.rejected += len(body["rejected"])
        conn.close()
        with self.lock:
            self.done_at = time.perf_counter()


def _status_counts(cursor, program_id: int) -> dict[str, int]:
    cursor.execute("SELECT status, count(*) FROM rules_inboundevent WHERE program_id = %s GROUP BY status",
                   [program_id])
    return dict(cursor.fetchall())


def run_ingest(server: BenchServer, seeded, bodies: list[bytes], *, threads: int, stall_timeout: float) -> dict:
    import psycopg

    sender = Sender(port=server.port, key=seeded.key, bodies=bodies, threads=threads)
    with psycopg.connect(server.db_url, autocommit=True) as conn, conn.cursor() as cursor:
        meter = CpuMeter(server, exclude_pids=(conn.info.backend_pid,))
        meter.start()
        t0_wall, t0 = time.time(), time.perf_counter()
        sender.start()
        last_change, last_state, last_sample = t0, None, t0
        while True:
            time.sleep(0.1)
            # Read before the database: "nothing waiting" only ends the run if every batch had
            # been answered (and so committed) before the query looked.
            sending = sender.alive()
            # Whether anything still waits for a worker: EXISTS stops at the first live entry of the
            # partial index event_waiting. (A count(*) there cost PostgreSQL about 10 ms a poll, a
            # tenth of a core taken from the run it measures, because the index fills with the dead
            # entries of events just processed.)
            cursor.execute("SELECT EXISTS (SELECT 1 FROM rules_inboundevent WHERE status = 'received')")
            waiting = int(cursor.fetchone()[0])
            now = time.perf_counter()
            if now - last_sample >= 1:
                meter.sample()
                last_sample = now
            if not sending and waiting == 0:
                break
            # Progress, for the stall check: rows the workers updated, as the statistics report them.
            cursor.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'rules_inboundevent'")
            state = (waiting, cursor.fetchone()[0], sender.accepted, len(sender.latencies))
            if state != last_state:
                last_change, last_state = now, state
            elif now - last_change > stall_timeout:
                raise RuntimeError(f"no progress for {stall_timeout:.0f} s with {waiting} events waiting; "
                                   f"statuses {_status_counts(cursor, seeded.program_id)}; "
                                   f"worker log:\n{server.log_tail('celery-worker')}")
        t_total = time.perf_counter() - t0
        cpu = meter.used()
        counts = _status_counts(cursor, seeded.program_id)
        cursor.execute(
            "SELECT extract(epoch FROM min(processed_at)), extract(epoch FROM percentile_disc(0.1) WITHIN GROUP "
            "(ORDER BY processed_at)), extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY processed_at)), "
            "sum(points), count(*) FILTER (WHERE points > 0) FROM rules_inboundevent "
            "WHERE program_id = %s AND status = 'processed'", [seeded.program_id])
        first, p10, p90, points, earning = cursor.fetchone()
        cursor.execute("SELECT sum(lifetime_earned) FROM ledger_balance WHERE program_id = %s", [seeded.program_id])
        ledger_points = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM ledger_entry WHERE program_id = %s", [seeded.program_id])
        entries = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM rules_ruleusage")
        usage_rows = cursor.fetchone()[0]
    sender.join()
    processed = counts.get("processed", 0)
    # processed_at is when a worker's batch transaction started: good enough for the pace in between.
    steady = 0.8 * processed / float(p90 - p10) if processed and p90 and p10 and p90 > p10 else float("nan")
    return {
        "t_total": t_total, "t_accepted": (sender.done_at or t0) - t0, "counts": counts, "processed": processed,
        "accepted": sender.accepted, "duplicates": sender.duplicates, "rejected": sender.rejected,
        "errors": sender.errors, "answered": sender.answered, "batches": len(bodies),
        "latencies": sorted(sender.latencies), "reconnects": sender.reconnects,
        "points": points or 0, "earning": earning or 0, "ledger_points": ledger_points or 0, "entries": entries,
        "usage_rows": usage_rows, "steady": steady,
        "first_processed": float(first) - t0_wall if first is not None else float("nan"), "cpu": cpu,
    }


# --- the database's ceiling: pgbench ---------------------------------------------------------

CEILING_SETUP = """
DROP TABLE IF EXISTS bench_ceiling_entry, bench_ceiling_balance;
CREATE TABLE bench_ceiling_balance (
    member_id bigint PRIMARY KEY, available int NOT NULL DEFAULT 0, lifetime_earned bigint NOT NULL DEFAULT 0);
INSERT INTO bench_ceiling_balance (member_id) SELECT g FROM generate_series(1, 100000) AS g;
CREATE TABLE bench_ceiling_entry (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_at timestamptz NOT NULL, member_id bigint NOT NULL,
    kind text NOT NULL, points int NOT NULL, description text NOT NULL);
CREATE INDEX ON bench_ceiling_entry (member_id, created_at DESC);
"""
# 100 balances spread over the table (ids block+1, block+1001, ...): two transactions take the
# same 100 rows or disjoint ones, so they may queue on each other's row locks but never deadlock.
CEILING_SCRIPT = """\\set block random(0, 999)
BEGIN;
INSERT INTO bench_ceiling_entry (created_at, member_id, kind, points, description)
    SELECT now(), :block + 1 + 1000 * g, 'earn', 10, 'purchase' FROM generate_series(0, 99) AS g;
UPDATE bench_ceiling_balance SET available = available + 10, lifetime_earned = lifetime_earned + 10
    WHERE member_id IN (SELECT :block + 1 + 1000 * g FROM generate_series(0, 99) AS g);
END;
"""


def pgbench_ceiling(server: BenchServer, *, clients: list[int], seconds: int) -> list[tuple[int, float, float]]:
    """(clients, tps, PostgreSQL backend CPU us per transaction) of the accrual transaction at each client
    count, in the benchmark's database, with the platform stopped."""
    import psycopg

    from loyalty.embedded import postgres_bin

    with psycopg.connect(server.db_url, autocommit=True) as conn:
        for statement in CEILING_SETUP.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("VACUUM (ANALYZE) bench_ceiling_balance")
        conn.execute("CHECKPOINT")
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(CEILING_SCRIPT)
    try:
        for n in clients:
            meter = CpuMeter(server)
            meter.start()
            proc = subprocess.Popen(
                [str(postgres_bin("pgbench")), "-n", "-f", script.name, "-c", str(n),
                 "-j", str(min(n, os.cpu_count() or 1)), "-T", str(seconds), server.db_url],  # a URL is a dbname
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            while proc.poll() is None:
                time.sleep(0.5)
                meter.sample()
            out, err = proc.communicate()
            match = re.search(r"tps = ([\d.]+)", out)
            transactions = re.search(r"number of transactions actually processed: (\d+)", out)
            if proc.returncode or not match or not transactions:
                raise RuntimeError(f"pgbench failed:\n{out}\n{err}")
            db_cpu = meter.used()["db"]
            results.append((n, float(match.group(1)), db_cpu / int(transactions.group(1)) * 1e6))
    finally:
        os.unlink(script.name)
    return results


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events to send (default 20,000; full: 100,000)")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per POST (the API's maximum is 1,000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--pgbench-clients", default="1,2,4,8",
                        help="client counts for the pgbench ceiling; the best is the ceiling (default 1,2,4,8)")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--db", default="bench_ingest", help="database to create (dropped at the end)")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database of the benchmark's Celery broker")
    parser.add_argument("--stall-timeout", type=float, default=120)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--py-spy", metavar="PATH", help="profile gunicorn and the worker during the run with this "
                        "py-spy binary (install it in a separate venv, not the project's)")
    args = parser.parse_args(argv)
    clients = [int(n) for n in args.pgbench_clients.split(",") if n.strip()]

    server = BenchServer(args.db, redis_db=args.redis_db, keep=args.keep)
    try:
        started = time.perf_counter()
        server.prepare()
        seeded = seed(members=args.members)
        bodies = build_bodies(events=args.events, batch=args.batch, members=args.members, seed_value=args.seed)
        server.start()
        setup_seconds = time.perf_counter() - started
        load_before = os.getloadavg()[0]
        if args.py_spy:
            server.profile_start(args.py_spy)
        result = run_ingest(server, seeded, bodies, threads=args.clients, stall_timeout=args.stall_timeout)
        load_after = os.getloadavg()[0]
        profiles = server.profile_stop() if args.py_spy else []
        server.stop_services()
        ceiling = pgbench_ceiling(server, clients=clients, seconds=args.pgbench_seconds)
        with __import__("psycopg").connect(server.db_url) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
    except BaseException:
        for name in ("gunicorn", "celery-worker"):
            tail = server.log_tail(name, 1500)
            if tail:
                print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        server.stop()

    r = result
    rate = r["processed"] / r["t_total"] if r["t_total"] else float("nan")
    best_clients, best_tps, best_cpu = max(ceiling, key=lambda c: c[1])
    ceiling_rows = best_tps * 100
    lat = r["latencies"]
    print(f"ingest_http: {args.events:,} purchase events, {len(bodies)} POST /api/v1/events/batch of {args.batch:,}, "
          f"{args.clients} client threads; {args.members:,} members, {seeded.rules} active rules; load average "
          f"{load_before:.1f} -> {load_after:.1f}" + (" (profiled with py-spy)" if args.py_spy else ""))
    print(f"  server: gunicorn -c loyalty/gunicorn_conf.py --workers {server.web_workers}, celery worker --concurrency "
          f"{server.celery_concurrency}, PostgreSQL {pg_version}, {os.cpu_count()} CPUs "
          f"(client, server and database on this machine); setup {setup_seconds:.0f} s, database {args.db}"
          f"{' (kept)' if args.keep else ' (dropped)'}")
    answered = "all" if r["answered"] == r["batches"] else f"ONLY {r['answered']} of {r['batches']}"
    print(f"  HTTP:       {answered} batches answered 202 after {r['t_accepted']:.2f} s = "
          f"{r['accepted'] / r['t_accepted']:,.0f} events/s accepted; POST latency p50 "
          f"{percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
          f"accepted {r['accepted']:,}, duplicates {r['duplicates']}, rejected {r['rejected']}, "
          f"errors {len(r['errors'])}, TCP connects {r['reconnects']}")
    print(f"  processed:  {r['processed']:,} events in {r['t_total']:.2f} s from the first POST = {rate:,.0f} events/s "
          f"(goal >= {GOAL_EVENTS_PER_SECOND:,}/s); steady 10%-90%: {r['steady']:,.0f} events/s; "
          f"first processed after {r['first_processed']:.2f} s")
    cpu = r["cpu"]
    server_cpu = cpu["web"] + cpu["worker"] + cpu["db"]
    per_event = {k: v / max(r["processed"], 1) * 1e6 for k, v in cpu.items()}
    print(f"  CPU:        per event {per_event['web']:,.0f} us web + {per_event['worker']:,.0f} us worker + "
          f"{per_event['db']:,.0f} us PostgreSQL backends = {server_cpu / max(r['processed'], 1) * 1e6:,.0f} us "
          f"(client {per_event['client']:,.0f} us); {os.cpu_count()} CPUs doing only this would process at most "
          f"{(os.cpu_count() or 1) * r['processed'] / server_cpu if server_cpu else float('nan'):,.0f} events/s")
    print(f"  outcome:    statuses {r['counts']}; {r['points']:,} points on {r['earning']:,} events, ledger "
          f"lifetime_earned {r['ledger_points']:,}, {r['entries']:,} entries, {r['usage_rows']:,} rule-usage rows")
    print("  baseline:   pgbench accrual (INSERT 100 entries + UPDATE 100 of 100,000 balances per transaction), "
          f"{args.pgbench_seconds} s each: " + ", ".join(f"{n} clients {tps:,.0f} tps" for n, tps, _cpu in ceiling))
    print(f"  ceiling:    {best_tps:,.0f} tps x 100 = {ceiling_rows:,.0f} rows/s ({best_clients} clients); PostgreSQL "
          f"backend CPU {best_cpu / 100:,.0f} us per row, i.e. per accrual (ours: {per_event['db']:,.0f} us per event)")
    print(f"  ratio:      ours / ceiling = {rate:,.0f} / {ceiling_rows:,.0f} = {rate / ceiling_rows:.3f} "
          f"(goal >= {GOAL_RATIO})")
    for error in r["errors"][:5]:
        print(f"  error: {error}")
    for path in profiles:
        focus = "EventBatchView.post" if path.name.startswith("gunicorn") else "events_process"
        print(pyspy_summary(path, focus=focus))
    if profiles:
        print(f"  profiles (py-spy raw, kept): {', '.join(str(p) for p in profiles)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
