"""Real-time events: single POST /api/v1/events at a steady rate, latency of each.

Runs the platform as ``make run`` does (``bench/_server.py``) on a database of its own, seeds
100,000 members, 10 active rules and a partner key, then sends one purchase per request on an
open-loop schedule (request i is due at start + i/rate, whatever happened to the earlier ones;
several sender threads, so a slow answer does not hold the next ones back). Latency is measured
from the moment a request was due to its full answer, so a late send counts against it.
Baseline, same run, same rate and senders: GET /healthz (the HTTP stack: gunicorn, Django's
middleware, no database).

    .venv/bin/python -m bench.realtime_events --seconds 10    # quick
    .venv/bin/python -m bench.realtime_events                 # full: 100/s for 60 s

Goals: p50 <= 15 ms and p99 <= 50 ms for the events. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import BenchServer, CpuMeter, percentile, purchase_event, pyspy_summary, seed  # noqa: E402

GOAL_P50_MS = 15
GOAL_P99_MS = 50


@dataclass
class Phase:
    name: str
    due: list[float] = field(default_factory=list)  # relative to the phase's start
    started: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    bad: int = 0  # answers that were not the expected status
    unsent: int = 0  # requests dropped at the deadline (the server could not keep up)
    duration: float = 0.0
    cpu: dict = field(default_factory=dict)


def open_loop(*, server: BenchServer, rate: float, seconds: float, senders: int, make_request, expect: int,
              name: str, overtime: float = 2.0) -> Phase:
    """Send ``rate`` x ``seconds`` requests, request i due at t0 + i/rate, from ``senders`` threads.

    ``make_request(i)`` returns (method, path, body, headers). A server that cannot keep up makes the
    phase last longer; after ``overtime`` x ``seconds`` (+10 s) no more requests are sent (``unsent``)."""
    total = int(rate * seconds)
    phase = Phase(name)
    port = server.port
    meter = CpuMeter(server)
    meter.start()
    lock = threading.Lock()
    counter = iter(range(total))
    t0 = time.perf_counter() + 0.2  # let every thread start first
    deadline = t0 + overtime * seconds + 10

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            if time.perf_counter() > deadline:
                with lock:
                    phase.unsent += 1
                continue
            method, path, body, headers = make_request(i)
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with lock:
                    phase.errors.append(f"request {i}: {exc!r}")
                continue
            ended = time.perf_counter()
            with lock:
                phase.due.append(due - t0)
                phase.started.append(started - t0)
                phase.ended.append(ended - t0)
                phase.statuses[response.status] += 1
                if response.status != expect:
                    phase.bad += 1
                    if len(phase.errors) < 5:
                        phase.errors.append(f"request {i}: HTTP {response.status} {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(1)
        meter.sample()
    phase.duration = max(phase.ended, default=0.0)
    phase.cpu = meter.used()
    return phase


def summary(phase: Phase, rate: float) -> dict:
    latency = sorted((e - d) * 1000 for d, e in zip(phase.due, phase.ended, strict=True))
    service = sorted((e - s) * 1000 for s, e in zip(phase.started, phase.ended, strict=True))
    lag = [(s - d) * 1000 for d, s in zip(phase.due, phase.started, strict=True)]
    n = len(latency)
    span = (max(phase.started) - min(phase.started)) if n > 1 else 0.0
    return {
        "n": n, "rate": (n - 1) / span if span else float("nan"),
        "p50": percentile(latency, 50), "p90": percentile(latency, 90), "p99": percentile(latency, 99),
        "max": latency[-1] if latency else float("nan"),
        "s50": percentile(service, 50), "s99": percentile(service, 99), "lag": max(lag, default=0.0),
        "statuses": dict(phase.statuses), "errors": phase.errors, "bad": phase.bad, "unsent": phase.unsent,
        "cpu": {k: v / max(n, 1) * 1e3 for k, v in phase.cpu.items()},  # ms per request
    }


def line(label: str, s: dict) -> str:
    unsent = f" ({s['unsent']:,} not sent: past the deadline, the server could not keep up)" if s["unsent"] else ""
    return (f"{label} {s['n']:,} answered{unsent}, statuses {s['statuses']}; achieved {s['rate']:.1f}/s; latency "
            f"p50 {s['p50']:.1f} ms, p90 {s['p90']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms "
            f"(service time p50 {s['s50']:.1f} ms, p99 {s['s99']:.1f} ms; latest send {s['lag']:.1f} ms after due); "
            f"CPU per request {s['cpu']['web']:.2f} ms web + {s['cpu']['db']:.2f} ms PostgreSQL backends "
            f"+ {s['cpu']['worker']:.2f} ms worker (client {s['cpu']['client']:.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of each phase (default 60)")
    parser.add_argument("--rate", type=float, default=100, help="requests per second (default 100)")
    parser.add_argument("--senders", type=int, default=16, help="sender threads (default 16)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of events sent first, not measured")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--db", default="bench_realtime", help="database to create (dropped at the end)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database of the benchmark's broker and cache")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--py-spy", metavar="PATH", help="profile gunicorn during the events phase with this py-spy "
                        "binary (install it in a separate venv, not the project's)")
    args = parser.parse_args(argv)

    server = BenchServer(args.db, redis_db=args.redis_db, keep=args.keep)
    rng = random.Random(args.seed)
    rng_lock = threading.Lock()
    run_id = f"{args.seed:x}{int(time.time()):x}"
    try:
        started = time.perf_counter()
        server.prepare()
        seeded = seed(members=args.members)
        server.start()
        setup_seconds = time.perf_counter() - started
        event_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {seeded.key}"}

        def event_request(prefix: str):
            def make(i: int):
                with rng_lock:
                    payload = purchase_event(f"rt-{run_id}-{prefix}-{i}", rng, args.members,
                                             dt.datetime.now(dt.UTC).replace(microsecond=0))
                return "POST", "/api/v1/events", json.dumps(payload).encode(), event_headers
            return make

        def healthz(i: int):
            return "GET", "/healthz", None, {}

        common = {"server": server, "rate": args.rate, "senders": args.senders}
        load_before = os.getloadavg()[0]
        if args.warmup:
            open_loop(**common, seconds=args.warmup, make_request=event_request("warm"), expect=201, name="warm-up")
        base = open_loop(**common, seconds=args.seconds, make_request=healthz, expect=200, name="healthz")
        if args.py_spy:
            server.profile_start(args.py_spy)
        events = open_loop(**common, seconds=args.seconds, make_request=event_request("ev"), expect=201,
                           name="events")
        profiles = server.profile_stop() if args.py_spy else []
        load_after = os.getloadavg()[0]
        import psycopg

        with psycopg.connect(server.db_url) as conn:
            statuses = dict(conn.execute(
                "SELECT status, count(*) FROM rules_inboundevent WHERE event_id LIKE %s GROUP BY status",
                [f"rt-{run_id}-ev-%"]).fetchall())
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
    except BaseException:
        for name in ("gunicorn", "celery-worker"):
            tail = server.log_tail(name, 1500)
            if tail:
                print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        server.stop()

    ev, hz = summary(events, args.rate), summary(base, args.rate)
    print(f"realtime_events: open loop at {args.rate:g}/s for {args.seconds:g} s per phase, {args.senders} sender "
          f"threads, one kept-alive connection each; {args.members:,} members, "
          f"{seeded.rules} active rules; load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs"
          + ("; events phase profiled with py-spy" if args.py_spy else ""))
    print(f"  server: gunicorn -c loyalty/gunicorn_conf.py --workers {server.web_workers}, celery worker --concurrency "
          f"{server.celery_concurrency}, PostgreSQL {pg_version}; setup {setup_seconds:.0f} s; database {args.db}"
          f"{' (kept)' if args.keep else ' (dropped)'}")
    print(line("  events:   POST /api/v1/events:", ev))
    print(f"            goal p50 <= {GOAL_P50_MS} ms: {ev['p50']:.1f} ms; goal p99 <= {GOAL_P99_MS} ms: "
          f"{ev['p99']:.1f} ms; stored statuses {statuses}")
    print(line("  baseline: GET /healthz:       ", hz))
    for error in (ev["errors"] + hz["errors"])[:5]:
        print(f"  error: {error}")
    for path in profiles:
        if path.name.startswith("gunicorn"):
            print(pyspy_summary(path, focus="EventCreateView.post"))
            print(f"  profile (py-spy raw, kept): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
