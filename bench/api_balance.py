"""Partner API read path over HTTP: GET /api/v1/members/{id}/balance against the production server setup.

Runs the platform as ``make run`` does (``bench/_server.py``: ``gunicorn -c loyalty/gunicorn_conf.py`` with
WEB_CONCURRENCY workers, default one per CPU (at least 2), of WEB_THREADS threads, default 4, ``DEBUG=0``, a
generated ``SECRET_KEY``, ``LOYALTY_PLAIN_HTTP=1``) on a database of its own, seeds 10,000 members and funds
each with 3 lots through ``ledger.services.points_earn_many`` (earned 270, 150 and 30 days ago, so every
balance lists 3 open lots by expiry), then drives 16 concurrent HTTP/1.1 client connections for 20 s at random
members' balances. Baseline, same run, same server, same load: the bare JSON endpoint ``GET /healthz``
(Django's full middleware stack, no DRF, no authentication, no query).

    .venv/bin/python -m bench.api_balance                          # wrk if installed, else Python threads
    .venv/bin/python -m bench.api_balance --client python          # force the http.client threads
    .venv/bin/python -m bench.api_balance --py-spy /tmp/pyspy/bin/py-spy   # + where gunicorn spends its time

Client: ``wrk`` (C, ``apt-get install wrk``) when it is on PATH, because 16 Python client threads
eat a good share of the same 2 CPUs the server runs on and become the bottleneck; else 16
``http.client`` threads, one persistent connection each. Which one ran is printed. Note that
``make run``'s gunicorn (``loyalty/gunicorn_conf.py``: threaded workers) keeps connections
alive; the number of client connects is printed.

Server environment differences from ``make run``, on purpose:
* ``API_RATE_LIMIT_PER_MINUTE=1000000``: the per-key rate limit is on, as in production, but
  high enough that the benchmark's one key never reaches it (at the default 60,000 a minute it
  would get 429s after a minute at 1,000 requests/s). Each process then takes numbers from Redis in
  blocks of 1,000 (``loyalty/api/ratelimit.py``); at the default, in blocks of 60;
* ``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh temporary folder, as ``make run`` sets it (the
  shared ``bench/_server.py`` does not), so the metrics middleware costs what it costs in
  production (``--no-prometheus-multiproc`` leaves it unset, for comparison).

Goals on 2 cores: >= 1,000 requests/s, p99 <= 25 ms, balance / healthz throughput >= 0.6.
Nothing is asserted: the figures are printed next to their goals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import BenchServer, member_external_id, percentile, pyspy_summary, seed  # noqa: E402

GOAL_RPS = 1000
GOAL_P99_MS = 25.0
GOAL_RATIO = 0.6


# --- the server's environment ----------------------------------------------------------------


BENCH_RATE_LIMIT = 1_000_000


def server_environment(*, rate_limit_high: bool, prometheus_multiproc: bool) -> Path | None:
    """Set what the server children inherit (``BenchServer.environ`` copies ``os.environ``)."""
    if rate_limit_high:
        os.environ["API_RATE_LIMIT_PER_MINUTE"] = str(BENCH_RATE_LIMIT)
    if prometheus_multiproc:
        # make run: PROMETHEUS_MULTIPROC_DIR=.local/prometheus, emptied at start. Ours is private.
        folder = Path(tempfile.mkdtemp(prefix="bench-prometheus-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        return folder
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return None


# --- funding members through the ledger service ----------------------------------------------


def fund_members(program_id: int, *, lots_per_member: int, points_of, days_ago: list[int],
                 batch: int = 1000) -> dict[int, int]:
    """Give every member of the program ``lots_per_member`` lots through ``points_earn_many`` (the
    service the event pipeline uses), the i-th lot earned ``days_ago[i]`` days ago and worth
    ``points_of(member_number, i)``; return the points funded by member id."""
    from django.db import connection

    from accounts.models import Member, Program
    from ledger.partitions import ensure_partitions
    from ledger.services import EarnRequest, Source, points_earn_many

    program = Program.objects.get(pk=program_id)
    now = dt.datetime.now(dt.UTC)
    oldest = now - dt.timedelta(days=max(days_ago))
    ensure_partitions(start=oldest.date(), months_ahead=(now.year * 12 + now.month) - (oldest.year * 12 + oldest.month))
    members = list(Member.objects.filter(program_id=program_id).order_by("id").values_list("id", "external_id"))
    funded: dict[int, int] = {}
    for lot in range(lots_per_member):
        when = now - dt.timedelta(days=days_ago[lot % len(days_ago)])
        requests = []
        for member_id, external_id in members:
            points = points_of(int(external_id.lstrip("m")), lot)
            funded[member_id] = funded.get(member_id, 0) + points
            requests.append(EarnRequest(member_id=member_id, points=points, key=f"bench-fund-{member_id}-{lot}",
                                        description="Bench funding", source=Source("bench", f"{member_id}-{lot}")))
        for start in range(0, len(requests), batch):
            points_earn_many(program=program, requests=requests[start:start + batch], now=when)
    with connection.cursor() as cursor:
        for table in ("ledger_lot", "ledger_balance", "ledger_operation", "ledger_entry"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return funded


# --- CPU accounting --------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of gunicorn, of the PostgreSQL backends on the bench database, of the client and
    of the whole machine, between ``start()`` and ``stop()``."""

    def __init__(self, server: BenchServer):
        self.server = server

    def _processes(self) -> dict[str, dict[int, float]]:
        import psutil

        groups: dict[str, dict[int, float]] = {"gunicorn": {}, "postgres": {}}
        for pid in self.server.pids().get("gunicorn", []):
            try:
                t = psutil.Process(pid).cpu_times()
                groups["gunicorn"][pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        marker = f" {self.server.dbname} "
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                if cmdline.startswith("postgres:") and marker in cmdline + " ":
                    t = proc.cpu_times()
                    groups["postgres"][proc.pid] = t.user + t.system
            except psutil.Error:
                pass
        return groups

    @staticmethod
    def _machine() -> tuple[float, float]:
        import psutil

        t = psutil.cpu_times()
        total = sum(t) - getattr(t, "guest", 0) - getattr(t, "guest_nice", 0)
        return total - t.idle - getattr(t, "iowait", 0), total

    def start(self) -> None:
        self._procs = self._processes()
        self._machine0 = self._machine()
        self._self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._children0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def stop(self) -> dict[str, float]:
        after = self._processes()
        busy, total = self._machine()
        usage_self = resource.getrusage(resource.RUSAGE_SELF)
        usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = {
            name: sum(cpu - self._procs[name].get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in after.items()
        }
        result["client"] = (usage_self.ru_utime + usage_self.ru_stime - self._self0.ru_utime - self._self0.ru_stime
                            + usage_children.ru_utime + usage_children.ru_stime
                            - self._children0.ru_utime - self._children0.ru_stime)
        result["machine_busy"] = busy - self._machine0[0]
        result["machine_total"] = total - self._machine0[1]
        return result


def describe_cpu(cpu: dict[str, float], client_name: str) -> str:
    busy, total = cpu["machine_busy"], cpu["machine_total"]
    rest = busy - cpu["gunicorn"] - cpu["postgres"] - cpu["client"]
    return (f"CPU-s over the run: machine {busy:.1f} busy of {total:.1f} ({100 * busy / total:.0f}%): gunicorn "
            f"{cpu['gunicorn']:.1f}, PostgreSQL backends of the bench db {cpu['postgres']:.1f}, client ({client_name}) "
            f"{cpu['client']:.1f}, everything else on the machine {max(rest, 0):.1f}")


# --- the clients -----------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- generated by bench/api_balance.py
local mode = "%(mode)s"
local members = %(members)d
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  math.randomseed(%(seed)d * 1000 + tid)
  wrk.headers["Authorization"] = "Bearer %(key)s"
  wrk.headers["Accept"] = "application/json"
end

function request()
  if mode == "healthz" then
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("GET", string.format("/api/v1/members/m%%07d/balance", math.random(1, members)))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%%d duration_us=%%d bytes=%%d connect=%%d read=%%d write=%%d status=%%d timeout=%%d " ..
    "p50_us=%%d p90_us=%%d p99_us=%%d max_us=%%d mean_us=%%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def run_wrk(*, wrk: str, port: int, key: str, mode: str, members: int, connections: int, threads: int,
            seconds: float, seed_value: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"mode": mode, "members": members, "seed": seed_value, "key": key})
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", script.name, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script.name)
    match = re.search(r"WRK_RESULT (.*)", proc.stdout)
    if proc.returncode or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    f = {k: int(v) for k, v in (item.split("=") for item in match.group(1).split())}
    elapsed = f["duration_us"] / 1e6
    errors = f["connect"] + f["read"] + f["write"] + f["timeout"]
    return {
        "requests": f["requests"], "seconds": elapsed, "rps": f["requests"] / elapsed,
        "p50_ms": f["p50_us"] / 1000, "p90_ms": f["p90_us"] / 1000, "p99_ms": f["p99_us"] / 1000,
        "max_ms": f["max_us"] / 1000, "mean_ms": f["mean_us"] / 1000,
        "non_2xx": f["status"], "socket_errors": errors, "connects": None,
        "client_cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "raw": proc.stdout.strip(),
    }


