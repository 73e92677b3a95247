"""Every movement of points. These functions are the only way in.

Each service takes an operation ``key``: the first call with a key does the work, a
later call with the same key and the same request returns the first ``Operation``
(``replayed=True``) and changes nothing, and the same key with a different request
raises ``IdempotencyKeyReused``. Two concurrent calls with one key serialise on the
unique index of ``ledger_operation``. Each call either completes or changes nothing.

Locking: a member's ``Balance`` row is locked first, then their lots. Anything that
touches several members locks their balances in ``member_id`` order.

The services run in ``transaction.atomic()`` (a savepoint when nested) so that the
event pipeline and the API can post them inside their own durable transaction. A caller that
lets any error roll its whole transaction (or its own savepoint) back may pass ``savepoint=False``
to ``points_earn`` and the spending services and save the two round trips of a savepoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Case, F, Sum, When
from django.utils import timezone

from accounts.models import Member, Program
from ledger import upkeep
from ledger.errors import (
    IdempotencyKeyReused,
    InsufficientPoints,
    InvalidLedgerState,
    InvalidPoints,
    ReverseExceedsEarned,
)
from ledger.models import Allocation, Balance, Entry, EntryKind, Hold, Lot, Operation
from loyalty.db import model_from_row, prepared_cursor
from loyalty.jsontext import pg_json
from webhooks.services import subscribed_endpoint_ids, webhook_emit, webhook_emit_many


@dataclass(frozen=True)
class Source:
    """What caused a movement (an event, a redemption, an adjustment...)."""

    type: str = ""
    id: str = ""


NO_SOURCE = Source()


# --- plumbing ---------------------------------------------------------------------------


def _request_hash(kind: str, member_id: int, request: dict) -> str:
    body = json.dumps({"kind": kind, "member": member_id, **request}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


# The operation row, claimed with its key; no id comes back when the key was claimed before.
_CLAIM_SQL = """
INSERT INTO ledger_operation (program_id, member_id, key, kind, request_hash, result, created_at)
VALUES (%(program)s::bigint, %(member)s::bigint, %(key)s::text, %(kind)s::text, %(hash)s::text, '{}',
        %(now)s::timestamptz)
ON CONFLICT (program_id, key) DO NOTHING RETURNING id
"""


def _claim(*, member: Member, key: str, kind: str, request: dict, now: dt.datetime) -> Operation:
    """Insert the operation row, or return the earlier one for this key (``replayed=True``)."""
    _check_key(key)
    request_hash = _request_hash(kind, member.pk, request)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"program": member.program_id, "member": member.pk, "key": key, "kind": kind,
                                    "hash": request_hash, "now": now})
        row = cursor.fetchone()
    if row is None:
        return _earlier(member, key, request_hash)
    return _claimed(row[0], member=member, key=key, kind=kind, request_hash=request_hash, now=now)


def _check_key(key: str) -> None:
    if not key or len(key) > 255:
        raise InvalidPoints("An operation key of 1 to 255 characters is required.", param="key")


def _earlier(member: Member, key: str, request_hash: str) -> Operation:
    """The operation that already holds ``key``: replayed if it was the same request."""
    earlier = Operation.objects.get(program_id=member.program_id, key=key)
    if earlier.request_hash != request_hash:
        raise IdempotencyKeyReused(f"This key was already used for a different {earlier.kind} request.", param="key")
    earlier.replayed = True
    return earlier


def _claimed(operation_id: int, *, member: Member, key: str, kind: str, request_hash: str,
             now: dt.datetime) -> Operation:
    operation = Operation(
        id=operation_id, program_id=member.program_id, member=member, key=key, kind=kind,
        request_hash=request_hash, result={}, created_at=now,
    )
    operation.replayed = False
    return operation


def _lock_balance(member: Member) -> Balance:
    balance = Balance.objects.select_for_update().filter(member_id=member.pk).first()
    if balance is None:
        Balance.objects.bulk_create(
            [Balance(member_id=member.pk, program_id=member.program_id)], ignore_conflicts=True
        )
        balance = Balance.objects.select_for_update().get(member_id=member.pk)
    return balance


_BALANCE_COLUMNS = [field.column for field in Balance._meta.concrete_fields]
_BALANCE_ATTNAMES = [field.attname for field in Balance._meta.concrete_fields]  # the order of _BALANCE_COLUMNS

# The member's balance row, locked, and whether any of their lots is due to mature or to
# expire: the settling statements then run only when they have something to do. The subqueries
# read the database as the statement's snapshot saw it; a statement that waited for the lock gets
# the balance row as the transaction it waited for left it, but the subqueries' answers stay as
# they were before the wait (a void that gave points back to a lot since past its expiry, an
# operation made with the same key). The last column says whether the row locked is the one the
# snapshot saw; when it is not, ``_settled`` asks again, under the lock.
_LOCK_FOR_SPENDING_SQL = f"""
SELECT {", ".join(f"b.{column}" for column in _BALANCE_COLUMNS)},
       EXISTS (SELECT FROM ledger_lot l WHERE l.member_id = b.member_id AND NOT l.matured
               AND l.available_at <= %(now)s::timestamptz),
       EXISTS (SELECT FROM ledger_lot l WHERE l.member_id = b.member_id AND l.remaining > 0
               AND l.expired_at IS NULL AND l.expires_at <= %(now)s::timestamptz),
       (SELECT s.xmin FROM ledger_balance s WHERE s.member_id = b.member_id) = b.xmin
