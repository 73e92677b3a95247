"""Nightly expiry at scale: ledger.upkeep.lots_expire over lots that are all due, then the same
call again (nothing left to do), then the ledger audit over the result.

    DEBUG=1 .venv/bin/python -m bench.expiry            # quick: 100,000 due lots (25,000 members)
    DEBUG=1 .venv/bin/python -m bench.expiry --full     # the issue's size: 1,000,000 due lots

The data is generated set-based: ``--lots-per-member`` (4) earned lots per member, all past their
expiry, each with its ``ledger_operation`` row and its ``earn`` entry, and balances that match
(available = lifetime_earned = the sum of the lots), so the audit starts clean.

Goals: the expiry run takes at most 60 s at 1,000,000 lots; the audit finds 0 discrepancies.
"""

from __future__ import annotations

import datetime as dt
import logging

from bench import _common as c

GOAL_SECONDS = 60.0
SPREAD_DAYS = 34  # lots were earned over this many days, 366 to 400 days before now


def generate(program, *, members: int, per_member: int, now: dt.datetime) -> None:
    lots = members * per_member
    first_created = now - dt.timedelta(days=366 + SPREAD_DAYS)
    c.ensure_partitions_between(first_created, now + dt.timedelta(days=31))
    params = {"program": program.pk, "lots": lots, "per": per_member, "now": now, "spread": SPREAD_DAYS}
    # Lot g belongs to member (g - 1) / per + 1; its operation and its earn entry share its id.
    created = ("(%(now)s::timestamptz - interval '366 days' - (g %% %(spread)s) * interval '1 day' "
               "- (g %% 86400) * interval '1 second')")
    with c.step(f"{members:,} members"):
        c.create_members(program, members, balances=False)
    with c.step(f"{lots:,} operations"):
        c.execute(
            "INSERT INTO ledger_operation (id, program_id, member_id, key, kind, request_hash, result, created_at) "
            "SELECT g, %(program)s, (g - 1) / %(per)s + 1, 'bench-earn-' || lpad(g::text, 10, '0'), 'earn', "
            f"md5(g::text), '{{}}', {created} FROM generate_series(1, %(lots)s::bigint) g",
            params,
        )
    with c.step(f"{lots:,} lots, all due"):
        c.execute(
            "INSERT INTO ledger_lot (id, program_id, member_id, operation_id, points, remaining, available_at, "
            "matured, expires_at, expired_at, created_at, source_type, source_id) "
            "SELECT g, %(program)s, (g - 1) / %(per)s + 1, g, p, p, c, true, c + interval '365 days', NULL, c, "
            f"'order', g::text FROM (SELECT g, 1 + g %% 500 AS p, {created} AS c "
            "FROM generate_series(1, %(lots)s::bigint) g) s",
            params,
        )
    with c.step(f"{lots:,} earn entries"):
        c.execute(
            "INSERT INTO ledger_entry (id, created_at, program_id, member_id, kind, points, lot_id, operation_id, "
            "description, source_type, source_id) "
            "SELECT id, created_at, program_id, member_id, 'earn', points, id, operation_id, 'Bench purchase', "
            "'order', id::text FROM ledger_lot ORDER BY created_at",
        )
    with c.step(f"{members:,} balances (available = lifetime_earned = sum of the lots)"):
        c.execute(
            "INSERT INTO ledger_balance (member_id, program_id, available, pending, held, debt, "
            "lifetime_earned, lifetime_redeemed, lifetime_expired) "
            "SELECT member_id, %(program)s, sum(points), 0, 0, 0, sum(points), 0, 0 "
            "FROM ledger_lot GROUP BY member_id",
            params,
        )
    for table in ("ledger_operation", "ledger_lot", "ledger_entry"):
        c.set_sequence(table)


def _clip(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 5] + " ...)"


def explain_batch(now: dt.datetime, batch_size: int) -> None:
    """EXPLAIN ANALYZE the statements of the first expiry batch, in a transaction rolled back."""
    from django.db import transaction

    from ledger import upkeep

    due = ("SELECT DISTINCT member_id FROM ledger_lot WHERE remaining > 0 AND expired_at IS NULL "
           "AND expires_at <= %(now)s AND member_id > %(after)s")
    lock = (f"SELECT member_id FROM ledger_balance WHERE member_id IN ({due} ORDER BY member_id "
            "LIMIT %(limit)s) ORDER BY member_id FOR UPDATE")
    with transaction.atomic():
        for label, sql, params in (("lock query (first batch)", lock, {"now": now, "after": 0, "limit": batch_size}),):
            print(f"--- EXPLAIN ANALYZE {label}")
            for (line,) in c.fetchall(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params):
                print("    " + _clip(line))
        members = [row[0] for row in c.fetchall(lock, {"now": now, "after": 0, "limit": batch_size})]
        print("--- EXPLAIN ANALYZE expire statement (first batch)")
        for (line,) in c.fetchall(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {upkeep._EXPIRE_SQL}",
                                  {"members": members, "now": now}):
            print("    " + _clip(line))
        transaction.set_rollback(True)


