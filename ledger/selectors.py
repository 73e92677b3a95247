"""Reads of the ledger used by other apps (the API, member pages)."""

from __future__ import annotations

from accounts.models import Member
from ledger.models import Balance, Lot
from loyalty.db import prepared_cursor

EXPIRING_LIMIT = 100


def expiring_by_member(member_ids: list[int]) -> dict[int, list[dict]]:
    """Each member's open lots that expire, soonest first (at most EXPIRING_LIMIT each)."""
    expiring: dict[int, list[dict]] = {member_id: [] for member_id in member_ids}
    lots = (
        Lot.objects.filter(member_id__in=member_ids, remaining__gt=0, expired_at__isnull=True, expires_at__isnull=False)
        .by_expiry().values_list("member_id", "remaining", "expires_at")
    )
    for member_id, remaining, expires_at in lots:
        if len(expiring[member_id]) < EXPIRING_LIMIT:
            expiring[member_id].append({"points": remaining, "expires_at": expires_at})
    return expiring


def balance_output(balance: Balance | None, expiring: list[dict]) -> dict:
    figures = ("available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired")
    return {**{name: getattr(balance, name, 0) for name in figures}, "expiring": expiring}


_FIGURES = ("available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired")

_BALANCE_SQL = f"""
SELECT m.id, {", ".join(f"b.{name}" for name in _FIGURES)}, l.remaining, l.expires_at
FROM accounts_member m
LEFT JOIN ledger_balance b ON b.member_id = m.id
LEFT JOIN LATERAL (
    SELECT remaining, expires_at, id FROM ledger_lot
    WHERE member_id = m.id AND remaining > 0 AND expired_at IS NULL AND expires_at IS NOT NULL
    ORDER BY expires_at, id LIMIT {EXPIRING_LIMIT}
) l ON true
WHERE {{where}}
ORDER BY l.expires_at, l.id
"""


def balance_read(member: Member) -> dict:
    """The API's balance: figures plus the open lots by expiry, soonest first; one query."""
    return _balance_one("m.id = %s::bigint", [member.pk])


def balance_by_external_id(program_id: int, external_id: str) -> dict | None:
    """``balance_read`` of a program's member by external id; None if no such member.
    The API's hottest read: one round trip, a prepared statement."""
    return _balance_one("m.program_id = %s::bigint AND m.external_id = %s::text", [program_id, external_id])


def _balance_one(where: str, params: list) -> dict | None:
    with prepared_cursor() as cursor:
        cursor.execute(_BALANCE_SQL.format(where=where), params)
        rows = cursor.fetchall()
    if not rows:
        return None
    first = rows[0]
    figures = {name: value or 0 for name, value in zip(_FIGURES, first[1:7], strict=True)}
    expiring = [{"points": row[7], "expires_at": row[8]} for row in rows if row[7] is not None]
    return {**figures, "expiring": expiring}