FROM ledger_balance b WHERE b.member_id = %(member)s::bigint
FOR UPDATE OF b
"""

# The same, with the id of the operation already made with a key, if any (``lock_for_spending``).
_LOCK_FOR_SPENDING_KEYED_SQL = _LOCK_FOR_SPENDING_SQL.replace(
    "\nFROM ledger_balance b",
    ",\n       (SELECT o.id FROM ledger_operation o WHERE o.program_id = b.program_id AND o.key = %(key)s::text)"
    "\nFROM ledger_balance b",
)

_MEMBER_COLUMNS = [field.column for field in Member._meta.concrete_fields]

# The same again, of the program's member with an external id, with the member's columns first
# (``member_lock_for_spending``).
_MEMBER_LOCK_FOR_SPENDING_SQL = _LOCK_FOR_SPENDING_KEYED_SQL.replace(
    "\nSELECT ", f"\nSELECT {', '.join(f'm.{column}' for column in _MEMBER_COLUMNS)},\n       ", 1,
).replace(
    "FROM ledger_balance b WHERE b.member_id = %(member)s::bigint",
    "FROM accounts_member m JOIN ledger_balance b ON b.member_id = m.id\n"
    "WHERE m.program_id = %(program)s::bigint AND m.external_id = %(external_id)s::text",
)


def _lock_for_spending(member: Member, now: dt.datetime) -> Balance:
    """Lock the member, and settle what is due first: lots past expiry expire, lots whose
    pending time is over become available. Spending then sees the balance as of ``now``.
    One prepared statement when nothing is due."""
    return _lock_for_spending_keyed(member, now, None)[0]


def ledger_settle(member_id: int, *, now: dt.datetime | None = None) -> None:
    """Settle what is due for a member now (lots to mature, lots to expire), as spending does; for
    reads that must show the balance as of now before the nightly jobs reach the member."""
    member = Member.objects.get(pk=member_id)
    with transaction.atomic():
        _lock_for_spending(member, now or timezone.now())


def lock_for_spending(member: Member, *, key: str, now: dt.datetime | None = None) -> tuple[Balance, int | None]:
    """For a caller that spends in its own transaction: lock the member as ``points_redeem`` and
    ``points_hold`` do (what is due matures or expires first) and return the balance, to pass them
    as ``locked``, with the id of the operation already made with ``key`` (None if there is none).
    One prepared statement when nothing is due."""
    return _lock_for_spending_keyed(member, now or timezone.now(), key)


def member_lock_for_spending(
    program_id: int, external_id: str, *, key: str, now: dt.datetime | None = None,
) -> tuple[Member, Balance, int | None] | None:
    """``lock_for_spending`` of the program's member with this external id, found by the same
    statement: (member, balance, id of the operation made with ``key`` or None), or None when the
    program has no such member."""
    now = now or timezone.now()
    with prepared_cursor() as cursor:
        cursor.execute(_MEMBER_LOCK_FOR_SPENDING_SQL,
                       {"program": program_id, "external_id": external_id, "now": now, "key": key})
        row = cursor.fetchone()
    if row is None:  # no such member, or one without a balance row yet
        member = Member.objects.by_external_id(program_id, external_id)
        return None if member is None else (member, *_lock_for_spending_keyed(member, now, key))
    split = len(_MEMBER_COLUMNS)
    member = model_from_row(Member, row[:split])
    if not _as_seen(row, key):  # it waited for the lock: ask again, now that it holds it
        return (member, *_lock_for_spending_keyed(member, now, key))
    return (member, *_settled(member, row[split:], now, key))


def _lock_for_spending_keyed(member: Member, now: dt.datetime, key: str | None) -> tuple[Balance, int | None]:
    with prepared_cursor() as cursor:
        if key is None:
            cursor.execute(_LOCK_FOR_SPENDING_SQL, {"member": member.pk, "now": now})
        else:
            cursor.execute(_LOCK_FOR_SPENDING_KEYED_SQL, {"member": member.pk, "now": now, "key": key})
        row = cursor.fetchone()
    if row is None:  # no balance row yet: make it, then lock it as any other
        _lock_balance(member)
        return _lock_for_spending_keyed(member, now, key)
    if not _as_seen(row, key):  # it waited for the lock: ask again, now that it holds it (no wait)
        return _lock_for_spending_keyed(member, now, key)
    return _settled(member, row, now, key)


def _as_seen(row: tuple, key: str | None) -> bool:
    """Whether a lock-for-spending statement locked the balance row its snapshot saw, so that its
    answers about lots and operations hold for the row locked."""
    return bool(row[-2] if key is not None else row[-1])


def _settled(member: Member, row: tuple, now: dt.datetime, key: str | None) -> tuple[Balance, int | None]:
    """The balance and the keyed operation from a row of a lock-for-spending statement, after
    settling what it says is due (lots to mature or to expire). Nothing is settled when the key
    already made its operation: the request is a replay (or refused as another request with that
    key), and a replay changes nothing, as the other operations' replays do not."""
    earlier = row[-1] if key is not None else None
    *columns, to_mature, to_expire, _seen = row[:-1] if key is not None else row  # ``_seen``: ``_as_seen`` checked it
    if earlier is not None:
        to_mature = to_expire = False
    moved = upkeep.mature_locked_members([member.pk], now=now) if to_mature else 0
    moved += upkeep.expire_locked_members([member.pk], now=now) if to_expire else 0
    if moved:
        return Balance.objects.get(member_id=member.pk), earlier
    return Balance.from_db(connection.alias, _BALANCE_ATTNAMES, columns), earlier


def check_spendable(balance: Balance, points: int) -> None:
    """``InsufficientPoints`` unless ``balance`` (locked) has ``points`` available. A caller that
    knows its key is new may check before spending, and save the statement a rollback would undo."""
    if balance.available < points:
        raise InsufficientPoints(f"{points} points requested, {max(balance.available, 0)} available.", param="points")


def _spending_balance(member: Member, now: dt.datetime, locked: Balance | None, key: str) -> Balance:
    """``locked`` (the caller's ``lock_for_spending`` in this transaction), else the member locked now."""
    if locked is None:
        return _lock_for_spending_keyed(member, now, key)[0]
    if locked.member_id != member.pk:
        raise ValueError(f"The balance passed as locked is member {locked.member_id}'s, not {member.pk}'s.")
    return locked


def _bump_balance(member: Member, **deltas: int) -> None:
    changes = {name: F(name) + value for name, value in deltas.items() if value}
    if changes:
        Balance.objects.filter(member_id=member.pk).update(**changes)


