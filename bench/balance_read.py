"""Balance read by member, as the API does it, at a small and a large ledger_entry table:

* the member's ``Balance`` row,
* the member's open lots, soonest expiry first:
  ``Lot.objects.filter(member=..., remaining__gt=0).by_expiry().values()``,
* the member's latest 20 entries:
  ``Entry.objects.filter(member=...).order_by("-created_at", "-id")[:20].values()``
  (``ORDER BY created_at DESC, id DESC LIMIT 20`` on the partitioned table).

    DEBUG=1 .venv/bin/python -m bench.balance_read            # quick: 100,000 then 1,000,000 entries
    DEBUG=1 .venv/bin/python -m bench.balance_read --full     # the issue's size: 100,000 then 10,000,000

~100,000 members, each with ``--lots-per-member`` (8) lots earned over the last two years (the
recent ones open, the old ones expired) and their operations; the entries (earns, redemptions,
expiries) are spread over 24 monthly partitions and over the members at random. The same
members are read at both sizes: first with the small table, then after growing it to the large
one (VACUUM ANALYZE after each load).

Goal: the same order of latency at both sizes (large / small below 10 for p50 and p99).
"""

from __future__ import annotations

import datetime as dt
import random
import time

from bench import _common as c

GOAL_RATIO = 10.0
SPAN_DAYS = 730  # entries spread over the last 24 months
CHUNK = 1_000_000  # entries per INSERT statement


def generate_members_and_lots(program, *, members: int, per_member: int, now: dt.datetime) -> None:
    lots = members * per_member
    params = {"program": program.pk, "lots": lots, "per": per_member, "now": now}
    # Lot g of member (g - 1) / per + 1 was earned ((g - 1) % per) * 91 + g % 90 days ago: about half
    # are younger than a year (open, some partly spent), the others expired.
    lot_rows = (
        "SELECT g, (g - 1) / %(per)s + 1 AS m, 1 + g %% 500 AS p, "
        "%(now)s::timestamptz - (((g - 1) %% %(per)s) * 91 + g %% 90) * interval '1 day' "
        "- (g %% 86400) * interval '1 second' AS c FROM generate_series(1, %(lots)s::bigint) g"
    )
    with c.step(f"{members:,} members"):
        c.create_members(program, members, balances=False)
    with c.step(f"{lots:,} operations and {lots:,} lots"):
        c.execute(
            "INSERT INTO ledger_operation (id, program_id, member_id, key, kind, request_hash, result, created_at) "
            "SELECT g, %(program)s, m, 'bench-earn-' || lpad(g::text, 10, '0'), 'earn', md5(g::text), '{}', c "
            f"FROM ({lot_rows}) s",
            params,
        )
        c.execute(
            "INSERT INTO ledger_lot (id, program_id, member_id, operation_id, points, remaining, available_at, "
            "matured, expires_at, expired_at, created_at, source_type, source_id) "
            "SELECT g, %(program)s, m, g, p, "
            "CASE WHEN c + interval '365 days' > %(now)s THEN p - (g %% 3) * (p / 3) ELSE 0 END, "
            "c, true, c + interval '365 days', "
            "CASE WHEN c + interval '365 days' > %(now)s THEN NULL ELSE c + interval '365 days' END, "
            f"c, 'order', g::text FROM ({lot_rows}) s",
            params,
        )
    with c.step(f"{members:,} balances"):
        c.execute(
            "INSERT INTO ledger_balance (member_id, program_id, available, pending, held, debt, "
            "lifetime_earned, lifetime_redeemed, lifetime_expired) "
            "SELECT member_id, %(program)s, sum(remaining), 0, 0, 0, sum(points), "
            "sum(points - remaining) FILTER (WHERE expired_at IS NULL), "
            "sum(remaining) FILTER (WHERE expired_at IS NOT NULL) "
            "FROM ledger_lot GROUP BY member_id",
            params,
        )
    c.set_sequence("ledger_operation")
    c.set_sequence("ledger_lot")


