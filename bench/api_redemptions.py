"""Partner API write path over HTTP: concurrent POST /api/v1/redemptions on shared members, then no overspend.

Runs the platform as ``make run`` does (``bench/_server.py``: ``gunicorn -c loyalty/gunicorn_conf.py`` with
WEB_CONCURRENCY workers, default one per CPU (at least 2), of WEB_THREADS threads, default 4, ``DEBUG=0``,
``LOYALTY_PLAIN_HTTP=1``) on a database of its own, seeds 200 members funded with known points (two lots each, through
``ledger.services.points_earn_many``: 1,000 to 3,000 points a member) and two rewards, then 50
client threads (Python ``http.client``, one HTTP/1.1 connection each, reopened whenever the
server closes it) POST redemptions for random members among the 200 for 20 s (or ``--requests``
in all). Each request carries its own ``Idempotency-Key``; the mix:

* 65% points: 10 to 250 points;
* 15% reward ``free-coffee`` (150 points, generated voucher codes), quantity 1 or 2;
* 10% reward ``tote-bag`` (400 points, stock 40: it runs out, then 409 ``out_of_stock``);
* 10% must fail: more points than the member was ever funded (422 ``insufficient_points``);
* and 5% of the successful ones are sent again with the same key and body (a client retry),
  which must replay the first answer (``Idempotent-Replayed: true``) and spend nothing.

The members run dry during the run, so ordinary redemptions start failing with 422
``insufficient_points`` too. After the run (server stopped) it checks, per member: available >= 0,
available == funded - the points of the 201s the clients got, == funded - the captured
redemptions in the database, lifetime_redeemed == the same; every must-fail was 422
``insufficient_points``; the tote bag's stock was never oversold; the voucher codes match the
captured coffees; every answer was a 201, 409 or 422 (no server error, no lost connection); then
runs ``manage.py ledger_audit`` on the bench database (exit 0 expected).

    .venv/bin/python -m bench.api_redemptions                       # 50 clients, 3 s warm-up, then 20 s
    .venv/bin/python -m bench.api_redemptions --requests 5000       # a fixed number of requests
    .venv/bin/python -m bench.api_redemptions --rate 100            # open loop: 100 requests/s offered
    .venv/bin/python -m bench.api_redemptions --py-spy /tmp/pyspy/bin/py-spy

Server environment as ``make run`` (rate limits at their defaults: 60,000 requests a minute per
key, no per-member redemption limit), plus ``PROMETHEUS_MULTIPROC_DIR`` set to a fresh temporary
folder as ``make run`` sets it (``bench/_server.py`` does not).

By default every client sends its next request as soon as it has its answer (closed loop: the
server is saturated, and by Little's law the mean latency is 50 / throughput). ``--rate R`` sends R
requests a second in all on a fixed schedule instead (open loop), each latency counted from the
time its request was due, so that a request that found every client busy counts its wait too. A
warm-up of ``--warmup`` seconds (default 3) of the same load on connections of its own comes
first: its requests are checked with the rest but left out of the figures, which it prints apart.

Goal: p99 <= 100 ms. Overspend is a correctness failure: the exit status is 1 if any check fails.
Speed is never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import BASE_DIR, BenchServer, member_external_id, percentile, pyspy_summary, seed  # noqa: E402
from bench.api_balance import CpuMeter, describe_cpu, fund_members, server_environment  # noqa: E402

GOAL_P99_MS = 100.0
COFFEE, TOTE = "free-coffee", "tote-bag"


def funded_lot(n: int, lot: int) -> int:
    """Points of member number ``n``'s lot ``lot``: 500 to 1,500 a lot, so 1,000 to 3,000 a member."""
    return 500 + (n % 5) * 250


def create_rewards(program_id: int, tote_stock: int) -> None:
    from campaigns.models import Reward

    Reward.objects.create(program_id=program_id, code=COFFEE, name="Free coffee", cost=150,
                          vouchers=Reward.Vouchers.GENERATED)
    Reward.objects.create(program_id=program_id, code=TOTE, name="Tote bag", cost=400, stock=tote_stock)