def _entry(
    *, member: Member, operation: Operation | None, kind: str, points: int, now: dt.datetime,
    description: str = "", source: Source = NO_SOURCE, lot_id: int | None = None,
) -> Entry:
    return Entry(
        created_at=now, program_id=member.program_id, member=member, kind=kind, points=points,
        lot_id=lot_id, operation=operation, description=description[:255],
        source_type=source.type, source_id=str(source.id),
    )


def _check_points(points: int, *, allow_negative: bool = False) -> None:
    if not isinstance(points, int) or isinstance(points, bool):
        raise InvalidPoints("Points must be an integer.", param="points")
    if points == 0 or (points < 0 and not allow_negative):
        raise InvalidPoints("Points must be a positive integer.", param="points")


# Take points from a member's spendable lots, soonest expiry first, and record what came from
# where: each lot gives what is left of the request after the lots before it, at most all it has.
# The allocations go to the operation named by the CTE ``operation`` (one row: its id).
_TAKE_FROM_LOTS = """
lots AS (
    SELECT id, remaining,
           sum(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, id) - remaining AS before
    FROM ledger_lot
    WHERE member_id = %(member)s::bigint AND matured AND remaining > 0 AND expired_at IS NULL
      AND EXISTS (SELECT FROM operation)
), taken AS (
    SELECT id, before, LEAST(remaining, %(points)s::integer - before) AS n FROM lots
    WHERE before < %(points)s::integer
), spent AS (
    UPDATE ledger_lot l SET remaining = l.remaining - taken.n FROM taken WHERE l.id = taken.id
), allocated AS (
    INSERT INTO ledger_allocation (operation_id, lot_id, points, returned)
    SELECT operation.id, taken.id, taken.n, 0 FROM operation, taken ORDER BY taken.before
)"""

_SPEND_SQL = f"""
WITH operation AS (SELECT %(operation)s::bigint AS id),
{_TAKE_FROM_LOTS}
SELECT coalesce(sum(n), 0)::integer FROM taken
"""

# A redemption or a hold in one statement: the operation claimed with its key, the points taken
# from the lots, the entry written and the balance moved. Nothing is taken or written when the key
# is already claimed (no operation id comes back).
_CLAIM_AND_SPEND_SQL = f"""
WITH operation AS ({_CLAIM_SQL}),
{_TAKE_FROM_LOTS}, entry AS (
    INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, operation_id,
                              description, source_type, source_id)
    SELECT %(now)s::timestamptz, %(program)s::bigint, %(member)s::bigint, %(kind)s::text, -%(points)s::integer,
           NULL, operation.id, %(description)s::text, %(source_type)s::text, %(source_id)s::text
    FROM operation
), balance AS (
    UPDATE ledger_balance
    SET available = available - %(points)s::integer, held = held + %(held)s::integer,
        lifetime_redeemed = lifetime_redeemed + %(redeemed)s::integer
    FROM operation WHERE member_id = %(member)s::bigint
)
SELECT (SELECT id FROM operation), (SELECT coalesce(sum(n), 0)::integer FROM taken)
"""


# The same from the member's lots not yet available (a reversal that would otherwise make debt).
_SPEND_PENDING_SQL = _SPEND_SQL.replace(" AND matured AND ", " AND NOT matured AND ")


def _spend_lots(*, operation: Operation, member: Member, points: int, pending: bool = False) -> None:
    """Take ``points`` from the member's spendable lots (with ``pending``: from their lots not
    yet available), soonest expiry first, with their allocations to ``operation``. One prepared
    statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_SPEND_PENDING_SQL if pending else _SPEND_SQL,
                       {"member": member.pk, "points": points, "operation": operation.pk})
        (taken,) = cursor.fetchone()
    _check_taken(taken, points)


def _check_taken(taken: int, points: int) -> None:
    if taken != points:  # the balance row said yes but the lots disagree: refuse rather than overspend
        raise InsufficientPoints(f"Only {taken} points can be spent from this member's lots.")


def _claim_and_spend(
    *, member: Member, key: str, kind: str, points: int, now: dt.datetime, description: str, source: Source,
    balance: Balance,
) -> Operation:
    """``_claim`` an operation of ``kind`` (redeem or hold) and spend ``points`` for it, with its
    entry and the balance moved: one prepared statement. The earlier operation if ``key`` was
    claimed before; ``InsufficientPoints`` when ``balance`` (locked) or the lots cannot pay,
    after the statement, so that the caller's rollback undoes it."""
    _check_key(key)
    request_hash = _request_hash(kind, member.pk, {"points": points, "source": [source.type, str(source.id)]})
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM_AND_SPEND_SQL, {
            "program": member.program_id, "member": member.pk, "key": key, "kind": kind, "hash": request_hash,
            "now": now, "points": points, "description": description[:255], "source_type": source.type,
            "source_id": str(source.id), "held": points if kind == EntryKind.HOLD else 0,
            "redeemed": points if kind == EntryKind.REDEEM else 0,
        })
        operation_id, taken = cursor.fetchone()
    if operation_id is None:
        return _earlier(member, key, request_hash)
    check_spendable(balance, points)
    _check_taken(taken, points)
    return _claimed(operation_id, member=member, key=key, kind=kind, request_hash=request_hash, now=now)


def _take_from_lots(amounts: dict[int, int]) -> None:
    if not amounts:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE ledger_lot SET remaining = remaining - v.n "
            "FROM unnest(%s::bigint[], %s::int[]) AS v(id, n) WHERE ledger_lot.id = v.id",
            [list(amounts), list(amounts.values())],
        )


@dataclass(frozen=True)
class _GivenBack:
    returned: int  # all the points given back
    expired: int  # of which expired at once: their lot had expired
    claimed: int  # of which paid the claims of earlier reversals on them
    settled: int  # of which settled the member's debt
    entries: list[Entry]