def insert_entries(program, *, first: int, count: int, members: int, per_member: int, now: dt.datetime) -> None:
    """``count`` entries numbered from ``first``, spread evenly over the last SPAN_DAYS days (so each
    monthly partition is filled in turn), each for a member drawn by a hash of its number."""
    start = now - dt.timedelta(days=SPAN_DAYS)
    for lo in range(first, first + count, CHUNK):
        hi = min(lo + CHUNK, first + count) - 1
        c.execute(
            "INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, operation_id, "
            "description, source_type, source_id) "
            "SELECT %(start)s::timestamptz + ((g - %(first)s) + 0.5) / %(count)s * %(span)s * interval '1 second', "
            "%(program)s, m, "
            "CASE g %% 20 WHEN 0 THEN 'redeem' WHEN 1 THEN 'expire' ELSE 'earn' END, "
            "CASE WHEN g %% 20 < 2 THEN -(1 + g %% 200) ELSE 1 + g %% 500 END, "
            "CASE WHEN g %% 20 = 0 THEN NULL ELSE (m - 1) * %(per)s + 1 + g %% %(per)s END, "
            "CASE WHEN g %% 20 >= 2 THEN (m - 1) * %(per)s + 1 + g %% %(per)s END, "
            "CASE g %% 20 WHEN 0 THEN 'Reward redeemed' WHEN 1 THEN 'Points expired' ELSE 'Purchase' END, "
            "CASE g %% 20 WHEN 0 THEN 'redemption' WHEN 1 THEN 'lot' ELSE 'order' END, g::text "
            "FROM (SELECT g, 1 + (hashint8(g) & 2147483647) %% %(members)s AS m "
            "      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) s",
            {"start": start, "first": first, "count": float(count), "span": SPAN_DAYS * 86400.0,
             "program": program.pk, "per": per_member, "members": members, "lo": lo, "hi": hi},
        )


def read_member(member_id: int) -> tuple[float, float, float, int, int]:
    """One balance read; returns the seconds of each part, the lots and the entries returned."""
    from ledger.models import Balance, Entry, Lot

    t0 = time.perf_counter()
    balance = Balance.objects.get(member_id=member_id)
    t1 = time.perf_counter()
    lots = list(Lot.objects.filter(member=member_id, remaining__gt=0).by_expiry().values())
    t2 = time.perf_counter()
    entries = list(Entry.objects.filter(member=member_id).order_by("-created_at", "-id")[:20].values())
    t3 = time.perf_counter()
    assert balance.member_id == member_id
    return t1 - t0, t2 - t1, t3 - t2, len(lots), len(entries)


def measure(sample: list[int], warm: list[int]) -> dict:
    for member_id in warm:
        read_member(member_id)
    totals, balance_s, lots_s, entries_s, n_lots, n_entries = [], [], [], [], 0, 0
    for member_id in sample:
        b, lo, e, nl, ne = read_member(member_id)
        totals.append((b + lo + e) * 1000)
        balance_s.append(b * 1000)
        lots_s.append(lo * 1000)
        entries_s.append(e * 1000)
        n_lots += nl
        n_entries += ne
    return {
        "p50": c.percentile(totals, 50), "p99": c.percentile(totals, 99), "mean": c.mean(totals),
        "balance_p50": c.percentile(balance_s, 50), "lots_p50": c.percentile(lots_s, 50),
        "entries_p50": c.percentile(entries_s, 50), "entries_p99": c.percentile(entries_s, 99),
        "lots_per_read": n_lots / len(sample), "entries_per_read": n_entries / len(sample),
    }


def explain(member_id: int, verbose: bool) -> None:
    """The plan of the entries query for one member: a one-line summary, or the plan's top."""
    from django.db import connection

    from ledger.models import Entry

    queryset = Entry.objects.filter(member=member_id).order_by("-created_at", "-id")[:20]
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) {sql}", params)
        lines = [row[0] for row in cursor.fetchall()]
    index_scans = sum("Index Scan" in line for line in lines)
    seq_scans = sum("Seq Scan" in line for line in lines)
    never = sum("(never executed)" in line for line in lines)
    times = ", ".join(line.strip() for line in lines if line.startswith(("Planning Time", "Execution Time")))
    print(f"  plan of the entries query (member {member_id}): {lines[0].split('(')[0].strip()} over "
          f"{index_scans} partition index scans ({never} never executed), {seq_scans} seq scans; {times}")
    if verbose:
        for line in lines[:14] + ["..."]:
            print("      " + line)


def table_size(name: str) -> str:
    (size,), = c.fetchall(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(i.inhrelid))) FROM pg_inherits i "
        "WHERE i.inhparent = %s::regclass", [name])
    return size


