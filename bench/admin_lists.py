"""The admin's events inbox on a large table: a page view with its count capped
(``loyalty.admin_lists``, as the admin runs) against Django's full count, in the same run.

On a database of its own, it stores ``--events`` inbound events the way the pipeline leaves them:
inserted as received (the payload, about 0.5 kB), then marked processed with their awards and trace
(about 1 kB more, rewritten in place into the room the table's fillfactor leaves). Then, logged in
as a superuser through Django's test client, it opens the inbox (all programs, then one program's)
``--rounds`` times with each paginator and prints the median time of a page and of its count
statement. It does it twice: after ``VACUUM`` (every page known all-visible, so PostgreSQL can
count from an index) and after updating a tenth of the events (as processing and reprocessing
do), when the count must read the table's pages. There is no goal: it shows what a page view
costs as the table grows.

    .venv/bin/python -m bench.admin_lists                     # 300,000 events (~2 min)
    .venv/bin/python -m bench.admin_lists --events 2000000    # ~10 min
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

_INSERT = """
INSERT INTO rules_inboundevent (program_id, partner_id, event_id, type, member_external_id, member_id, occurred_at,
    order_id, payload, status, awards, trace, points, received_at)
SELECT %(program)s, NULL, 'e-' || g, 'purchase', 'm-' || (g %% 1000), NULL, %(now)s - make_interval(secs => g),
       'o-' || g,
       jsonb_build_object('event_id', 'e-' || g, 'type', 'purchase', 'member_id', 'm-' || (g %% 1000),
                          'properties', jsonb_build_object('order_id', 'o-' || g, 'amount', '42.50',
                                                           'currency', 'EUR', 'note', repeat('x', 380))),
       'received', '[]', '[]', 0, %(now)s - make_interval(secs => g)
FROM generate_series(%(first)s, %(last)s) AS g
"""
_PROCESS = """
UPDATE rules_inboundevent SET status = 'processed', points = 42, processed_at = received_at,
    awards = jsonb_build_array(jsonb_build_object('rule', 'Base rate', 'points', 42, 'note', repeat('a', 380))),
    trace = jsonb_build_array(jsonb_build_object('rule', 'Base rate', 'outcome', 'fired', 'note', repeat('t', 420)))
WHERE id BETWEEN %(first)s AND %(last)s
"""


def seed(events: int, programs: int) -> list[int]:
    from django.utils import timezone

    from accounts.models import Program

    ids = [Program.objects.create(name=f"Program {n}", slug=f"program-{n}").pk for n in range(programs)]
    now = timezone.now()
    chunk = 50_000
    for first in range(1, events + 1, chunk):
        last = min(events, first + chunk - 1)
        c.execute(_INSERT, {"program": ids[first % programs], "now": now, "first": first, "last": last})
    [(low, high)] = c.fetchall("SELECT min(id), max(id) FROM rules_inboundevent")
    for first in range(low, high + 1, chunk):
        c.execute(_PROCESS, {"first": first, "last": first + chunk - 1})
    return ids


def page_views(client, url: str, query: dict, rounds: int) -> tuple[float, float, int]:
    """Median seconds of a page and of its count statements, and the page's status."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    pages, counts, status = [], [], 0
    for _ in range(rounds):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url, query, secure=True)  # as behind TLS: no redirect to https
            pages.append(time.perf_counter() - started)
        status = response.status_code
        counts.append(sum(float(q["time"]) for q in queries.captured_queries if "COUNT(" in q["sql"].upper()))
    return statistics.median(pages), statistics.median(counts), status


def main(argv=None) -> None:
    parser = c.make_parser("admin_lists", __doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--programs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", action="store_true", help="then list the statements of one page view")
    args = parser.parse_args(argv)
    if args.full:
        args.events = max(args.events, 2_000_000)

    with c.bench_database(args):
        from django.contrib import admin
        from django.contrib.auth.models import User
        from django.core.paginator import Paginator
        from django.db import connection
        from django.test import Client
        from django.urls import reverse

        from rules.models import InboundEvent

        started = time.perf_counter()
        programs = seed(args.events, args.programs)
        c.execute("VACUUM (ANALYZE) rules_inboundevent")
        [(size,)] = c.fetchall("SELECT pg_size_pretty(pg_relation_size('rules_inboundevent'))")
        print(f"admin_lists: {args.events:,} inbound events in {args.programs} programs (heap {size}), "
              f"stored in {time.perf_counter() - started:.0f} s; {args.rounds} page views of each, medians")

        user = User.objects.create_superuser("bench-admin", "admin@example.com", "x")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        url = reverse("admin:rules_inboundevent_changelist")
        model_admin = admin.site._registry[InboundEvent]
        capped = model_admin.paginator
        lists = (("all programs", {}), ("one program", {"program__id__exact": programs[0]}))
        # The second time, a tenth of the events rewritten first: their pages are no longer all-visible.
        for state, touch in (("after VACUUM", None),
                             ("a tenth of the events updated since", "UPDATE rules_inboundevent SET points = points "
                                                                      "WHERE id % 10 = 0")):
            if touch:
                c.execute(touch)
            print(f"  {state}:")
            for name, query in lists:
                figures = {}
                for label, paginator in (("capped count", capped), ("full count", Paginator)):
                    model_admin.paginator = paginator
                    try:
                        figures[label] = page_views(client, url, query, args.rounds)
                    finally:
                        model_admin.paginator = capped
                line = "; ".join(f"{label}: page {page * 1000:,.1f} ms (count {count * 1000:,.1f} ms), status {status}"
                                 for label, (page, count, status) in figures.items())
                print(f"    {name:13s} {line}")
        if args.queries:
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as queries:
                client.get(url, {}, secure=True)
            for q in queries.captured_queries:
                print(f"    {float(q['time']) * 1000:8.1f} ms  {q['sql'][:150]}")


if __name__ == "__main__":
    main()