def _give_back(
    *, taken_by: Operation, operation: Operation, member: Member, debt: int, now: dt.datetime, kind: str,
    description: str, source: Source,
) -> _GivenBack:
    """Return what ``taken_by`` took into the lots it came from, as part of ``operation``.

    Points that come back pay earlier reversals first: what a reversal claimed on them
    (``points_reverse``) goes to it, whatever became of their lot; then the member's ``debt`` is
    settled from those of live lots, soonest expiry first, as from points just earned. Neither
    goes back to a lot. A lot that has expired meanwhile takes the rest of its points back and
    they expire at once (a ``kind`` entry and an ``expire`` entry), so a cancel never revives
    expired points.
    """
    allocations = list(
        Allocation.objects.filter(operation=taken_by, returned__lt=F("points"))
        .select_related("lot").order_by("id")
    )
    total = claimed = 0
    live: dict[Lot, int] = {}
    dead: dict[Lot, int] = {}
    for allocation in allocations:
        n = allocation.points - allocation.returned
        total += n
        claimed += allocation.claimed
        n -= allocation.claimed
        lot = allocation.lot
        back = dead if lot.expired_at is not None or (lot.expires_at is not None and lot.expires_at <= now) else live
        back[lot] = back.get(lot, 0) + n
    Allocation.objects.filter(pk__in=[a.pk for a in allocations]).update(returned=F("points"))
    left = debt
    for lot in sorted(live, key=lambda lot: (lot.expires_at is None, lot.expires_at or now, lot.pk)):
        settle = min(left, live[lot])
        live[lot] -= settle
        left -= settle
    _take_from_lots({lot.pk: -n for lot, n in live.items() if n})
    entries = []
    if total:
        entries.append(_entry(member=member, operation=operation, kind=kind,
                              points=total, now=now, description=description, source=source))
    if claimed:
        entries.append(_entry(member=member, operation=operation, kind=EntryKind.REVERSE, points=-claimed, now=now,
                              description="Returned points paid an earlier refund", source=source))
    for lot, n in dead.items():
        if n:
            entries.append(_entry(member=member, operation=operation, kind=EntryKind.EXPIRE, points=-n, now=now,
                                  description="Returned points had already expired", source=source, lot_id=lot.pk))
    return _GivenBack(returned=total, expired=sum(dead.values()), claimed=claimed, settled=debt - left,
                      entries=entries)


_MEMBERS_LOCK_SQL = f"""
SELECT {", ".join(_BALANCE_COLUMNS)} FROM ledger_balance
WHERE member_id = ANY(%s::bigint[]) ORDER BY member_id FOR UPDATE
"""
_MEMBERS_LOCK_SKIPPING_SQL = _MEMBERS_LOCK_SQL.replace("FOR UPDATE", "FOR UPDATE SKIP LOCKED")


# A locked balance's figures, read only: what a batch needs of each of its members' balances,
# without building a model instance each (``members_lock(figures=True)``).
BalanceFigures = namedtuple("BalanceFigures", _BALANCE_ATTNAMES)


def members_lock(member_ids: Sequence[int], *, skip_locked: bool = False,
                 figures: bool = False) -> dict[int, Balance | BalanceFigures]:
    """Lock the balances of several members, in ``member_id`` order (callers that post for
    many members in one transaction take their locks here first). With ``skip_locked``, a
    balance another transaction holds is left out instead of waited for; with ``figures``, each
    comes as its ``BalanceFigures``, not a model. Not prepared: planned with the ids in hand,
    whatever their number."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBERS_LOCK_SKIPPING_SQL if skip_locked else _MEMBERS_LOCK_SQL, [sorted(set(member_ids))])
        rows = cursor.fetchall()
    if figures:
        balances = list(map(BalanceFigures._make, rows))
    else:
        balances = [Balance.from_db(connection.alias, _BALANCE_ATTNAMES, row) for row in rows]
    return {balance.member_id: balance for balance in balances}


_MEMBER_LOCK_SQL = f"""
SELECT {", ".join(f"m.{column}" for column in _MEMBER_COLUMNS)},
       {", ".join(f"b.{column}" for column in _BALANCE_COLUMNS)}