def main(argv=None) -> None:
    parser = c.make_parser("balance_read", __doc__)
    parser.add_argument("--scale", type=int, help="entries at the large size (default 1,000,000; --full: 10,000,000)")
    parser.add_argument("--small", type=int, default=100_000, help="entries at the small size (default %(default)s)")
    parser.add_argument("--members", type=int, default=100_000, help="(default %(default)s)")
    parser.add_argument("--lots-per-member", type=int, default=8, help="(default %(default)s)")
    parser.add_argument("--reads", type=int, default=2_000, help="timed reads at each size (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed reads first (default %(default)s)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the entries query")
    parser.add_argument("--load-with-indexes", action="store_true",
                        help="load into the indexed tables (slower) instead of dropping their secondary "
                             "indexes for the load and building them again")
    args = parser.parse_args(argv)
    large = args.scale or (10_000_000 if args.full else 1_000_000)
    small, members, per_member = args.small, args.members, args.lots_per_member
    if large <= small:
        raise SystemExit("--scale must be larger than --small")

    c.banner(f"balance read: {small:,} then {large:,} entries, {members:,} members, "
             f"{args.reads:,} reads at each size")
    with c.bench_database(args) as _database:
        from django.utils import timezone

        now = timezone.now().replace(microsecond=0)
        program = c.create_program(expiry_days=365, pending_days=0)
        created = c.ensure_partitions_between(now - dt.timedelta(days=SPAN_DAYS), now + dt.timedelta(days=31))
        (partitions,), = c.fetchall("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass",
                                    ["ledger_entry"])
        print(f"  {len(created)} partitions created; ledger_entry now has {partitions}")
        with c.bulk_load_session():
            with c.without_secondary_indexes("ledger_operation", "ledger_lot", "ledger_entry",
                                             enabled=not args.load_with_indexes):
                generate_members_and_lots(program, members=members, per_member=per_member, now=now)
                with c.step(f"{small:,} entries"):
                    insert_entries(program, first=1, count=small, members=members, per_member=per_member,
                                   now=now)
            with c.step("VACUUM ANALYZE"):
                for table in ("accounts_member", "ledger_operation", "ledger_lot", "ledger_balance", "ledger_entry"):
                    c.execute(f"VACUUM ANALYZE {table}")

        rng = random.Random(20261123)
        sample = [rng.randint(1, members) for _ in range(args.reads)]
        warm = [rng.randint(1, members) for _ in range(args.warmup)]
        with c.step(f"{args.reads:,} reads at {small:,} entries ({table_size('ledger_entry')})"):
            at_small = measure(sample, warm)
        explain(sample[0], args.explain)

        with c.bulk_load_session():
            with c.without_secondary_indexes("ledger_entry", enabled=not args.load_with_indexes):
                with c.step(f"{large - small:,} more entries (to {large:,})") as load:
                    insert_entries(program, first=small + 1, count=large - small, members=members,
                                   per_member=per_member, now=now)
                print(f"    {(large - small) / load.seconds:,.0f} rows/s")
            with c.step("VACUUM ANALYZE ledger_entry"):
                c.execute("VACUUM ANALYZE ledger_entry")
        with c.step(f"{args.reads:,} reads at {large:,} entries ({table_size('ledger_entry')})"):
            at_large = measure(sample, warm)
        explain(sample[0], args.explain)

        print()
        print(f"RESULTS balance_read ({members:,} members, {args.reads:,} reads per size; {c.load()})")
        rows = [("latency (ms)", f"{small:,} entries", f"{large:,} entries", "large / small")]
        for key, label in (("p50", "read p50"), ("p99", "read p99"), ("mean", "read mean"),
                           ("balance_p50", "  balance row p50"), ("lots_p50", "  open lots p50"),
                           ("entries_p50", "  latest 20 entries p50"), ("entries_p99", "  latest 20 entries p99")):
            rows.append((label, f"{at_small[key]:.3f}", f"{at_large[key]:.3f}", f"{at_large[key] / at_small[key]:.2f}"))
        rows.append(("open lots per read", f"{at_small['lots_per_read']:.1f}", f"{at_large['lots_per_read']:.1f}", ""))
        rows.append(("entries per read", f"{at_small['entries_per_read']:.1f}",
                     f"{at_large['entries_per_read']:.1f}", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  " + r[0].ljust(widths[0]) + "  " + "  ".join(r[i].rjust(widths[i]) for i in (1, 2, 3)))
        p50_ratio = at_large["p50"] / at_small["p50"]
        p99_ratio = at_large["p99"] / at_small["p99"]
        ok = p50_ratio < GOAL_RATIO and p99_ratio < GOAL_RATIO
        print(f"  goal: same order of latency (large / small < {GOAL_RATIO:.0f} at p50 and p99): "
              f"p50 x{p50_ratio:.2f}, p99 x{p99_ratio:.2f}: {c.verdict(ok)}")


if __name__ == "__main__":
    main()