class Clients:
    """``threads`` client threads, each with one HTTP/1.1 connection, POSTing redemptions."""

    def __init__(self, *, port: int, key: str, members: int, funded_by_number: dict[int, int], threads: int,
                 seconds: float, requests: int | None, replay_fraction: float, idempotency: bool, seed_value: int,
                 rate: float | None = None):
        self.port, self.key, self.members, self.funded = port, key, members, funded_by_number
        self.rate = rate  # None: each client sends its next request as soon as it has an answer
        self.threads, self.seconds, self.limit = threads, seconds, requests
        self.replay_fraction, self.idempotency, self.seed = replay_fraction, idempotency, seed_value
        self.lock = threading.Lock()
        self.sent = 0
        self.results: list[dict] = []
        self.replays: list[dict] = []
        self.connects = 0

    def _take(self) -> float | None:
        """The time the next request is due (now, without --rate), or None when the run is over."""
        with self.lock:
            if self.limit is not None and self.sent >= self.limit:
                return None
            due = time.perf_counter() if self.rate is None else self.started + self.sent / self.rate
            if due >= self.deadline:
                return None
            self.sent += 1
            return due

    def _body(self, rng: random.Random) -> tuple[str, dict]:
        n = rng.randint(1, self.members)
        member = member_external_id(n)
        draw = rng.random()
        if draw < 0.10:
            return "must_fail", {"member_id": member, "points": self.funded[n] + 1 + rng.randint(0, 1000)}
        if draw < 0.20:
            return "tote", {"member_id": member, "reward": TOTE}
        if draw < 0.35:
            return "coffee", {"member_id": member, "reward": COFFEE, "quantity": rng.randint(1, 2)}
        return "points", {"member_id": member, "points": rng.randint(10, 250), "description": "Bench redemption"}

    def _post(self, conn: http.client.HTTPConnection, body: bytes, key: str | None) -> tuple[int, dict, dict, float]:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json",
                   "Accept": "application/json", "Connection": "keep-alive"}
        if key:
            headers["Idempotency-Key"] = key
        started = time.perf_counter()
        if conn.sock is None:
            with self.lock:
                self.connects += 1
        conn.request("POST", "/api/v1/redemptions", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.will_close:
            conn.close()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"unparsed": data[:200].decode("latin-1")}
        return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}, elapsed

    def _run(self, index: int, barrier: threading.Barrier) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        mine, replays = [], []
        barrier.wait()
        while time.perf_counter() < self.deadline and (due := self._take()) is not None:
            if self.rate is not None:
                # Open loop: the request is due at its slot of the schedule. Its latency counts from
                # then, so a request that waited for a free client thread counts that wait too.
                time.sleep(max(0.0, due - time.perf_counter()))
            kind, payload = self._body(rng)
            body = json.dumps(payload, separators=(",", ":")).encode()
            key = f"bench-{uuid.uuid4()}" if self.idempotency else None
            try:
                status, data, headers, elapsed = self._post(conn, body, key)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                mine.append({"kind": kind, "member": payload["member_id"], "status": None, "error": repr(exc),
                             "latency": None})
                continue
            error = data.get("error", {}) if isinstance(data, dict) else {}
            done = time.perf_counter()
            mine.append({"kind": kind, "member": payload["member_id"], "status": status,
                         "latency": elapsed if self.rate is None else done - due,
                         "late": done - elapsed - due,
                         "at": done - elapsed - self.started,
                         "code": error.get("code"), "points": data.get("points") if status == 201 else None,
                         "id": data.get("id") if status == 201 else None,
                         "reward": data.get("reward") if status == 201 else None,
                         "quantity": data.get("quantity") if status == 201 else None,
                         "voucher": data.get("voucher_code") if status == 201 else None})
            if status == 201 and key and rng.random() < self.replay_fraction:
                try:
                    r_status, r_data, r_headers, r_elapsed = self._post(conn, body, key)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    replays.append({"ok": False, "why": repr(exc)})
                    continue
                ok = (r_status == 201 and r_headers.get("idempotent-replayed") == "true"
                      and r_data.get("id") == data.get("id") and r_data.get("points") == data.get("points"))
                replays.append({"ok": ok, "latency": r_elapsed,
                                "why": "" if ok else f"HTTP {r_status} {str(r_data)[:200]} first id {data.get('id')}"})
        conn.close()
        with self.lock:
            self.results.extend(mine)
            self.replays.extend(replays)

    def run(self) -> float:
        barrier = threading.Barrier(self.threads + 1)
        pool = [threading.Thread(target=self._run, args=(i, barrier), daemon=True) for i in range(self.threads)]
        for thread in pool:
            thread.start()
        self.deadline = float("inf")
        started = self.started = time.perf_counter()
        self.deadline = started + (self.seconds if self.limit is None else 3600)
        barrier.wait()
        for thread in pool:
            thread.join()
        return time.perf_counter() - started