FROM accounts_member m JOIN ledger_balance b ON b.member_id = m.id
WHERE m.program_id = %s::bigint AND m.external_id = %s::text
FOR UPDATE OF b
"""


def member_lock(program_id: int, external_id: str) -> tuple[Member, Balance] | None:
    """The program's member with this external id and its balance row, locked (``members_lock``
    for one member found by external id): one prepared statement. None when there is no such
    member, or no balance row for it yet."""
    with prepared_cursor() as cursor:
        cursor.execute(_MEMBER_LOCK_SQL, [program_id, external_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_MEMBER_COLUMNS)
    return (model_from_row(Member, row[:split]),
            Balance.from_db(connection.alias, _BALANCE_ATTNAMES, row[split:]))


# --- earning ---------------------------------------------------------------------------


def _new_lot(
    *, operation: Operation, member: Member, points: int, now: dt.datetime, debt: int, source: Source,
) -> tuple[Lot, dict[str, int]]:
    """A lot for freshly credited points; debt from earlier reversals is settled from it first."""
    program = member.program
    matured = program.pending_days == 0
    settle = min(debt, points)
    lot = Lot.objects.create(
        program_id=member.program_id, member=member, operation=operation, points=points,
        remaining=points - settle, available_at=now + dt.timedelta(days=program.pending_days),
        matured=matured,
        expires_at=now + dt.timedelta(days=program.expiry_days) if program.expiry_days else None,
        created_at=now, source_type=source.type, source_id=str(source.id),
    )
    if matured:
        deltas = {"available": points, "debt": -settle}
    else:
        deltas = {"available": settle, "pending": points - settle, "debt": -settle}
    return lot, deltas


# An earn whose operation is claimed and whose balance row is locked: its lot, its entry and the balance.
_EARN_ONE_SQL = """
WITH lot AS (
    INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured,
                            expires_at, expired_at, created_at, source_type, source_id)
    VALUES (%(program)s, %(member)s, %(operation)s, %(points)s, %(remaining)s, %(available_at)s, %(matured)s,
            %(expires_at)s, NULL, %(now)s, %(source_type)s, %(source_id)s)
    RETURNING id
), entry AS (
    INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, operation_id,
                              description, source_type, source_id)
    SELECT %(now)s, %(program)s, %(member)s, 'earn', %(points)s, lot.id, %(operation)s, %(description)s,
           %(source_type)s, %(source_id)s FROM lot
    RETURNING id
), balance AS (
    UPDATE ledger_balance SET available = available + %(available)s, pending = pending + %(pending)s,
           debt = debt - %(settle)s, lifetime_earned = lifetime_earned + %(points)s
    WHERE member_id = %(member)s
)
SELECT (SELECT id FROM lot), (SELECT id FROM entry)
"""


# One earn in one round trip, from its operation to its balance: the operation row (nothing
# else happens when the key was used before), the member's balance row locked, the lot, the
# entry and the balance. Debt from earlier reversals is settled from the new lot first. Run
# through a prepared-statement cursor (``loyalty.db.prepared_cursor``): every parameter is typed.
_EARN_CLAIMED_SQL = """
WITH p AS (
    SELECT %(program)s::bigint AS program, %(member)s::bigint AS member, %(key)s::text AS key,
           %(hash)s::text AS hash, %(points)s::integer AS points, %(available_at)s::timestamptz AS available_at,
           %(matured)s::boolean AS matured, %(expires_at)s::timestamptz AS expires_at,
           %(now)s::timestamptz AS now, %(description)s::text AS description,
           %(source_type)s::text AS source_type, %(source_id)s::text AS source_id
), op AS (
    INSERT INTO ledger_operation (program_id, member_id, key, kind, request_hash, result, created_at)
    SELECT program, member, key, 'earn', hash, '{}', now FROM p
    ON CONFLICT (program_id, key) DO NOTHING
    RETURNING id
), locked AS (
    SELECT op.id AS operation_id, LEAST(b.debt, p.points) AS settle
    FROM ledger_balance b, op, p WHERE b.member_id = p.member
    FOR UPDATE OF b
), lot AS (
    INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured,
                            expires_at, expired_at, created_at, source_type, source_id)
    SELECT p.program, p.member, locked.operation_id, p.points, p.points - locked.settle, p.available_at,
           p.matured, p.expires_at, NULL, p.now, p.source_type, p.source_id
    FROM locked, p
    RETURNING id, operation_id
), entry AS (
    INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, operation_id,
                              description, source_type, source_id)
    SELECT p.now, p.program, p.member, 'earn', p.points, lot.id, lot.operation_id, p.description,
           p.source_type, p.source_id
    FROM lot, p
    RETURNING id
), balance AS (
    UPDATE ledger_balance b
    SET available = b.available + CASE WHEN p.matured THEN p.points ELSE locked.settle END,
        pending = b.pending + CASE WHEN p.matured THEN 0 ELSE p.points - locked.settle END,
        debt = b.debt - locked.settle, lifetime_earned = b.lifetime_earned + p.points
    FROM locked, p WHERE b.member_id = p.member
)
SELECT (SELECT id FROM op), (SELECT id FROM lot), (SELECT id FROM entry)
"""


def points_earn(
    *, member: Member, points: int, key: str, description: str = "", source: Source = NO_SOURCE,
    now: dt.datetime | None = None, savepoint: bool = True,
) -> Operation:
    """Credit ``points`` as a new lot (pending until the program's pending period is over)."""
    _check_points(points)
    _check_key(key)
    now = now or timezone.now()
    request_hash = _request_hash("earn", member.pk, {"points": points, "source": [source.type, str(source.id)]})
    program = member.program
    matured = program.pending_days == 0
    params = {
        "program": member.program_id, "member": member.pk, "key": key, "hash": request_hash, "points": points,
        "available_at": now + dt.timedelta(days=program.pending_days),
        "matured": matured, "now": now, "description": description[:255],
        "expires_at": now + dt.timedelta(days=program.expiry_days) if program.expiry_days else None,
        "source_type": source.type, "source_id": str(source.id),
    }
    with transaction.atomic(savepoint=savepoint):
        with prepared_cursor() as cursor:
            cursor.execute(_EARN_CLAIMED_SQL, params)
            operation_id, lot_id, entry_id = cursor.fetchone()
        if operation_id is None:
            return _earlier(member, key, request_hash)
        if lot_id is None:  # no balance row yet: create it, then post as usual
            settle = min(_lock_balance(member).debt, points)
            with connection.cursor() as cursor:
                cursor.execute(_EARN_ONE_SQL, {
                    **params, "operation": operation_id, "remaining": points - settle, "settle": settle,
                    "available": points if matured else settle, "pending": 0 if matured else points - settle,
                })
                _lot_id, entry_id = cursor.fetchone()
        webhook_emit(program_id=member.program_id, type="points.earned", key=key, now=now,
                     data=_earned_data(member.external_id, points, entry_id, source))
    return _claimed(operation_id, member=member, key=key, kind="earn", request_hash=request_hash, now=now)


def _earned_data(external_id: str, points: int, entry_id: int | None, source: Source) -> dict:
    return {"member_id": external_id, "points": points,
            "transaction_id": str(entry_id) if entry_id else None,
            "source": {"type": source.type or None, "id": str(source.id) or None}}


@dataclass(frozen=True)
class EarnRequest:
    member_id: int
    points: int
    key: str
    description: str = ""
    source: Source = NO_SOURCE


_LOCK_BALANCES_SQL = (
    "SELECT member_id, debt FROM ledger_balance WHERE member_id = ANY(%s) AND program_id = %s "
    "ORDER BY member_id FOR UPDATE"
)
# The batch's rows travel as one JSON text each (``pg_json``), read by ``json_to_recordset``:
# psycopg writes an array parameter element by element in Python, about 6 µs a row for the lots'
# seven columns, against about 1 µs for orjson and PostgreSQL's JSON parser.
_INSERT_OPERATIONS_SQL = """
INSERT INTO ledger_operation (program_id, member_id, key, kind, request_hash, result, created_at)
SELECT %s::bigint, m, k, 'earn', h, '{}', %s::timestamptz
FROM json_to_recordset(%s::json) AS v(m bigint, k text, h text)
ON CONFLICT (program_id, key) DO NOTHING RETURNING id, key
"""
_INSERT_LOTS_SQL = """
INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured,
                        expires_at, expired_at, created_at, source_type, source_id)
SELECT %s::bigint, m, o, p, r, %s::timestamptz, %s::boolean, %s::timestamptz, NULL, %s::timestamptz, st, si
FROM json_to_recordset(%s::json) AS v(m bigint, o bigint, p int, r int, st text, si text)
RETURNING id, operation_id
"""
_INSERT_ENTRIES_SQL = """
INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, operation_id,
                          description, source_type, source_id)
SELECT %s::timestamptz, %s::bigint, m, 'earn', p, l, o, d, st, si
FROM json_to_recordset(%s::json) AS v(m bigint, p int, l bigint, o bigint, d text, st text, si text)
"""
_UPDATE_BALANCES_SQL = """
UPDATE ledger_balance b SET available = b.available + v.a, pending = b.pending + v.p,
       debt = b.debt - v.d, lifetime_earned = b.lifetime_earned + v.e
FROM json_to_recordset(%s::json) AS v(m bigint, a int, p int, d int, e int)
WHERE b.member_id = v.m
"""


def points_earn_many(
    *, program: Program, requests: Sequence[EarnRequest], now: dt.datetime | None = None,
    locked: Mapping[int, Balance] | None = None,
) -> dict[str, int]:
    """Credit many earns set-based, in one transaction: a handful of statements for the
    whole batch. Keys used before are skipped (they already happened). Returns the
    operation id of each earn created, by key. ``locked``: the members' balances as the
    caller locked them in this transaction (``members_lock``) and has not moved since; their
    rows are then not locked a second time."""
    now = now or timezone.now()
    for request in requests:
        _check_points(request.points)
    matured = program.pending_days == 0
    available_at = now + dt.timedelta(days=program.pending_days)
    expires_at = now + dt.timedelta(days=program.expiry_days) if program.expiry_days else None
    hashes = [
        _request_hash("earn", r.member_id,
                      {"points": r.points, "source": [r.source.type, str(r.source.id)]})
        for r in requests
    ]
    # The lock binds on the client (planned with the ids in hand); the writes on the server,
    # where their arrays travel as parameters instead of being quoted into the SQL text.
    with transaction.atomic(), connection.cursor() as cursor, prepared_cursor() as bound:
        member_ids = sorted({r.member_id for r in requests})
        if locked is None:
            cursor.execute(_LOCK_BALANCES_SQL, [member_ids, program.pk])
            debt = dict(cursor.fetchall())
        else:
            debt = {m: locked[m].debt for m in member_ids if m in locked and locked[m].program_id == program.pk}
        if len(debt) != len(member_ids):
            missing = sorted(set(member_ids) - set(debt))[:5]
            raise InvalidPoints(f"Members {missing} do not belong to program {program.slug}.", param="member_id")
        claims = [{"m": r.member_id, "k": r.key, "h": h} for r, h in zip(requests, hashes, strict=True)]
        bound.execute(_INSERT_OPERATIONS_SQL, [program.pk, now, pg_json(claims)])
        created = dict((key, op_id) for op_id, key in bound.fetchall())
        fresh = [r for r in requests if created.get(r.key) is not None]
        if not fresh:
            return created
        seen: set[str] = set()
        fresh = [r for r in fresh if not (r.key in seen or seen.add(r.key))]
        remaining, deltas = [], {}
        for r in fresh:
            settle = min(debt[r.member_id], r.points)
            debt[r.member_id] -= settle
            remaining.append(r.points - settle)
            a, p, d, e = deltas.get(r.member_id, (0, 0, 0, 0))
            if matured:
                deltas[r.member_id] = (a + r.points, p, d + settle, e + r.points)
            else:
                deltas[r.member_id] = (a + settle, p + r.points - settle, d + settle, e + r.points)
        rows = [{"m": r.member_id, "o": created[r.key], "p": r.points, "r": left, "st": r.source.type,
                 "si": str(r.source.id)} for r, left in zip(fresh, remaining, strict=True)]
        bound.execute(_INSERT_LOTS_SQL, [program.pk, available_at, matured, expires_at, now, pg_json(rows)])
        lot_of = {op_id: lot_id for lot_id, op_id in bound.fetchall()}
        for row, r in zip(rows, fresh, strict=True):  # json_to_recordset ignores the keys it does not name
            row["l"], row["d"] = lot_of[row["o"]], r.description[:255]
        bound.execute(_INSERT_ENTRIES_SQL, [now, program.pk, pg_json(rows)])
        bound.execute(_UPDATE_BALANCES_SQL, [pg_json([{"m": m, "a": a, "p": p, "d": d, "e": e}
                                                      for m, (a, p, d, e) in deltas.items()])])
        if subscribed_endpoint_ids(program_id=program.pk, type="points.earned"):
            external = dict(Member.objects.filter(pk__in=member_ids).values_list("id", "external_id"))
            webhook_emit_many(
                program_id=program.pk, type="points.earned", now=now, keys=[r.key for r in fresh],
                items=[_earned_data(external[r.member_id], r.points, None, r.source) for r in fresh],
            )
    return created


# --- spending --------------------------------------------------------------------------


def points_redeem(
    *, member: Member, points: int, key: str, description: str = "", source: Source = NO_SOURCE,
    now: dt.datetime | None = None, savepoint: bool = True, locked: Balance | None = None,
) -> Operation:
    """Spend ``points`` at once, from the lots that expire soonest. ``locked``: the member's
    balance as ``lock_for_spending`` returned it earlier in this transaction, with nothing moved
    since; it is not locked again."""
    _check_points(points)
    now = now or timezone.now()
    with transaction.atomic(savepoint=savepoint):
        operation = _claim_and_spend(member=member, key=key, kind=EntryKind.REDEEM, points=points, now=now,
                                     description=description, source=source,
                                     balance=_spending_balance(member, now, locked, key))
    return operation


def points_hold(
    *, member: Member, points: int, key: str, description: str = "", source: Source = NO_SOURCE,
    timeout: dt.timedelta | None = None, now: dt.datetime | None = None, savepoint: bool = True,
    locked: Balance | None = None,
) -> Hold:
    """Reserve ``points`` from specific lots until captured, voided or timed out. ``locked``: as
    for ``points_redeem``."""
    _check_points(points)
    now = now or timezone.now()
    with transaction.atomic(savepoint=savepoint):
        operation = _claim_and_spend(member=member, key=key, kind=EntryKind.HOLD, points=points, now=now,
                                     description=description, source=source,
                                     balance=_spending_balance(member, now, locked, key))
        if operation.replayed:
            return operation.hold
        timeout = timeout if timeout is not None else dt.timedelta(minutes=member.program.hold_timeout_minutes)
        hold = Hold.objects.create(
            program_id=member.program_id, member=member, operation=operation, points=points,
            expires_at=now + timeout, created_at=now, description=description[:255],
        )
    return hold


def _locked_hold(hold: Hold) -> Hold:
    return Hold.objects.select_related("operation").get(pk=hold.pk)


def hold_capture(*, hold: Hold, key: str, now: dt.datetime | None = None) -> Hold:
    """Turn an open hold into a redemption. Writes no entry: the ``hold`` entry already took the points."""
    now = now or timezone.now()
    member = hold.member
    with transaction.atomic():
        operation = _claim(member=member, key=key, kind="capture", now=now, request={"hold": hold.pk})
        if operation.replayed:
            return _locked_hold(hold)
        _lock_balance(member)
        hold = _locked_hold(hold)
        if hold.status != Hold.Status.OPEN:
            raise InvalidLedgerState(f"The hold is {hold.status}, not open.", code="hold_not_open")
        if hold.expires_at <= now:
            raise InvalidLedgerState("The hold has timed out.", code="hold_expired")
        Hold.objects.filter(pk=hold.pk).update(status=Hold.Status.CAPTURED, resolved_at=now)
        _bump_balance(member, held=-hold.points, lifetime_redeemed=hold.points)
        hold.status, hold.resolved_at = Hold.Status.CAPTURED, now
    return hold


def _source_of(operation: Operation, default: Source) -> Source:
    """What the entries of ``operation`` name as their source: points given back name it too."""
    row = (Entry.objects.filter(member_id=operation.member_id, created_at__gte=operation.created_at,
                                operation_id=operation.pk)
           .exclude(source_type="").values_list("source_type", "source_id").first())
    return Source(*row) if row else default


def hold_void(
    *, hold: Hold, key: str, now: dt.datetime | None = None, description: str = "Hold released",
) -> Hold:
    """Give a hold's points back to the lots they came from."""
    now = now or timezone.now()
    member = hold.member
    with transaction.atomic():
        operation = _claim(member=member, key=key, kind="void", now=now, request={"hold": hold.pk})
        if operation.replayed:
            return _locked_hold(hold)
        balance = _lock_for_spending(member, now)
        hold = _locked_hold(hold)
        if hold.status != Hold.Status.OPEN:
            raise InvalidLedgerState(f"The hold is {hold.status}, not open.", code="hold_not_open")
        given = _give_back(
            taken_by=hold.operation, operation=operation, member=member, debt=balance.debt, now=now,
            kind=EntryKind.RELEASE, description=description,
            source=_source_of(hold.operation, Source("hold", str(hold.pk))),
        )
        Entry.objects.bulk_create(given.entries)
        Hold.objects.filter(pk=hold.pk).update(status=Hold.Status.VOIDED, resolved_at=now)
        _bump_balance(member, held=-hold.points, available=given.returned - given.expired - given.claimed,
                      debt=-given.settled, lifetime_expired=given.expired)
        _announce_expired(member, operation, given.expired, now)
        hold.status, hold.resolved_at = Hold.Status.VOIDED, now
    return hold


def _announce_expired(member: Member, operation: Operation, points: int, now: dt.datetime) -> None:
    """``points.expired`` for points given back to a lot past its expiry, which expire at once: as
    the nightly expiry announces the rest, so that a receiver's sum of them is ``lifetime_expired``."""
    if points:
        webhook_emit(program_id=member.program_id, type="points.expired", key=f"{operation.key}:expired", now=now,
                     data={"member_id": member.external_id, "points": points})


def redemption_cancel(
    *, redemption: Operation, key: str, now: dt.datetime | None = None,
    description: str = "Redemption cancelled",
) -> Operation:
    """Cancel a captured redemption (a ``redeem`` or a captured hold): its points go back to
    the lots they came from, after paying earlier reversals (see ``_give_back``); points whose
    lot has expired meanwhile expire at once."""
    now = now or timezone.now()
    member = redemption.member
    with transaction.atomic():
        operation = _claim(member=member, key=key, kind="cancel", now=now, request={"redemption": redemption.pk})
        if operation.replayed:
            return operation
        balance = _lock_for_spending(member, now)
        if redemption.kind == "hold":
            status = Hold.objects.filter(operation=redemption).values_list("status", flat=True).first()
            if status != Hold.Status.CAPTURED:
                raise InvalidLedgerState(
                    f"Only a captured redemption can be cancelled; this hold is {status}.",
                    code="redemption_not_captured",
                )
        elif redemption.kind != "redeem":
            raise InvalidLedgerState("Only a redemption can be cancelled.", code="not_a_redemption")
        given = _give_back(
            taken_by=redemption, operation=operation, member=member, debt=balance.debt, now=now,
            kind=EntryKind.REVERSE, description=description,
            source=_source_of(redemption, Source("redemption", str(redemption.pk))),
        )
        if not given.returned:
            raise InvalidLedgerState("The redemption is already cancelled.", code="redemption_already_cancelled")
        Entry.objects.bulk_create(given.entries)
        _bump_balance(member, available=given.returned - given.expired - given.claimed, debt=-given.settled,
                      lifetime_redeemed=-given.returned, lifetime_expired=given.expired)
        _announce_expired(member, operation, given.expired, now)
        operation.result = {"redemption": redemption.pk, "returned": given.returned, "expired": given.expired,
                            "refunds_paid": given.claimed + given.settled}
        Operation.objects.filter(pk=operation.pk).update(result=operation.result)
    return operation


# --- corrections -----------------------------------------------------------------------


def points_reverse(
    *, earn: Operation, points: int, key: str, description: str = "", source: Source = NO_SOURCE,
    now: dt.datetime | None = None,
) -> Operation:
    """Take back ``points`` of an earn: from its lot while it has them; then, up to what expired
    from that lot, nothing (those points are gone already: ``expired``); then from the member's
    other spendable points. Where the program allows negative balances, the rest comes from the
    member's points not yet available, and what is left after that becomes debt (the balance goes
    below zero), paid by the next points the member gets. Elsewhere the rest is ``uncollected``,
    and ``claimed`` on the points the member's open holds and standing redemptions took (this
    earn's first): if they come back, by a void or a cancel, they pay it."""
    _check_points(points)
    now = now or timezone.now()
    member = earn.member
    with transaction.atomic():
        operation = _claim(member=member, key=key, kind="reverse", now=now,
                           request={"earn": earn.pk, "points": points, "source": [source.type, str(source.id)]})
        if operation.replayed:
            return operation
        _lock_for_spending(member, now)
        if earn.kind != "earn":
            raise InvalidLedgerState("Only an earn can be reversed.", code="not_an_earn")
        lot = Lot.objects.get(operation=earn)
        earlier = list(Operation.objects.filter(member_id=member.pk, kind="reverse", result__earn=earn.pk)
                       .values_list("result", flat=True))
        already = sum(result["requested"] for result in earlier)
        if already + points > lot.points:
            raise ReverseExceedsEarned(
                f"{lot.points - already} of the {lot.points} points earned can still be reversed.",
                param="points",
            )
        from_lot = min(points, lot.remaining)
        _take_from_lots({lot.pk: from_lot})
        deltas = {"available": -from_lot} if lot.matured else {"pending": -from_lot}
        expired = 0
        if from_lot < points and lot.expires_at is not None and lot.expires_at <= now:
            expired = min(points - from_lot,
                          max(_expired_from(lot) - sum(result.get("expired", 0) for result in earlier), 0))
        rest = points - from_lot - expired
        balance = Balance.objects.get(member_id=member.pk)
        spendable_now = max(balance.available + deltas.get("available", 0), 0)
        from_others = min(rest, spendable_now)
        if from_others:
            _spend_lots(operation=operation, member=member, points=from_others)
            deltas["available"] = deltas.get("available", 0) - from_others
        shortfall = rest - from_others
        uncollected = claimed = 0
        if shortfall and member.program.allow_negative_balance:
            from_pending = min(shortfall, balance.pending + deltas.get("pending", 0))
            if from_pending:
                _spend_lots(operation=operation, member=member, points=from_pending, pending=True)
                deltas["pending"] = deltas.get("pending", 0) - from_pending
            deltas["available"] = deltas.get("available", 0) - (shortfall - from_pending)
            deltas["debt"] = shortfall - from_pending
        elif shortfall:
            uncollected = shortfall
            claimed = _claim_spent(member=member, lot=lot, points=uncollected)
        taken = points - expired - uncollected
        if taken:
            _entry(member=member, operation=operation, kind=EntryKind.REVERSE, points=-taken, now=now,
                   description=description, source=source, lot_id=lot.pk).save(force_insert=True)
        _bump_balance(member, **deltas)
        operation.result = {"earn": earn.pk, "requested": points, "reversed": taken, "uncollected": uncollected,
                            "claimed": claimed, "expired": expired}
        Operation.objects.filter(pk=operation.pk).update(result=operation.result)
    return operation


def _expired_from(lot: Lot) -> int:
    """How many of ``lot``'s points have expired: by the expiry job, or at once when given back late."""
    total = (Entry.objects.filter(member_id=lot.member_id, created_at__gte=lot.expires_at, lot_id=lot.pk,
                                  kind=EntryKind.EXPIRE)
             .aggregate(total=Sum("points"))["total"])
    return -(total or 0)


def _claim_spent(*, member: Member, lot: Lot, points: int) -> int:
    """Claim up to ``points`` for a reversal on what the member's open holds and standing
    redemptions took, from ``lot`` first, then in the order they were taken. Returns the points claimed."""
    candidates = (
        Allocation.objects.filter(operation__member_id=member.pk, operation__kind__in=["redeem", "hold"],
                                  returned__lt=F("points"), claimed__lt=F("points"))
        .order_by(Case(When(lot_id=lot.pk, then=0), default=1), "id")
    )
    left, claimed = points, []
    for allocation in candidates.iterator(chunk_size=100):  # read only as far as the claim goes
        n = min(left, allocation.points - allocation.claimed)
        allocation.claimed += n
        claimed.append(allocation)
        left -= n
        if not left:
            break
    Allocation.objects.bulk_update(claimed, ["claimed"])
    return points - left


def points_adjust(
    *, member: Member, points: int, key: str, reason: str, now: dt.datetime | None = None,
) -> Operation:
    """A manual correction: a credit becomes a new lot (expiring by the program's policy),
    a debit spends the soonest-expiring points and cannot overdraw the balance."""
    _check_points(points, allow_negative=True)
    now = now or timezone.now()
    source = Source("adjustment", key)
    with transaction.atomic():
        operation = _claim(member=member, key=key, kind="adjust", now=now,
                           request={"points": points, "reason": reason})
        if operation.replayed:
            return operation
        balance = _lock_for_spending(member, now)
        if points > 0:
            lot, deltas = _new_lot(operation=operation, member=member, points=points, now=now,
                                   debt=balance.debt, source=source)
            lot_id = lot.pk
        else:
            if balance.available < -points:
                raise InsufficientPoints(
                    f"{-points} points to deduct, {max(balance.available, 0)} available.", param="points"
                )
            _spend_lots(operation=operation, member=member, points=-points)
            deltas, lot_id = {"available": points}, None
        entry = _entry(member=member, operation=operation, kind=EntryKind.ADJUST, points=points, now=now,
                       description=reason, source=source, lot_id=lot_id)
        entry.save(force_insert=True)
        _bump_balance(member, **deltas)
        if points > 0:  # credited: announced as any credit is (its lot is announced again when it expires)
            webhook_emit(program_id=member.program_id, type="points.earned", key=key, now=now,
                         data=_earned_data(member.external_id, points, entry.pk, source))
    return operation
