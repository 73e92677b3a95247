"""The partner API in-process: CPU and round trips of a request through Django's
whole stack (middleware, DRF, the services, PostgreSQL), without HTTP.

Django's test client (no sockets, no gunicorn) sends, on a database of its own with the ingest
benchmarks' 10 rules and members funded with points:

* ``events``: ``POST /api/v1/events``, one purchase each (``bench._server.purchase_event``);
* ``points``: ``POST /api/v1/redemptions`` of 1 to 50 points, with an ``Idempotency-Key``;
* ``coffee``: ``POST /api/v1/redemptions`` of a reward with generated voucher codes, with a key;
* ``short``: ``POST /api/v1/redemptions`` of more points than the member has, with a key: refused,
  422 ``insufficient_points`` (most answers of ``bench.api_redemptions`` once its members run dry);
* ``balance``: ``GET /api/v1/members/{id}/balance`` (the read of ``bench.api_balance``);
* ``healthz``: ``GET /healthz``, the bare JSON endpoint ``bench.api_balance`` compares it with.

With ``--wsgi`` the requests go to Django's WSGI handler directly, as gunicorn hands them over (the
response closed, so ``request_finished`` runs), instead of through the test client, whose own
signals and request building cost more than the cheapest requests measured here: the figures of
``balance`` and ``healthz`` are then what a gunicorn worker spends inside Django for them.

For each kind it first counts the statements one request sends to PostgreSQL (``BEGIN`` and
``COMMIT`` included: each is a round trip), then sends ``--warmup`` requests, then ``--chunks``
chunks of ``--requests`` / ``--chunks`` requests, and prints the CPU a request of this process
(``time.process_time``) and of its PostgreSQL backend (``/proc``, when the server is local): the
median chunk and the lowest. There is no goal: this compares commits with far less noise than the
HTTP benchmarks on a busy or virtual machine. Run it from two work trees, alternately.

    DEBUG=1 .venv/bin/python -m bench.api_inprocess                  # 1,500 requests of each kind
    DEBUG=1 .venv/bin/python -m bench.api_inprocess --kinds coffee --requests 3000
    DEBUG=1 .venv/bin/python -m bench.api_inprocess --wsgi --kinds healthz,balance --requests 6000
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

KINDS = ("events", "points", "coffee", "short", "balance", "healthz")


def request_maker(kind: str, members: int, rng: random.Random):
    """(path, body or None for a GET, headers) of the next request of ``kind``."""
    from bench._server import member_external_id, purchase_event

    now = dt.datetime.now(dt.UTC)

    def make():
        if kind == "healthz":
            return "/healthz", None, {}
        if kind == "balance":
            return f"/api/v1/members/{member_external_id(rng.randint(1, members))}/balance", None, {}
        if kind == "events":
            return "/api/v1/events", purchase_event(f"ip-{uuid.uuid4().hex}", rng, members, now), {}
        body = {"member_id": member_external_id(rng.randint(1, members))}
        body.update({"reward": "coffee"} if kind == "coffee" else
                    {"points": 10**9} if kind == "short" else {"points": rng.randint(1, 50)})
        return "/api/v1/redemptions", body, {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex}

    return make


def statements_of_one(client, make) -> list[str]:
    """The first line of each statement one request sends, commands (BEGIN, COMMIT) included."""
    from django.db import DEFAULT_DB_ALIAS, connection, connections
    from psycopg import Connection, pq

    seen: list[str] = []

    def wrapper(execute, sql, params, many, context):
        seen.append(" ".join(sql.split())[:100])
        return execute(sql, params, many, context)

    original = Connection._exec_command

    def command(self, command, *args, **kwargs):
        seen.append(bytes(command).decode() if isinstance(command, bytes | bytearray) else str(command))
        return original(self, command, *args, **kwargs)

    backend = type(connections[DEFAULT_DB_ALIAS])
    original_commit = backend._commit

    def commit(self):  # sent through libpq (``loyalty.dbbackend.base``), not through psycopg's command
        if self.connection is not None and self.connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            seen.append("COMMIT")
        return original_commit(self)

    Connection._exec_command = command
    backend._commit = commit
    try:
        with connection.execute_wrapper(wrapper):
            send(client, make)
    finally:
        Connection._exec_command = original
        backend._commit = original_commit
    return seen


class WsgiClient:
    """Django's WSGI handler called as a WSGI server calls it; the test client's ``get`` and
    ``post`` (those this benchmark uses), answering with the status code and the body."""

    def __init__(self, **headers: str):
        import io
        import sys as _sys

        from django.core.wsgi import get_wsgi_application

        self.application = get_wsgi_application()
        self.base = {"SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                     "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.errors": _sys.stderr,
                     "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False, **headers}
        self._io = io

    def get(self, path: str, **headers: str):
        return self._send("GET", path, b"", None, headers)

    def post(self, path: str, data: str, content_type: str, **headers: str):
        return self._send("POST", path, data.encode(), content_type, headers)

    def _send(self, method: str, path: str, body: bytes, content_type: str | None, headers: dict):
        import types

        environ = dict(self.base, REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING="",
                       CONTENT_LENGTH=str(len(body)), **headers)
        environ["wsgi.input"] = self._io.BytesIO(body)
        if content_type:
            environ["CONTENT_TYPE"] = content_type
        status: list[str] = []
        result = self.application(environ, lambda line, _headers, exc_info=None: status.append(line))
        try:
            content = b"".join(result)
        finally:
            result.close()
        return types.SimpleNamespace(status_code=int(status[0][:3]), content=content)


def send(client, make) -> None:
    path, body, headers = make()
    if body is None:
        response = client.get(path, **headers)
    else:
        response = client.post(path, data=json.dumps(body), content_type="application/json", **headers)
    if response.status_code not in (200, 201) and not (
            response.status_code == 422 and b'"insufficient_points"' in response.content):
        raise SystemExit(f"{path} answered {response.status_code}: {response.content[:300]!r}")


def print_profile(client, make, requests: int, top: int = 40) -> None:
    """cProfile of ``requests`` more requests, by CPU time (waits on PostgreSQL excluded): the
    functions with most time inside them, then those with most time of their own."""
    import cProfile
    import pstats

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for _ in range(requests):
        send(client, make)
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main(argv=None) -> None:
    parser = c.make_parser("api_inprocess", __doc__)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of %(default)s")
    parser.add_argument("--requests", type=int, default=1500, help="timed requests of each kind (default %(default)s)")
    parser.add_argument("--chunks", type=int, default=5, help="chunks the timed requests are split into")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests of each kind first")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--wsgi", action="store_true",
                        help="call Django's WSGI handler directly instead of the test client")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile each kind (cProfile, N requests) and print its top functions")
    args = parser.parse_args(argv)
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")

    if args.wsgi and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # As make run and bench.api_balance run gunicorn: metrics in memory-mapped files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-prometheus-")
        atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], True)
    with c.bench_database(args):
        from django.db import connection
        from django.test import Client

        from accounts.models import Member, Program
        from bench._server import seed
        from campaigns.models import Reward
        from ledger.services import EarnRequest, points_earn_many

        seeded = seed(members=args.members, slug="inprocess")
        program = Program.objects.get(pk=seeded.program_id)
        Reward.objects.create(program=program, code="coffee", name="Coffee", cost=10, vouchers="generated")
        member_ids = list(Member.objects.filter(program=program).values_list("id", flat=True))
        points_earn_many(program=program, requests=[EarnRequest(member_id=m, points=10**7, key=f"fund-{m}")
                                                    for m in member_ids])
        client = (WsgiClient if args.wsgi else Client)(HTTP_AUTHORIZATION=f"Bearer {seeded.key}",
                                                       HTTP_HOST="localhost")
        rng = random.Random(20261201)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        per_chunk = max(args.requests // args.chunks, 1)
        how = "Django's WSGI handler called directly" if args.wsgi else "Django's test client"
        print(f"api_inprocess: {how}, {args.members:,} members, the ingest benchmarks' "
              f"{seeded.rules} rules; {args.warmup} warm-up then {args.chunks} x {per_chunk:,} requests of each kind")
        for kind in kinds:
            make = request_maker(kind, args.members, rng)
            for _ in range(args.warmup):
                send(client, make)
            statements = statements_of_one(client, make)
            own, server = [], []
            for _ in range(args.chunks):
                cpu, pg = time.process_time(), c.proc_cpu_seconds(backend)
                for _ in range(per_chunk):
                    send(client, make)
                own.append(1e3 * (time.process_time() - cpu) / per_chunk)
                if pg is not None:
                    server.append(1e3 * (c.proc_cpu_seconds(backend) - pg) / per_chunk)
            pg_text = (f"; PostgreSQL median {statistics.median(server):.2f} ms, lowest {min(server):.2f} ms"
                       if server else "")
            print(f"  {kind:7s} {len(statements)} round trips; CPU a request: this process median "
                  f"{statistics.median(own):.2f} ms, lowest {min(own):.2f} ms (chunks "
                  f"{', '.join(f'{x:.2f}' for x in own)}){pg_text}")
            for n, statement in enumerate(statements, 1):
                print(f"            {n:2d}. {statement}")
            if args.profile:
                print_profile(client, make, args.profile)


if __name__ == "__main__":
    main()
