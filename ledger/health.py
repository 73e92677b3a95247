"""A program's health for its marketers: what it owes (liability), what it gives and takes back
(earn and burn), and what members let lapse (breakage). Read set-based, when the page asks."""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.db import connection

# What each kind of entry counts as, over a period. Holds take points when they are made and a
# void gives them back (``release``), so holds still open count as redeemed until voided.
_BURNED_KINDS = ("redeem", "hold", "release")


@dataclasses.dataclass(frozen=True)
class Liability:
    members: int
    available: int
    pending: int
    held: int
    debt: int
    expiring_soon: int  # of the available and pending points, those that expire within ``soon_days``
    soon_days: int

    @property
    def outstanding(self) -> int:
        """Points the program may yet have to honour: available, pending and held."""
        return self.available + self.pending + self.held


@dataclasses.dataclass(frozen=True)
class Lifetime:
    earned: int
    redeemed: int
    expired: int

    @property
    def breakage(self) -> float | None:
        """The percentage of earned points that expired unused; None before anything was earned."""
        return 100 * self.expired / self.earned if self.earned else None

    @property
    def burn(self) -> float | None:
        """The percentage of earned points redeemed; None before anything was earned."""
        return 100 * self.redeemed / self.earned if self.earned else None


@dataclasses.dataclass(frozen=True)
class Day:
    day: dt.date
    earned: int
    redeemed: int
    expired: int
    reversed: int  # refunds and cancellations, net: negative when more was taken back than given
    adjusted: int


_LIABILITY_SQL = """
SELECT count(*), coalesce(sum(b.available), 0), coalesce(sum(b.pending), 0), coalesce(sum(b.held), 0),
       coalesce(sum(b.debt), 0), coalesce(sum(b.lifetime_earned), 0), coalesce(sum(b.lifetime_redeemed), 0),
       coalesce(sum(b.lifetime_expired), 0)
FROM accounts_member m LEFT JOIN ledger_balance b ON b.member_id = m.id
WHERE m.program_id = %s
"""

# Open lots expiring soon (the expiry job's index, lot_expiry_due).
_EXPIRING_SQL = """
SELECT coalesce(sum(remaining), 0) FROM ledger_lot
WHERE program_id = %s AND remaining > 0 AND expired_at IS NULL AND expires_at < %s
"""

# Entries of the period, by day (UTC) and kind: only the period's partitions are read.
_DAYS_SQL = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, kind, sum(points)
FROM ledger_entry
WHERE program_id = %s AND created_at >= %s AND created_at < %s
GROUP BY 1, 2
"""


def program_liability_and_lifetime(program_id: int, now: dt.datetime,
                                   soon_days: int = 30) -> tuple[Liability, Lifetime]:
    with connection.cursor() as cursor:
        cursor.execute(_LIABILITY_SQL, [program_id])
        members, available, pending, held, debt, earned, redeemed, expired = cursor.fetchone()
        cursor.execute(_EXPIRING_SQL, [program_id, now + dt.timedelta(days=soon_days)])
        (expiring,) = cursor.fetchone()
    return (Liability(members=members, available=available, pending=pending, held=held, debt=debt,
                      expiring_soon=expiring, soon_days=soon_days),
            Lifetime(earned=earned, redeemed=redeemed, expired=expired))


def program_days(program_id: int, now: dt.datetime, days: int = 30) -> list[Day]:
    """Earn and burn for each of the last ``days`` days (UTC), today included, newest first."""
    today = now.astimezone(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    sums: dict[tuple[dt.date, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(_DAYS_SQL, [program_id, start, end])
        for day, kind, points in cursor.fetchall():
            sums[day, kind] = int(points)
    result = []
    for n in range(days):
        day = today - dt.timedelta(days=n)
        result.append(Day(
            day=day,
            earned=sums.get((day, "earn"), 0),
            redeemed=-sum(sums.get((day, kind), 0) for kind in _BURNED_KINDS),
            expired=-sums.get((day, "expire"), 0),
            reversed=sums.get((day, "reverse"), 0),
            adjusted=sums.get((day, "adjust"), 0),
        ))
    return result