# --- after the run: no overspend ------------------------------------------------------------


def verify(server: BenchServer, *, program_id: int, funded_by_external: dict[str, int], runs: list[Clients],
           tote_stock: int) -> tuple[list[str], dict]:
    """Every check after the runs (the warm-up's requests spent points too); returns (failures, figures)."""
    clients = SimpleNamespace(results=[r for run in runs for r in run.results],
                              replays=[r for run in runs for r in run.replays])
    import psycopg

    failures: list[str] = []
    spent_by_client: dict[str, int] = {m: 0 for m in funded_by_external}
    for r in clients.results:
        if r["status"] == 201:
            spent_by_client[r["member"]] += r["points"]
    with psycopg.connect(server.db_url) as conn:
        balances = {external: (available, held, pending, redeemed) for external, available, held, pending, redeemed in
                    conn.execute(
                        "SELECT m.external_id, b.available, b.held, b.pending, b.lifetime_redeemed "
                        "FROM ledger_balance b JOIN accounts_member m ON m.id = b.member_id WHERE m.program_id = %s",
                        [program_id])}
        captured = dict(conn.execute(
            "SELECT m.external_id, sum(r.points) FROM campaigns_redemption r "
            "JOIN accounts_member m ON m.id = r.member_id WHERE r.program_id = %s AND r.status = 'captured' "
            "GROUP BY m.external_id", [program_id]).fetchall())
        statuses = dict(conn.execute(
            "SELECT status, count(*) FROM campaigns_redemption WHERE program_id = %s GROUP BY status",
            [program_id]).fetchall())
        (tote_left,), = conn.execute("SELECT stock FROM campaigns_reward WHERE program_id = %s AND code = %s",
                                     [program_id, TOTE]).fetchall()
        (totes_taken,), = conn.execute(
            "SELECT coalesce(sum(r.quantity), 0) FROM campaigns_redemption r "
            "JOIN campaigns_reward w ON w.id = r.reward_id "
            "WHERE w.program_id = %s AND w.code = %s AND r.status = 'captured'", [program_id, TOTE]).fetchall()
        (coffees_taken, vouchers), = conn.execute(
            "SELECT (SELECT coalesce(sum(r.quantity), 0) FROM campaigns_redemption r WHERE r.reward_id = w.id "
            "AND r.status = 'captured'), (SELECT count(*) FROM campaigns_vouchercode v WHERE v.reward_id = w.id "
            "AND v.redemption_id IS NOT NULL) FROM campaigns_reward w WHERE w.program_id = %s AND w.code = %s",
            [program_id, COFFEE]).fetchall()
        (negative_lots,), = conn.execute("SELECT count(*) FROM ledger_lot WHERE remaining < 0 OR remaining > points"
                                         ).fetchall()
    bad_members = []
    for member, funded in sorted(funded_by_external.items()):
        available, held, pending, redeemed = balances[member]
        client_spent, db_spent = spent_by_client[member], int(captured.get(member, 0))
        problems = []
        if available < 0:
            problems.append(f"available {available} < 0")
        if available != funded - client_spent:
            problems.append(f"available {available} != funded {funded} - 201s {client_spent}")
        if db_spent != client_spent:
            problems.append(f"captured redemptions {db_spent} != 201s {client_spent}")
        if redeemed != client_spent:
            problems.append(f"lifetime_redeemed {redeemed} != 201s {client_spent}")
        if held or pending:
            problems.append(f"held {held}, pending {pending} (expected 0)")
        if problems:
            bad_members.append(f"{member}: " + "; ".join(problems))
    if bad_members:
        failures.append(f"{len(bad_members)} members out of balance: " + " | ".join(bad_members[:5]))
    must_fail = [r for r in clients.results if r["kind"] == "must_fail"]
    wrong = [r for r in must_fail if not (r["status"] == 422 and r["code"] == "insufficient_points")]
    if wrong:
        failures.append(f"{len(wrong)} of {len(must_fail)} must-fail requests were not 422 insufficient_points: "
                        f"{[(r['status'], r.get('code')) for r in wrong[:5]]}")
    other_422 = [r for r in clients.results if r["status"] == 422 and r["code"] != "insufficient_points"]
    if other_422:
        failures.append(f"{len(other_422)} 422s with another code: {sorted({r['code'] for r in other_422})}")
    other_409 = [r for r in clients.results if r["status"] == 409 and not (r["kind"] == "tote" and
                                                                           r["code"] == "out_of_stock")]
    if other_409:
        failures.append(f"{len(other_409)} unexpected 409s: {sorted({(r['kind'], r['code']) for r in other_409})}")
    unexpected = [r for r in clients.results if r["status"] not in (201, 409, 422)]
    if unexpected:
        kinds = sorted({f"{r['status']} {r.get('code') or r.get('error', '')}"[:80] for r in unexpected})
        failures.append(f"{len(unexpected)} answers other than 201, 409 and 422 (a server error or a lost "
                        f"connection leaves the client unsure what happened): {kinds[:5]}")
    if tote_left is None or tote_left < 0 or tote_left + totes_taken != tote_stock:
        failures.append(f"tote-bag stock {tote_left} + captured {totes_taken} != initial {tote_stock}")
    client_totes = sum(r["quantity"] for r in clients.results if r["status"] == 201 and r["reward"] == TOTE)
    if client_totes != totes_taken:
        failures.append(f"tote-bag: 201s for {client_totes} units, {totes_taken} captured")
    if vouchers != coffees_taken:
        failures.append(f"free-coffee: {vouchers} voucher codes given for {coffees_taken} units captured")
    if negative_lots:
        failures.append(f"{negative_lots} lots with remaining outside 0..points")
    bad_replays = [r for r in clients.replays if not r["ok"]]
    if bad_replays:
        failures.append(f"{len(bad_replays)} of {len(clients.replays)} retries did not replay: {bad_replays[0]['why']}")
    figures = {
        "members_checked": len(funded_by_external), "members_bad": len(bad_members),
        "funded": sum(funded_by_external.values()), "spent": sum(spent_by_client.values()),
        "available": sum(b[0] for b in balances.values()), "min_available": min(b[0] for b in balances.values()),
        "dry": sum(1 for b in balances.values() if b[0] < 10), "statuses": statuses,
        "tote_left": tote_left, "totes_taken": totes_taken, "coffees": coffees_taken, "vouchers": vouchers,
        "must_fail": len(must_fail), "must_fail_wrong": len(wrong),
    }
    return failures, figures