def main(argv=None) -> None:
    parser = c.make_parser("expiry", __doc__)
    parser.add_argument("--scale", type=int, help="due lots (default 100,000; --full: 1,000,000)")
    parser.add_argument("--lots-per-member", type=int, default=4, help="(default %(default)s)")
    parser.add_argument("--batch-size", type=int, help="members per expiry batch (default: the setting, 5,000)")
    parser.add_argument("--load-with-indexes", action="store_true",
                        help="generate into the indexed tables (slower) instead of dropping their secondary "
                             "indexes for the load and building them again")
    parser.add_argument("--explain", action="store_true",
                        help="before timing, print EXPLAIN ANALYZE of one batch's statements (rolled back)")
    args = parser.parse_args(argv)
    lots = args.scale or (1_000_000 if args.full else 100_000)
    per_member = args.lots_per_member
    members = -(-lots // per_member)
    lots = members * per_member

    c.banner(f"expiry: {lots:,} due lots ({members:,} members x {per_member})")
    with c.bench_database(args) as _database:
        from django.conf import settings
        from django.utils import timezone

        from ledger.audit import run_audit
        from ledger.upkeep import lots_expire

        logging.getLogger("ledger.upkeep").setLevel(logging.WARNING)  # its per-run INFO line
        now = timezone.now().replace(microsecond=0)
        program = c.create_program(expiry_days=365, pending_days=0)
        with c.Stopwatch() as generation, c.bulk_load_session():
            with c.without_secondary_indexes("ledger_operation", "ledger_lot", "ledger_entry",
                                             enabled=not args.load_with_indexes):
                generate(program, members=members, per_member=per_member, now=now)
            with c.step("VACUUM ANALYZE"):
                for table in ("accounts_member", "ledger_operation", "ledger_lot", "ledger_entry",
                              "ledger_balance"):
                    c.execute(f"VACUUM ANALYZE {table}")
        print(f"  data generated in {generation.seconds:.1f} s")
        before = run_audit()
        print(f"  audit before expiry: {len(before)} discrepancies")

        batch_size = args.batch_size or settings.LEDGER_EXPIRY_BATCH_SIZE
        if args.explain:
            explain_batch(now, batch_size)
        c.checkpoint()
        with c.step(f"lots_expire(now=...), batches of {batch_size:,} members") as first:
            touched = lots_expire(now=now, batch_size=batch_size)
        with c.step("lots_expire again (nothing due)") as second:
            touched_again = lots_expire(now=now, batch_size=batch_size)
        with c.step("ledger.audit.run_audit()") as audit_watch:
            discrepancies = run_audit()
        (still_due,), = c.fetchall(
            "SELECT count(*) FROM ledger_lot WHERE remaining > 0 AND expired_at IS NULL AND expires_at <= %s", [now])
        (expire_entries,), = c.fetchall("SELECT count(*) FROM ledger_entry WHERE kind = 'expire'")
        for discrepancy in discrepancies[:10]:
            print(f"    {discrepancy}")

        print()
        print(f"RESULTS expiry ({lots:,} due lots, {members:,} members; {c.load()})")
        scaled_goal = GOAL_SECONDS * lots / 1_000_000
        c.table([
            ("measure", "value", "baseline / goal"),
            ("lots_expire, first run (s)", f"{first.seconds:.2f}",
             f"goal <= {GOAL_SECONDS:.0f} s at 1,000,000 lots"
             + (f" (pro rata {scaled_goal:.1f} s here)" if lots != 1_000_000 else "")
             + f": {c.verdict(first.seconds <= scaled_goal)}"),
            ("  lots expired per second", c.num(lots / first.seconds), ""),
            ("  members touched", c.num(touched), f"expected {members:,}"),
            ("  expire entries written", c.num(expire_entries), f"expected {lots:,}"),
            ("  lots still due afterwards", c.num(still_due), "expected 0"),
            ("lots_expire, second run (s)", f"{second.seconds:.3f}",
             f"no-op; members touched {touched_again} (expected 0)"),
            ("run_audit (s)", f"{audit_watch.seconds:.2f}", "for reference"),
            ("audit discrepancies", str(len(discrepancies)),
             f"must be 0: {c.verdict(not discrepancies)} (before expiry: {len(before)})"),
        ])


if __name__ == "__main__":
    main()
