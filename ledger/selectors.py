"""Reads of the ledger used by other apps (the API, member pages)."""

from __future__ import annotations

import functools

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from accounts.models import Member
from ledger.models import Balance, Entry, Lot
from ledger.services import ledger_settle
from loyalty.db import prepared_cursor

EXPIRING_LIMIT = 100


def member_entries(member_id: int, after: str | None = None) -> QuerySet[Entry] | None:
    """A member's entries, newest first; with ``after`` (an entry id, as text), only those after
    that entry of theirs in this order. None when ``after`` is not one of their entries."""
    entries = Entry.objects.filter(member_id=member_id).order_by("-created_at", "-id")
    if after is None:
        return entries
    # An id has at most 19 digits; Python would refuse to read a number of thousands.
    cursor = (entries.filter(pk=int(after)).values_list("created_at", "id").first()
              if after.isascii() and after.isdigit() and len(after) <= 19 else None)
    if cursor is None:
        return None
    created_at, entry_id = cursor
    return entries.filter(created_at__lte=created_at).exclude(created_at=created_at, id__gte=entry_id)


def members_settle_due(member_ids: list[int]) -> list[int]:
    """Of ``member_ids``, those with lots due to mature or to expire, settled now (as spending
    would settle them); for reads of many balances at once."""
    now = timezone.now()
    due = list(Member.objects.filter(pk__in=member_ids).filter(
        Exists(Lot.objects.filter(member_id=OuterRef("pk"), matured=False, available_at__lte=now))
        | Exists(Lot.objects.filter(member_id=OuterRef("pk"), remaining__gt=0, expired_at__isnull=True,
                                    expires_at__lte=now))
    ).values_list("pk", flat=True))
    for member_id in due:
        ledger_settle(member_id, now=now)
    return due


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

# The last column says whether pending lots are due to mature (looked for only when some points are
# pending); lots due to expire come first among the expiring ones.
_BALANCE_SQL = f"""
SELECT m.id, {", ".join(f"b.{name}" for name in _FIGURES)}, l.remaining, l.expires_at,
       CASE WHEN b.pending > 0 THEN EXISTS (
           SELECT FROM ledger_lot p WHERE p.member_id = m.id AND NOT p.matured AND p.available_at <= %s::timestamptz
       ) ELSE false END
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


@functools.cache
def _balance_sql(where: str) -> str:
    return _BALANCE_SQL.format(where=where)


def balance_read(member: Member) -> dict:
    """The API's balance: figures plus the open lots by expiry, soonest first; one query."""
    return _balance_one("m.id = %s::bigint", [member.pk])


def balance_by_external_id(program_id: int, external_id: str) -> dict | None:
    """``balance_read`` of a program's member by external id; None if no such member.
    The API's hottest read: one round trip, a prepared statement."""
    return _balance_one("m.program_id = %s::bigint AND m.external_id = %s::text", [program_id, external_id])


def _balance_one(where: str, params: list, *, settle: bool = True) -> dict | None:
    now = timezone.now()
    with prepared_cursor() as cursor:
        cursor.execute(_balance_sql(where), [now, *params])
        rows = cursor.fetchall()
    if not rows:
        return None
    first = rows[0]
    if settle and (first[9] or (first[8] is not None and first[8] <= now)):
        # Lots are due to mature or to expire (the nightly jobs have not reached them yet): settle
        # them as spending would, so that the balance shown is the one that can be spent now.
        ledger_settle(first[0], now=now)
        return _balance_one(where, params, settle=False)
    figures = {name: value or 0 for name, value in zip(_FIGURES, first[1:7], strict=True)}
    expiring = [{"points": row[7], "expires_at": row[8]} for row in rows if row[7] is not None]
    return {**figures, "expiring": expiring}
