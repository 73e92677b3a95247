"""What one database round trip costs a request, against what it costs in a loop of its own.

Runs Django's WSGI handler in-process, as ``bench.api_inprocess --wsgi`` does, on a database of its
own, and measures the CPU of this process (``time.process_time``) per call of:

* ``GET /healthz`` alone (no round trip);
* ``SELECT 1`` through Django's cursor, alone in a loop; and through libpq directly
  (``pgconn.exec_``), alone;
* each of the two right after a ``GET /healthz``, in the same loop.

If a round trip cost the same wherever it ran, each pair would cost the sum of its parts. It costs
more inside a request: the process sleeps while PostgreSQL answers and wakes with colder caches
the more other work it does in between. This is the part of a balance read's cost
(``bench.api_balance``) that no change to the read itself removes. No goal.

    DEBUG=1 .venv/bin/python -m bench.round_trip_cost
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402


def per_call(fn, calls: int, rounds: int = 5) -> float:
    """Median CPU microseconds per call over ``rounds`` rounds, after a warm-up."""
    for _ in range(300):
        fn()
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            fn()
        results.append((time.process_time() - started) / calls * 1e6)
    return sorted(results)[rounds // 2]


def main(argv: list[str] | None = None) -> int:
    parser = c.make_parser("round_trip_cost", __doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per round (5 rounds)")
    args = parser.parse_args(argv)
    with c.bench_database(args):
        from django.db import connection

        from bench._server import seed
        from bench.api_inprocess import WsgiClient

        seeded = seed(members=20, slug="round-trips")
        client = WsgiClient(HTTP_AUTHORIZATION=f"Bearer {seeded.key}", HTTP_HOST="localhost")

        def healthz():
            client.get("/healthz")

        def django_select():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")

        django_select()
        pgconn = connection.connection.pgconn

        def libpq_select():
            pgconn.exec_(b"SELECT 1")

        alone = {name: per_call(fn, args.calls) for name, fn in
                 (("healthz", healthz), ("django", django_select), ("libpq", libpq_select))}
        print(f"round_trip_cost: CPU of this process per call, median of 5 rounds of {args.calls:,}")
        print(f"  GET /healthz alone                      {alone['healthz']:7.1f} us")
        for name, label in (("django", "SELECT 1, Django's cursor"), ("libpq", "SELECT 1, libpq exec_")):
            fn = django_select if name == "django" else libpq_select
            pair = per_call(lambda fn=fn: (healthz(), fn()), args.calls)
            extra = pair - alone["healthz"] - alone[name]
            print(f"  {label:30s} alone  {alone[name]:7.1f} us; after a GET /healthz {pair - alone['healthz']:7.1f} us "
                  f"(healthz + it {pair:.1f} us: {extra:+.1f} us over the sum of the two alone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