def run_python(*, port: int, key: str, mode: str, members: int, connections: int, seconds: float,
               seed_value: int) -> dict:
    """``connections`` threads, each holding one HTTP/1.1 connection (reopened when the server closes it)."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json", "Connection": "keep-alive"}
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"non_2xx": 0, "socket_errors": 0, "connects": 0}
    statuses: dict[int, int] = {}
    start_barrier = threading.Barrier(connections + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        rng = random.Random(seed_value * 1000 + index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        counts = {"non_2xx": 0, "socket_errors": 0, "connects": 0}
        seen: dict[int, int] = {}
        start_barrier.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline[0]:
                break
            path = "/healthz" if mode == "healthz" else \
                f"/api/v1/members/{member_external_id(rng.randint(1, members))}/balance"
            try:
                if conn.sock is None:
                    counts["connects"] += 1
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                conn.close()
                counts["socket_errors"] += 1
                continue
            mine.append(time.perf_counter() - t0)
            seen[response.status] = seen.get(response.status, 0) + 1
            if not 200 <= response.status < 300:
                counts["non_2xx"] += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for name, n in counts.items():
                totals[name] += n
            for status, n in seen.items():
                statuses[status] = statuses.get(status, 0) + n

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in pool:
        thread.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline[0] = t_start + seconds
    start_barrier.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - t_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    return {
        "requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000, "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000, "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "mean_ms": (sum(latencies) / len(latencies) if latencies else float("nan")) * 1000,
        **totals, "statuses": statuses,
        "client_cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
    }


# --- checks before the load ------------------------------------------------------------------


def preflight(port: int, key: str, external_id: str, lots_per_member: int) -> dict:
    """One request to each endpoint: 200, the expected body, and whether the server keeps the connection."""
    found = {}
    for name, path in (("healthz", "/healthz"), ("balance", f"/api/v1/members/{external_id}/balance")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}", "Connection": "keep-alive"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status} {body[:300]!r}")
        data = json.loads(body)
        if name == "balance" and (len(data.get("expiring", [])) != lots_per_member or data["available"] <= 0):
            raise RuntimeError(f"GET {path}: unexpected balance {data}")
        found[name] = {"bytes": len(body), "connection": response.getheader("Connection") or "(keep-alive)",
                       "body": data}
    return found


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--lots", type=int, default=3, help="lots per member (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent client connections (default 16)")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per endpoint (default 20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per endpoint first (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure healthz and balance this many times, alternating which goes first (default 1)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk (needs `apt-get install wrk`), Python threads, or wrk when "
                             "installed (default)")
    parser.add_argument("--wrk-threads", type=int, default=os.cpu_count() or 1, help="wrk -t (default: CPUs)")
    parser.add_argument("--web-workers", type=int, help="gunicorn workers (default: make run's WEB_CONCURRENCY "
                        "or one per CPU, at least 2)")
    parser.add_argument("--no-prometheus-multiproc", action="store_true",
                        help="leave PROMETHEUS_MULTIPROC_DIR unset (make run sets it)")
    parser.add_argument("--db", default="bench_api_balance", help="database to create (dropped at the end)")
    parser.add_argument("--redis-db", type=int, default=11, help="Redis database of the server's cache and broker")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--py-spy", metavar="PATH", help="profile gunicorn during the balance load with this py-spy "
                        "binary (install it in a separate venv, not the project's)")
    args = parser.parse_args(argv)

    wrk = shutil.which("wrk")
    if args.client == "wrk" and not wrk:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    client = "wrk" if args.client in ("auto", "wrk") and wrk else "python"
    client_name = (f"wrk, {args.wrk_threads} threads x {args.connections} connections" if client == "wrk"
                   else f"Python http.client, {args.connections} threads x 1 connection")

    metrics_dir = server_environment(rate_limit_high=True, prometheus_multiproc=not args.no_prometheus_multiproc)
    server = BenchServer(args.db, redis_db=args.redis_db, keep=args.keep, web_workers=args.web_workers)
    rounds: list[dict] = []
    profiles: list[Path] = []
    try:
        started = time.perf_counter()
        server.prepare()
        seeded = seed(members=args.members, slug="bench-balance")
        fund_started = time.perf_counter()
        rng = random.Random(args.seed)
        fixed = {(n, lot): rng.randint(50, 500) for n in range(1, args.members + 1) for lot in range(args.lots)}
        funded = fund_members(seeded.program_id, lots_per_member=args.lots, points_of=lambda n, lot: fixed[(n, lot)],
                              days_ago=[270, 150, 30])
        fund_seconds = time.perf_counter() - fund_started
        server.start()
        setup_seconds = time.perf_counter() - started
        checked = preflight(server.port, seeded.key, member_external_id(1), args.lots)

        def load(mode: str, seconds: float) -> dict:
            common = {"port": server.port, "key": seeded.key, "mode": mode, "members": args.members,
                      "connections": args.connections, "seconds": seconds, "seed_value": args.seed + len(rounds)}
            if client == "wrk":
                return run_wrk(wrk=wrk, threads=args.wrk_threads, **common)
            return run_python(**common)

        for mode in ("healthz", "balance"):  # warm every worker, its DB connection and the caches
            load(mode, args.warmup)
        meter = CpuMeter(server)
        load_before = os.getloadavg()[0]
        for index in range(args.rounds):
            result = {}
            for mode in (("healthz", "balance") if index % 2 == 0 else ("balance", "healthz")):
                profiling = args.py_spy and mode == "balance" and index == 0
                if profiling:
                    server.profile_start(args.py_spy)
                meter.start()
                result[mode] = load(mode, args.seconds)
                result[mode]["cpu"] = meter.stop()
                result[mode]["load"] = os.getloadavg()[0]
                if profiling:
                    profiles = server.profile_stop()
            rounds.append(result)
        with __import__("psycopg").connect(server.db_url) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            lots_open = conn.execute("SELECT count(*) FROM ledger_lot WHERE remaining > 0").fetchone()[0]
    except BaseException:
        tail = server.log_tail("gunicorn", 1500)
        if tail:
            print(f"--- gunicorn log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        server.stop()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    print(f"api_balance: GET /api/v1/members/{{id}}/balance vs GET /healthz, {args.connections} concurrent HTTP/1.1 "
          f"connections, {args.seconds:.0f} s each per round, {args.rounds} round(s) after {args.warmup:.0f} s warm-up "
          f"each; load average {load_before:.1f} before" + (" (balance profiled with py-spy)" if args.py_spy else ""))
    print(f"  client:  {client_name}" + ("" if client == "wrk" else " (wrk not used: "
                                             + ("not installed" if not wrk else "--client python") + ")"))
    print(f"  server:  gunicorn -c loyalty/gunicorn_conf.py --workers {server.web_workers} "
          f"(gthread, {server.web_threads} thread(s) each, keep-alive, as make run), "
          f"DEBUG=0, "
          f"LOYALTY_PLAIN_HTTP=1, API_RATE_LIMIT_PER_MINUTE={BENCH_RATE_LIMIT:,} (on, never reached), "
          f"PROMETHEUS_MULTIPROC_DIR "
          f"{'set (as make run)' if metrics_dir else 'unset'}; PostgreSQL {pg_version}, {os.cpu_count()} CPUs "
          f"(client, server and database on this machine)")
    print(f"  data:    {args.members:,} members x {args.lots} lots ({lots_open:,} open lots, funded through "
          f"points_earn_many in {fund_seconds:.1f} s, {sum(funded.values()):,} points); setup {setup_seconds:.0f} s; "
          f"database {args.db}{' (kept)' if args.keep else ' (dropped)'}")
    print(f"  answers: healthz {checked['healthz']['bytes']} bytes, balance {checked['balance']['bytes']} bytes "
          f"({len(checked['balance']['body']['expiring'])} expiring lots); server's Connection header: "
          f"{checked['balance']['connection']}")
    for index, result in enumerate(rounds, 1):
        for mode in ("healthz", "balance"):
            r = result[mode]
            connects = f", connects {r['connects']:,}" if r.get("connects") is not None else ""
            print(f"  round {index} {mode:<8} {r['requests']:>7,} requests in {r['seconds']:.1f} s = {r['rps']:>7,.0f} "
                  f"req/s; latency p50 {r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max "
                  f"{r['max_ms']:.1f} ms; non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}{connects}; "
                  f"load average after {r['load']:.1f}")
            print(f"          {describe_cpu(r['cpu'], client)}")
        h, b = result["healthz"], result["balance"]
        ratio = b["rps"] / h["rps"] if h["rps"] else float("nan")
        print(f"  round {index} result: balance {b['rps']:,.0f} req/s (goal >= {GOAL_RPS:,}), "
              f"p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms (goal <= {GOAL_P99_MS:.0f} ms); "
              f"baseline healthz {h['rps']:,.0f} req/s, p99 {h['p99_ms']:.2f} ms; "
              f"ratio balance / healthz = {ratio:.2f} (goal >= {GOAL_RATIO})")
        per_request = b["cpu"]["gunicorn"] / b["requests"] * 1000 if b["requests"] else float("nan")
        per_health = h["cpu"]["gunicorn"] / h["requests"] * 1000 if h["requests"] else float("nan")
        per_pg = b["cpu"]["postgres"] / b["requests"] * 1000 if b["requests"] else float("nan")
        print(f"  round {index} cost:   gunicorn CPU per request: balance {per_request:.2f} ms, healthz "
              f"{per_health:.2f} ms; PostgreSQL CPU per balance request {per_pg:.2f} ms")
    for path in profiles:
        if path.name.startswith("gunicorn"):
            print(pyspy_summary(path, top=20))
            print(pyspy_summary(path, top=12, focus="BalanceView"))
    if profiles:
        print(f"  profiles (py-spy raw, kept): {', '.join(str(p) for p in profiles)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
