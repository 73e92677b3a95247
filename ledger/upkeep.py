"""Set-based upkeep of the ledger: maturing, expiry and timed-out holds.

Each batch locks the balance rows of the members it touches, in ``member_id`` order,
before it touches their lots (the same order as the services), then moves everything
with a few statements. Running any of these twice changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

_MATURE_SQL = """
WITH moved AS (
    UPDATE ledger_lot SET matured = true
    WHERE member_id = ANY(%(members)s) AND NOT matured AND available_at <= %(now)s
    RETURNING member_id, remaining
), sums AS (
    SELECT member_id, sum(remaining)::int AS n FROM moved GROUP BY member_id
)
UPDATE ledger_balance b SET pending = b.pending - sums.n, available = b.available + sums.n
FROM sums WHERE b.member_id = sums.member_id
"""

_EXPIRE_SQL = """
WITH due AS (
    SELECT id, program_id, member_id, remaining, matured FROM ledger_lot
    WHERE member_id = ANY(%(members)s) AND remaining > 0 AND expired_at IS NULL
      AND expires_at <= %(now)s
), gone AS (
    UPDATE ledger_lot l SET remaining = 0, expired_at = %(now)s
    FROM due WHERE l.id = due.id
    RETURNING due.id, due.program_id, due.member_id, due.remaining, due.matured
), written AS (
    INSERT INTO ledger_entry
        (created_at, program_id, member_id, kind, points, lot_id, description, source_type, source_id)
    SELECT %(now)s, program_id, member_id, 'expire', -remaining, id, 'Points expired', 'lot', id::text
    FROM gone
), sums AS (
    SELECT member_id,
           coalesce(sum(remaining) FILTER (WHERE matured), 0)::int AS available,
           coalesce(sum(remaining) FILTER (WHERE NOT matured), 0)::int AS pending,
           sum(remaining)::int AS total
    FROM gone GROUP BY member_id
)
UPDATE ledger_balance b SET available = b.available - sums.available,
                            pending = b.pending - sums.pending,
                            lifetime_expired = b.lifetime_expired + sums.total
FROM sums JOIN accounts_member m ON m.id = sums.member_id
WHERE b.member_id = sums.member_id
RETURNING b.program_id, m.external_id, sums.total
"""


def mature_locked_members(member_ids: list[int], *, now: dt.datetime) -> int:
    """Make pending lots whose time has come available. The caller holds the members' locks."""
    with connection.cursor() as cursor:
        cursor.execute(_MATURE_SQL, {"members": member_ids, "now": now})
        return cursor.rowcount


def expire_locked_members(member_ids: list[int], *, now: dt.datetime) -> int:
    """Expire what remains of lots past their expiry: one ``expire`` entry per lot, and one
    ``points.expired`` webhook per member. Returns the members whose points expired."""
    from webhooks.services import webhook_emit_many

    with connection.cursor() as cursor:
        cursor.execute(_EXPIRE_SQL, {"members": member_ids, "now": now})
        expired = cursor.fetchall()
    by_program: dict[int, list[dict]] = {}
    for program_id, external_id, points in expired:
        by_program.setdefault(program_id, []).append({"member_id": external_id, "points": points})
    for program_id, items in by_program.items():
        webhook_emit_many(program_id=program_id, type="points.expired", items=items, now=now)
    return len(expired)


def _lock_members(due_sql: str, params: dict, batch_size: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT member_id FROM ledger_balance WHERE member_id IN ({due_sql} ORDER BY member_id LIMIT %(limit)s) "
            "ORDER BY member_id FOR UPDATE",
            {**params, "limit": batch_size},
        )
        return [row[0] for row in cursor.fetchall()]


def _run_batches(due_sql: str, apply, *, now: dt.datetime, batch_size: int) -> int:
    members_done = 0
    after = 0
    while True:
        with transaction.atomic():
            members = _lock_members(due_sql, {"now": now, "after": after}, batch_size)
            if not members:
                return members_done
            apply(members, now=now)
        members_done += len(members)
        after = members[-1]


def lots_mature(*, now: dt.datetime | None = None, batch_size: int | None = None) -> int:
    """Beat: move every lot whose pending time is over. Returns the members touched."""
    now = now or timezone.now()
    due = (
        "SELECT DISTINCT member_id FROM ledger_lot WHERE NOT matured AND available_at <= %(now)s "
        "AND member_id > %(after)s"
    )
    return _run_batches(due, mature_locked_members, now=now,
                        batch_size=batch_size or settings.LEDGER_EXPIRY_BATCH_SIZE)


def lots_expire(*, now: dt.datetime | None = None, batch_size: int | None = None) -> int:
    """Beat, nightly: expire every lot past its expiry. Returns the members touched."""
    now = now or timezone.now()
    due = (
        "SELECT DISTINCT member_id FROM ledger_lot WHERE remaining > 0 AND expired_at IS NULL "
        "AND expires_at <= %(now)s AND member_id > %(after)s"
    )
    touched = _run_batches(due, expire_locked_members, now=now,
                           batch_size=batch_size or settings.LEDGER_EXPIRY_BATCH_SIZE)
    logger.info("expiry at %s: %s members", now.isoformat(), touched)
    return touched


def holds_void_expired(*, now: dt.datetime | None = None) -> int:
    """Beat: void every open hold past its deadline (each through ``hold_void``)."""
    from ledger.errors import InvalidLedgerState
    from ledger.models import Hold
    from ledger.services import hold_void

    now = now or timezone.now()
    count = 0
    due = Hold.objects.filter(status=Hold.Status.OPEN, expires_at__lte=now).select_related("member")
    for hold in due.order_by("id"):
        try:
            with transaction.atomic():
                hold_void(hold=hold, key=f"hold-timeout:{hold.pk}", now=now, description="Hold timed out")
        except InvalidLedgerState:
            continue  # captured or voided since it was listed
        count += 1
    return count
