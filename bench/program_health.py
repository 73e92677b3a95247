"""The admin's program health page on a large program: what opening it costs.

On a database of its own: ``--members`` members with balances, three open lots each (one expiring
within 30 days), and ``--entries`` ledger entries spread over the last 45 days (earns, redemptions,
expiries, holds, releases, refunds and adjustments), all in one program, with a second program of a
tenth the size beside it. Then, logged in as a superuser through Django's test client, it opens the
page ``--rounds`` times and prints the median time of the page and of each statement it sends.
There is no goal: it shows what the page costs as a program grows (the earn and burn by day reads
every entry of the last 30 days of the program's month partitions).

    .venv/bin/python -m bench.program_health                                   # 100,000 members, 1,000,000 entries
    .venv/bin/python -m bench.program_health --members 1000000 --entries 10000000
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

_LOTS = """
INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured, expires_at,
    created_at, source_type, source_id)
SELECT m.program_id, m.id, 0, 100, 100 - (m.id + n) %% 60, %(now)s - interval '60 days', true,
       %(now)s + (n * 150 - 130 + m.id %% 10) * interval '1 day', %(now)s - interval '60 days', '', ''
FROM accounts_member m CROSS JOIN generate_series(1, 3) AS n
WHERE m.program_id = ANY(%(programs)s)
"""
_BALANCES = """
UPDATE ledger_balance b SET available = l.remaining, lifetime_earned = 300 + b.member_id %% 500,
    lifetime_redeemed = l.redeemed, lifetime_expired = b.member_id %% 100
FROM (SELECT member_id, sum(remaining) AS remaining, sum(points - remaining) AS redeemed FROM ledger_lot
      GROUP BY member_id) l
WHERE l.member_id = b.member_id
"""
_ENTRIES = """
INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, description, source_type, source_id)
SELECT %(now)s - (g %% (45 * 24 * 60)) * interval '1 minute', %(program)s, %(first_member)s + g %% %(members)s,
       (ARRAY['earn', 'earn', 'earn', 'redeem', 'expire', 'hold', 'release', 'reverse', 'adjust', 'earn'])[1 + g %% 10],
       CASE WHEN g %% 10 IN (3, 4, 5) THEN -(10 + g %% 90) ELSE 10 + g %% 90 END, '', '', ''
FROM generate_series(%(from)s, %(to)s) AS g
"""


def seed(members: int, entries: int) -> int:
    """The big program's id; the small one beside it gets a tenth of everything."""
    from bench._server import seed as seed_program

    now = dt.datetime.now(dt.UTC)
    big = seed_program(members=members, slug="health-big").program_id
    small = seed_program(members=max(1, members // 10), slug="health-small").program_id
    c.ensure_partitions_between(now - dt.timedelta(days=46), now + dt.timedelta(days=1))
    with c.step(f"{3 * (members + members // 10):,} lots and the balances they make"):
        c.execute(_LOTS, {"now": now, "programs": [big, small]})
        c.execute(_BALANCES, {})
    for program, count in ((big, entries), (small, entries // 10)):
        [(first_member, n_members)] = c.fetchall(
            "SELECT min(id), count(*) FROM accounts_member WHERE program_id = %s", [program])
        with c.step(f"{count:,} entries over 45 days for program {program}"):
            chunk = 500_000
            for start in range(0, count, chunk):
                c.execute(_ENTRIES, {"now": now, "program": program, "first_member": first_member,
                                     "members": n_members, "from": start, "to": min(count, start + chunk) - 1})
    c.execute("VACUUM (ANALYZE) ledger_entry")
    c.execute("VACUUM (ANALYZE) ledger_lot")
    c.execute("VACUUM (ANALYZE) ledger_balance")
    return big


def main(argv=None) -> None:
    parser = c.make_parser("program_health", __doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with c.bench_database(args):
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext
        from django.urls import reverse

        program = seed(args.members, args.entries)
        get_user_model().objects.create_superuser("bench", "bench@example.com", "pw-bench-1")
        client = Client(HTTP_HOST="localhost")
        client.login(username="bench", password="pw-bench-1")
        url = reverse("admin:accounts_program_health", args=[program])
        assert client.get(url).status_code == 200  # warm: plans, caches
        pages, statements = [], {}
        for _ in range(args.rounds):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                pages.append(time.perf_counter() - started)
            assert response.status_code == 200
            for query in queries.captured_queries:
                statements.setdefault(" ".join(query["sql"].split())[:90], []).append(float(query["time"]))
        print(f"program_health: {args.members:,} members, {args.entries:,} entries over 45 days in the program "
              f"(and a tenth of each in another); {args.rounds} page views")
        print(f"  page: median {1000 * statistics.median(pages):.1f} ms (lowest {1000 * min(pages):.1f})")
        for sql, times in sorted(statements.items(), key=lambda item: -statistics.median(item[1]))[:6]:
            print(f"  {1000 * statistics.median(times):8.1f} ms  {sql}")


if __name__ == "__main__":
    main()
