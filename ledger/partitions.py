"""Monthly partitions of ``ledger_entry``.

There is deliberately no DEFAULT partition: a row whose month has no partition is
refused by PostgreSQL instead of landing silently in a catch-all. Partitions are
created ahead of time by the ``ledger_partitions`` command and a daily beat task.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection

ENTRY_TABLE = "ledger_entry"


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + months
    return dt.date(index // 12, index % 12 + 1, 1)


def partition_name(month: dt.date) -> str:
    return f"{ENTRY_TABLE}_y{month.year:04d}m{month.month:02d}"


def ensure_partitions(*, start: dt.date, months_ahead: int, using=None) -> list[str]:
    """Create the monthly partitions from ``start``'s month through ``months_ahead`` more.

    Returns the names of the partitions that were created (existing ones are left alone).
    """
    conn = connection if using is None else using
    created = []
    first = month_start(start)
    with conn.cursor() as cursor:
        # One creator at a time (the beat job, the command, a deploy): two creating the same month
        # at once fail on the catalog even with IF NOT EXISTS. A session lock, so that each partition
        # is still created in a transaction of its own.
        cursor.execute("SELECT pg_advisory_lock(hashtext('ledger_partitions'))")
        try:
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
                [ENTRY_TABLE],
            )
            existing = {row[0] for row in cursor.fetchall()}
            for offset in range(months_ahead + 1):
                lower = add_months(first, offset)
                name = partition_name(lower)
                if name in existing:
                    continue
                upper = add_months(lower, 1)
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{ENTRY_TABLE}" '
                    f"FOR VALUES FROM ('{lower.isoformat()} 00:00:00+00') TO ('{upper.isoformat()} 00:00:00+00')"
                )
                created.append(name)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtext('ledger_partitions'))")
    return created


def existing_partitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s ORDER BY c.relname",
            [ENTRY_TABLE],
        )
        return [row[0] for row in cursor.fetchall()]
