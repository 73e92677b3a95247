"""The ledger audit: every invariant of the design, checked set-based for every member.

Each check is one query that returns the offending rows, so the audit costs a handful of
scans however many members there are.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection


@dataclass(frozen=True)
class Discrepancy:
    check: str
    subject: str
    expected: object
    actual: object

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: expected {self.expected}, found {self.actual}"


_LOT_SUMS = """
    SELECT b.member_id, b.available, b.pending, b.debt,
           coalesce(l.matured_sum, 0) AS matured_sum, coalesce(l.pending_sum, 0) AS pending_sum
    FROM ledger_balance b
    LEFT JOIN (
        SELECT member_id,
               sum(remaining) FILTER (WHERE matured) AS matured_sum,
               sum(remaining) FILTER (WHERE NOT matured) AS pending_sum
        FROM ledger_lot GROUP BY member_id
    ) l ON l.member_id = b.member_id
"""

CHECKS: dict[str, tuple[str, str]] = {
    # name: (sql returning (subject, expected, actual), description)
    "available_equals_lots": (
        f"SELECT member_id, matured_sum - debt, available FROM ({_LOT_SUMS}) s "
        "WHERE available <> matured_sum - debt",
        "available == remaining of available lots - debt",
    ),
    "pending_equals_lots": (
        f"SELECT member_id, pending_sum, pending FROM ({_LOT_SUMS}) s WHERE pending <> pending_sum",
        "pending == remaining of lots not yet available",
    ),
    "held_equals_open_holds": (
        """SELECT b.member_id, coalesce(h.total, 0), b.held FROM ledger_balance b
           LEFT JOIN (SELECT member_id, sum(points) AS total FROM ledger_hold
                      WHERE status = 'open' GROUP BY member_id) h ON h.member_id = b.member_id
           WHERE b.held <> coalesce(h.total, 0)""",
        "held == points of open holds",
    ),
    "entries_equal_balance": (
        """SELECT b.member_id, b.available + b.pending, coalesce(e.total, 0) FROM ledger_balance b
           LEFT JOIN (SELECT member_id, sum(points) AS total FROM ledger_entry GROUP BY member_id) e
             ON e.member_id = b.member_id
           WHERE coalesce(e.total, 0) <> b.available + b.pending""",
        "sum of entries == available + pending (held points left through their hold entry)",
    ),
    "lifetime_earned": (
        """SELECT b.member_id, coalesce(e.total, 0), b.lifetime_earned FROM ledger_balance b
           LEFT JOIN (SELECT member_id, sum(points) AS total FROM ledger_entry WHERE kind = 'earn'
                      GROUP BY member_id) e ON e.member_id = b.member_id
           WHERE b.lifetime_earned <> coalesce(e.total, 0)""",
        "lifetime_earned == sum of earn entries",
    ),
    "lifetime_expired": (
        """SELECT b.member_id, coalesce(e.total, 0), b.lifetime_expired FROM ledger_balance b
           LEFT JOIN (SELECT member_id, -sum(points) AS total FROM ledger_entry WHERE kind = 'expire'
                      GROUP BY member_id) e ON e.member_id = b.member_id
           WHERE b.lifetime_expired <> coalesce(e.total, 0)""",
        "lifetime_expired == sum of expire entries",
    ),
    "lifetime_redeemed": (
        """SELECT b.member_id, coalesce(a.total, 0), b.lifetime_redeemed FROM ledger_balance b
           LEFT JOIN (
               SELECT o.member_id, sum(a.points - a.returned) AS total
               FROM ledger_allocation a JOIN ledger_operation o ON o.id = a.operation_id
               LEFT JOIN ledger_hold h ON h.operation_id = o.id
               WHERE o.kind = 'redeem' OR (o.kind = 'hold' AND h.status = 'captured')
               GROUP BY o.member_id
           ) a ON a.member_id = b.member_id
           WHERE b.lifetime_redeemed <> coalesce(a.total, 0)""",
        "lifetime_redeemed == points of redemptions and captured holds not given back",
    ),
    "no_negative_balance": (
        """SELECT b.member_id, 0, b.available FROM ledger_balance b
           JOIN accounts_program p ON p.id = b.program_id
           WHERE b.available < 0 AND NOT p.allow_negative_balance""",
        "available >= 0 unless the program allows negative balances",
    ),
    "lot_within_bounds": (
        "SELECT member_id, 'between 0 and ' || points, remaining FROM ledger_lot "
        "WHERE remaining < 0 OR remaining > points",
        "0 <= lot remaining <= lot points",
    ),
    "expired_lot_is_empty": (
        "SELECT member_id, 0, remaining FROM ledger_lot WHERE expired_at IS NOT NULL AND remaining > 0",
        "an expired lot keeps no points (points given back to it expire at once)",
    ),
    "spent_before_expiry": (
        """SELECT o.member_id, 'before ' || l.expires_at, o.created_at
           FROM ledger_allocation a JOIN ledger_operation o ON o.id = a.operation_id
           JOIN ledger_lot l ON l.id = a.lot_id
           WHERE l.expires_at IS NOT NULL AND o.created_at >= l.expires_at""",
        "no points are spent or held from a lot at or after its expiry (they expire first)",
    ),
    "debt_paid_first": (
        """SELECT b.member_id, 'debt ' || b.debt || ' and no points in lots', sum(l.remaining)
           FROM ledger_balance b JOIN ledger_lot l ON l.member_id = b.member_id AND l.remaining > 0
           WHERE b.debt > 0 GROUP BY b.member_id, b.debt""",
        "a member in debt keeps no points in lots: points earned, pending or given back pay the debt first",
    ),
    "reversal_claims": (
        """WITH reversals AS (
               SELECT member_id, sum((result->>'claimed')::int) AS n FROM ledger_operation
               WHERE kind = 'reverse' AND (result->>'claimed')::int > 0 GROUP BY member_id
           ), claims AS (
               SELECT o.member_id, sum(a.claimed) AS n
               FROM ledger_allocation a JOIN ledger_operation o ON o.id = a.operation_id
               WHERE a.claimed > 0 GROUP BY o.member_id
           )
           SELECT coalesce(r.member_id, c.member_id), coalesce(r.n, 0), coalesce(c.n, 0)
           FROM reversals r FULL JOIN claims c ON c.member_id = r.member_id
           WHERE coalesce(r.n, 0) <> coalesce(c.n, 0)""",
        "the points claimed on allocations == the points reversals claimed",
    ),
    "reversal_claims_paid": (
        """WITH returned AS (
               SELECT o.member_id, sum(a.claimed) AS n
               FROM ledger_allocation a JOIN ledger_operation o ON o.id = a.operation_id
               WHERE a.claimed > 0 AND a.returned = a.points GROUP BY o.member_id
           ), paid AS (
               SELECT e.member_id, -sum(e.points) AS n
               FROM ledger_entry e JOIN ledger_operation o ON o.id = e.operation_id
               WHERE e.kind = 'reverse' AND e.points < 0 AND o.kind IN ('cancel', 'void') GROUP BY e.member_id
           )
           SELECT coalesce(r.member_id, p.member_id), coalesce(r.n, 0), coalesce(p.n, 0)
           FROM returned r FULL JOIN paid p ON p.member_id = r.member_id
           WHERE coalesce(r.n, 0) <> coalesce(p.n, 0)""",
        "claimed points given back (void, cancel) == the reverse entries of those voids and cancels",
    ),
    "hold_allocations": (
        """SELECT h.member_id, h.points, coalesce(sum(a.points - a.returned), 0)
           FROM ledger_hold h LEFT JOIN ledger_allocation a ON a.operation_id = h.operation_id
           WHERE h.status = 'open' GROUP BY h.id, h.member_id, h.points
           HAVING coalesce(sum(a.points - a.returned), 0) <> h.points""",
        "an open hold's points are reserved in its lots",
    ),
    "operation_has_effect_once": (
        """SELECT o.member_id, 1, count(*) FROM ledger_operation o JOIN ledger_lot l ON l.operation_id = o.id
           GROUP BY o.id, o.member_id HAVING count(*) > 1""",
        "one operation creates at most one lot",
    ),
    "balance_program_matches_member": (
        """SELECT b.member_id, m.program_id, b.program_id FROM ledger_balance b
           JOIN accounts_member m ON m.id = b.member_id WHERE m.program_id <> b.program_id""",
        "a balance belongs to its member's program",
    ),
    # References without database foreign keys (see ledger.models.Operation).
    "operation_references": (
        """SELECT o.member_id, 'a member of program ' || o.program_id,
                  coalesce('a member of program ' || m.program_id, 'no such member')
           FROM ledger_operation o LEFT JOIN accounts_member m ON m.id = o.member_id
           WHERE m.id IS NULL OR m.program_id <> o.program_id""",
        "an operation's member exists and belongs to the operation's program",
    ),
    "lot_references": (
        """SELECT l.member_id, coalesce('member ' || o.member_id || ', program ' || o.program_id, 'its operation'),
                  CASE WHEN o.id IS NULL THEN 'no operation ' || l.operation_id
                       ELSE 'member ' || l.member_id || ', program ' || l.program_id END
           FROM ledger_lot l LEFT JOIN ledger_operation o ON o.id = l.operation_id
           WHERE o.id IS NULL OR l.member_id <> o.member_id OR l.program_id <> o.program_id""",
        "a lot's operation exists and has the lot's member and program",
    ),
    "entry_references": (
        """SELECT e.member_id, 'a member of program ' || e.program_id || ' and its own lot and operation',
                  'entry ' || e.id || ': ' || concat_ws(', ',
                      CASE WHEN m.id IS NULL THEN 'no such member'
                           WHEN m.program_id <> e.program_id THEN 'member of program ' || m.program_id END,
                      CASE WHEN e.lot_id IS NOT NULL AND l.id IS NULL THEN 'no lot ' || e.lot_id
                           WHEN l.member_id <> e.member_id THEN 'lot ' || l.id || ' of member ' || l.member_id END,
                      CASE WHEN e.operation_id IS NOT NULL AND o.id IS NULL THEN 'no operation ' || e.operation_id
                           WHEN o.member_id <> e.member_id
                           THEN 'operation ' || o.id || ' of member ' || o.member_id END)
           FROM ledger_entry e
           LEFT JOIN accounts_member m ON m.id = e.member_id
           LEFT JOIN ledger_lot l ON l.id = e.lot_id
           LEFT JOIN ledger_operation o ON o.id = e.operation_id
           WHERE m.id IS NULL OR m.program_id <> e.program_id
              OR (e.lot_id IS NOT NULL AND (l.id IS NULL OR l.member_id <> e.member_id))
              OR (e.operation_id IS NOT NULL AND (o.id IS NULL OR o.member_id <> e.member_id))""",
        "an entry's member exists in the entry's program, and its lot and operation exist and are the member's",
    ),
    "member_has_balance": (
        """SELECT m.id, 'a balance row', 'none' FROM accounts_member m
           LEFT JOIN ledger_balance b ON b.member_id = m.id WHERE b.member_id IS NULL""",
        "every member has a balance row",
    ),
}


def run_audit(*, limit_per_check: int = 1000) -> list[Discrepancy]:
    """Return every discrepancy found (at most ``limit_per_check`` per check)."""
    rows = []
    with connection.cursor() as cursor:
        for name, (sql, _description) in CHECKS.items():
            cursor.execute(f"{sql} LIMIT {int(limit_per_check)}")
            rows.extend((name, *row) for row in cursor.fetchall())
        names = {}
        if rows:
            cursor.execute(
                "SELECT m.id, p.slug || '/' || m.external_id FROM accounts_member m "
                "JOIN accounts_program p ON p.id = m.program_id WHERE m.id = ANY(%s)",
                [list({row[1] for row in rows})],
            )
            names = dict(cursor.fetchall())
    return [
        Discrepancy(name, f"member {names.get(member_id, member_id)}", expected, actual)
        for name, member_id, expected, actual in rows
    ]