def ledger_audit(server: BenchServer) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), "ledger_audit"], cwd=BASE_DIR,
                          env=server._env, capture_output=True, text=True)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50, help="concurrent client threads (default 50)")
    parser.add_argument("--seconds", type=float, default=20, help="how long to send (default 20)")
    parser.add_argument("--requests", type=int, help="send this many requests in all instead of for --seconds")
    parser.add_argument("--warmup", type=float, default=3,
                        help="seconds of the same load first, on connections of their own, left out of the figures "
                             "but not out of the checks (default 3; 0: none)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="open loop: the clients together send R requests a second on a fixed schedule, each "
                             "latency counted from the time its request was due (default: closed loop, every client "
                             "sends again as soon as it has its answer)")
    parser.add_argument("--tote-stock", type=int, default=40, help="initial stock of the tote-bag reward (default 40)")
    parser.add_argument("--replay-fraction", type=float, default=0.05,
                        help="share of 201s sent again with the same Idempotency-Key (default 0.05)")
    parser.add_argument("--no-idempotency-key", action="store_true", help="send no Idempotency-Key (no replays)")
    parser.add_argument("--web-workers", type=int, help="gunicorn workers (default: make run's WEB_CONCURRENCY "
                        "or one per CPU, at least 2)")
    parser.add_argument("--db", default="bench_api_redemptions", help="database to create (dropped at the end)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database of the server's cache and broker")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--py-spy", metavar="PATH", help="profile gunicorn during the run with this py-spy binary "
                        "(install it in a separate venv, not the project's)")
    args = parser.parse_args(argv)

    metrics_dir = server_environment(rate_limit_high=False, prometheus_multiproc=True)
    server = BenchServer(args.db, redis_db=args.redis_db, keep=args.keep, web_workers=args.web_workers)
    profiles: list[Path] = []
    try:
        started = time.perf_counter()
        server.prepare()
        seeded = seed(members=args.members, slug="bench-redeem")
        funded_by_id = fund_members(seeded.program_id, lots_per_member=2, points_of=funded_lot, days_ago=[200, 20])
        from accounts.models import Member

        external = dict(Member.objects.filter(program_id=seeded.program_id).values_list("id", "external_id"))
        funded_by_external = {external[member_id]: points for member_id, points in funded_by_id.items()}
        funded_by_number = {int(e.lstrip("m")): p for e, p in funded_by_external.items()}
        create_rewards(seeded.program_id, args.tote_stock)
        server.start()
        setup_seconds = time.perf_counter() - started

        def load(seconds: float, requests: int | None, seed_value: int) -> Clients:
            return Clients(port=server.port, key=seeded.key, members=args.members, funded_by_number=funded_by_number,
                           threads=args.clients, seconds=seconds, requests=requests,
                           replay_fraction=0 if args.no_idempotency_key else args.replay_fraction,
                           idempotency=not args.no_idempotency_key, seed_value=seed_value, rate=args.rate)

        runs = []
        if args.warmup > 0:  # every worker, thread and database connection used once before the figures
            warm = load(args.warmup, None, args.seed + 7919)
            warm_elapsed = warm.run()
            runs.append(warm)
        clients = load(args.seconds, args.requests, args.seed)
        runs.append(clients)
        meter = CpuMeter(server)
        load_before = os.getloadavg()[0]
        if args.py_spy:
            server.profile_start(args.py_spy)
        meter.start()
        elapsed = clients.run()
        cpu = meter.stop()
        load_after = os.getloadavg()[0]
        if args.py_spy:
            profiles = server.profile_stop()
        server.stop_services()  # nothing in flight any more: the database is what it is
        failures, figures = verify(server, program_id=seeded.program_id, funded_by_external=funded_by_external,
                                   runs=runs, tote_stock=args.tote_stock)
        audit_code, audit_output = ledger_audit(server)
        with __import__("psycopg").connect(server.db_url) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
    except BaseException:
        tail = server.log_tail("gunicorn", 1500)
        if tail:
            print(f"--- gunicorn log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        server.stop()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    results = clients.results
    answered = [r for r in results if r["status"] is not None]
    latencies = sorted(r["latency"] for r in answered)
    by_status: dict[str, int] = {"201": 0, "422": 0, "409": 0, "other": 0}
    others: dict[str, int] = {}
    for r in results:
        if r["status"] in (201, 422, 409):
            by_status[str(r["status"])] += 1
        else:
            by_status["other"] += 1
            label = f"HTTP {r['status']} {r.get('code') or r.get('error', '')}"
            others[label] = others.get(label, 0) + 1
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        key = str(r["status"]) + (f" {r['code']}" if r.get("code") else "")
        by_kind.setdefault(r["kind"], {}).setdefault(key, 0)
        by_kind[r["kind"]][key] += 1
    ok = sorted(r["latency"] for r in answered if r["status"] == 201)
    refused = sorted(r["latency"] for r in answered if r["status"] != 201)
    replay_lat = sorted(r["latency"] for r in clients.replays if r.get("latency") is not None)

    print(f"api_redemptions: POST /api/v1/redemptions, {args.clients} client threads (Python http.client, one "
          f"HTTP/1.1 connection each) on {args.members} shared members, "
          + (f"{args.requests:,} requests" if args.requests else f"{args.seconds:.0f} s")
          + (f", open loop at {args.rate:,.0f} req/s offered" if args.rate else ", closed loop")
          + f"; load average {load_before:.1f} -> {load_after:.1f}"
          + (" (profiled with py-spy)" if args.py_spy else ""))
    print(f"  server:  gunicorn -c loyalty/gunicorn_conf.py --workers {server.web_workers} "
          f"(gthread, {server.web_threads} thread(s) each, keep-alive, as make run), "
          f"DEBUG=0, "
          f"LOYALTY_PLAIN_HTTP=1, rate limits at their defaults, PROMETHEUS_MULTIPROC_DIR set (as make run); "
          f"PostgreSQL {pg_version}, {os.cpu_count()} CPUs (client, server and database on this machine); "
          f"setup {setup_seconds:.0f} s, database {args.db}{' (kept)' if args.keep else ' (dropped)'}")
    print(f"  data:    {args.members} members funded with {figures['funded']:,} points (2 lots each, 1,000 to 3,000 a "
          f"member); rewards {COFFEE} (150, generated vouchers), {TOTE} (400, stock {args.tote_stock}); "
          f"Idempotency-Key {'on every request' if not args.no_idempotency_key else 'not sent'}")
    late = sum(1 for r in answered if r["late"] > 0.010)
    print(f"  load:    {len(results):,} requests in {elapsed:.2f} s = {len(results) / elapsed:,.1f} req/s; "
          f"{by_status['201']:,} redemptions = {by_status['201'] / elapsed:,.1f}/s; TCP connects {clients.connects:,}"
          + (f"; sent over 10 ms after their time (every client busy): {late:,}" if args.rate else ""))
    print(f"  latency: p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms "
          f"(goal <= {GOAL_P99_MS:.0f} ms), max {latencies[-1] * 1000:.1f} ms; 201s p50 "
          f"{percentile(ok, 50) * 1000:.1f} / p99 {percentile(ok, 99) * 1000:.1f} ms; refusals p50 "
          f"{percentile(refused, 50) * 1000:.1f} / p99 {percentile(refused, 99) * 1000:.1f} ms")
    if args.warmup > 0:
        warm_latencies = sorted(r["latency"] for r in warm.results if r["status"] is not None)
        print(f"  warm-up: {len(warm.results):,} requests in {warm_elapsed:.2f} s before the figures (in the checks "
              f"below): p50 {percentile(warm_latencies, 50) * 1000:.1f} ms, p99 "
              f"{percentile(warm_latencies, 99) * 1000:.1f} ms")
    slices = []
    for low, high in ((0, 2), (2, 5), (5, 10), (10, 15), (15, float("inf"))):
        part = sorted(r["latency"] for r in answered if low <= r.get("at", 0) < high)
        if part:
            slices.append(f"{low}-{'' if high == float('inf') else high} s: {len(part):,} req, p50 "
                          f"{percentile(part, 50) * 1000:.0f} / p99 {percentile(part, 99) * 1000:.0f} ms")
    print("  by time: " + "; ".join(slices))
    print(f"  status:  201 {by_status['201']:,}, 422 {by_status['422']:,}, 409 {by_status['409']:,}, other "
          f"{by_status['other']:,}" + (f" ({others})" if others else ""))
    for kind in ("points", "coffee", "tote", "must_fail"):
        part = sorted(r["latency"] for r in answered if r["kind"] == kind)
        print(f"           {kind:<9} {dict(sorted(by_kind.get(kind, {}).items()))}"
              + (f"; p50 {percentile(part, 50) * 1000:.0f} / p99 {percentile(part, 99) * 1000:.0f} ms" if part else ""))
    print(f"  retries: {len(clients.replays)} sent again with the same key and body: "
          f"{sum(1 for r in clients.replays if r['ok'])} replayed the first 201 (Idempotent-Replayed: true, same id)"
          + (f", p50 {percentile(replay_lat, 50) * 1000:.1f} ms" if replay_lat else ""))
    per = 1000 / max(len(results), 1)
    print(f"  {describe_cpu(cpu, 'Python threads')}; per request: gunicorn {cpu['gunicorn'] * per:.1f} ms, "
          f"PostgreSQL {cpu['postgres'] * per:.1f} ms")
    print(f"  ledger:  funded {figures['funded']:,}, spent by 201s {figures['spent']:,}, available now "
          f"{figures['available']:,} (min {figures['min_available']}, {figures['dry']} members under 10 points); "
          f"redemptions in the database {figures['statuses']}; {TOTE} stock left {figures['tote_left']} "
          f"(+ {figures['totes_taken']} captured = {args.tote_stock}); {COFFEE}: {figures['coffees']} units, "
          f"{figures['vouchers']} voucher codes")
    print(f"  checks:  {figures['members_checked']} members: available >= 0 and == funded - 201s == funded - captured "
          f"redemptions, lifetime_redeemed == 201s: {figures['members_checked'] - figures['members_bad']} ok, "
          f"{figures['members_bad']} bad; must-fail requests {figures['must_fail']}: "
          f"{figures['must_fail'] - figures['must_fail_wrong']} were 422 insufficient_points")
    print(f"  overspend: {'none' if not failures else 'FAILED'}" + "".join(f"\n    - {f}" for f in failures))
    print(f"  manage.py ledger_audit (bench database): exit {audit_code}: {audit_output}")
    for path in profiles:
        if path.name.startswith("gunicorn"):
            print(pyspy_summary(path, top=20))
            print(pyspy_summary(path, top=12, focus="RedemptionCreateView.post"))
    if profiles:
        print(f"  profiles (py-spy raw, kept): {', '.join(str(p) for p in profiles)}")
    return 0 if not failures and audit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
