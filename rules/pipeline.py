"""The event pipeline: store every event, qualify it, post its awards.

Single events are processed inline, in the request's transaction. Batches are written in
bulk as ``received`` and processed by workers (``events_process``), set-based: one lock pass
over the members' balances in member order, one batch earn, one bulk status update. The
inbound table is the durable queue; a sweeper re-enqueues what waits too long.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from accounts.models import Member, Partner, Program
from accounts.services import member_create, member_inactive_message
from ledger import services as ledger
from ledger.models import Balance, Operation
from ledger.selectors import balance_read
from ledger.services import EarnRequest, Source
from loyalty.api.renderers import JSONRenderer
from loyalty.db import out_of_range, pg_int_array, prepared_cursor, prepared_update
from loyalty.jsontext import MESSAGES, pg_json, unstorable
from rules import engine, metrics, refunds
from rules.models import EventType, InboundEvent
from rules.validation import CleanEvent, EventInvalid, MemberNotFound, event_clean

logger = logging.getLogger(__name__)


_schemas: dict[int, tuple[int, dict[str, dict]]] = {}


def custom_schemas(program: Program) -> dict[str, dict]:
    """The program's own event types' JSON Schemas; cached by the program's rules version,
    which every save of an event type moves."""
    cached = _schemas.get(program.pk)
    if cached is not None and cached[0] == program.rules_version:
        return cached[1]
    types = EventType.objects.filter(program=program).values_list("name", "schema")
    schemas = {name: schema or {} for name, schema in types}
    _schemas[program.pk] = (program.rules_version, schemas)
    return schemas


def member_context(member: Member, balance) -> dict:
    return {
        "external_id": member.external_id,
        "email": member.email,
        "attributes": member.attributes or {},
        "tier": member.tier,
        "status": member.status,
        "enrolled_at": member.enrolled_at,
        "lifetime_earned": balance.lifetime_earned if balance else 0,
        "lifetime_redeemed": balance.lifetime_redeemed if balance else 0,
        "available": balance.available if balance else 0,
    }


def program_context(program: Program) -> dict:
    return {"slug": program.slug, "name": program.name, "points_name": program.points_name}


def event_context(clean: CleanEvent) -> dict:
    # In UTC, whatever offset the partner wrote: a rule's ``occurred_at.getHours()`` is UTC's hour
    # (as CEL's timestamps say; ``getHours("Europe/Lisbon")`` for another zone) on every path, and
    # the batch worker reads the time back from the database in UTC.
    occurred_at = clean.occurred_at.astimezone(dt.UTC) if clean.occurred_at is not None else None
    return {"id": clean.event_id, "type": clean.type, "occurred_at": occurred_at, "properties": clean.properties}


def earn_key(event: InboundEvent) -> str:
    return f"event:{event.pk}"


def _error(exc: EventInvalid) -> dict:
    return {"type": exc.error_type, "code": exc.code, "message": exc.message, "param": exc.param}


def _resolve_member(program: Program, external_id: str) -> Member:
    member = Member.objects.by_external_id(program.pk, external_id)
    if member is not None:
        return member
    if not program.enroll_on_first_event:
        raise MemberNotFound(f"No member {external_id!r} in this program.", param="member_id")
    try:
        return member_create(program=program, external_id=external_id)
    except Exception:  # enrolled concurrently by another event
        return Member.objects.get(program=program, external_id=external_id)


def _lock_member(program: Program, event: InboundEvent, external_id: str) -> tuple[Member, Balance | None]:
    """The event's member (enrolled now if the program does that) and its balance row, locked:
    one statement for a member who has both."""
    found = ledger.member_lock(program.pk, external_id)
    if found is None:
        member = _resolve_member(program, external_id)
        found = member, ledger.members_lock([member.pk]).get(member.pk)
    member, balance = found
    member.program = program  # the ledger reads the program's expiry policy from here
    event.member = member
    return member, balance


def rule_usage(rules: list[engine.CompiledRule], member_ids: Sequence[int]) -> dict[int, dict]:
    """What the capped rules gave each member so far, by (rule id, period key)."""
    capped = [rule.id for rule in rules if rule.cap_period]
    usage: dict[int, dict] = {member_id: {} for member_id in member_ids}
    if capped:
        with connection.cursor() as cursor:  # SQL, not the ORM: its IN lists cost more than the query
            cursor.execute(
                "SELECT rule_id, member_id, period, points, times FROM rules_ruleusage "
                "WHERE rule_id = ANY(%s::bigint[]) AND member_id = ANY(%s::bigint[])",
                [capped, list(member_ids)],
            )
            for rule_id, member_id, period, points, times in cursor.fetchall():
                usage[member_id][(rule_id, period)] = (points, times)
    return usage


def _save_usage(increments: dict[tuple[int, int, str], tuple[int, int]]) -> None:
    if not increments:
        return
    rows = [{"r": r, "m": m, "p": p, "pt": pt, "t": t} for (r, m, p), (pt, t) in increments.items()]
    with prepared_cursor() as cursor:
        cursor.execute(
            "INSERT INTO rules_ruleusage (rule_id, member_id, period, points, times) "
            "SELECT r, m, p, pt, t FROM jsonb_to_recordset(%s::jsonb) "
            "AS x(r bigint, m bigint, p text, pt bigint, t int) "
            "ON CONFLICT (rule_id, member_id, period) DO UPDATE "
            "SET points = rules_ruleusage.points + EXCLUDED.points, times = rules_ruleusage.times + EXCLUDED.times",
            [pg_json(rows)],
        )


# --- single events, inline --------------------------------------------------------------


def keepable(payload: object) -> tuple[object, EventInvalid | None]:
    """The payload as it can be stored, and why it is invalid if it cannot be stored as sent.

    PostgreSQL cannot store a NUL or a lone surrogate, and the payload column is never SQL
    NULL: such an event is kept as its JSON text (escaped, so nothing is lost) and rejected."""
    reason = "invalid_event" if payload is None else unstorable(payload)
    if reason is None:
        return payload, None
    message = MESSAGES.get(reason, "An event must be a JSON object.")
    return {"unstorable_json": json.dumps(payload)}, EventInvalid(message, code=reason)


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _event_id(payload: object) -> str | None:
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 255 else None


@dataclass
class Submission:
    event: InboundEvent
    created: bool
    balance: dict | None = None  # a processed event's member's balance as the event left it


def event_submit(*, program: Program, partner: Partner | None, payload: object) -> Submission:
    """Store one event and, when it is valid, qualify and post it before returning.

    The same ``event_id`` again returns the first event untouched (``created=False``), except
    that a ``rejected`` event may be sent again with the same id and is then tried anew.
    """
    now = timezone.now()
    payload, unstorable = keepable(payload)
    event_id = None if unstorable else _event_id(payload)
    try:
        with transaction.atomic(durable=True):
            event, created = _store_one(program, partner, payload, event_id, now)
            if not created and event.status != InboundEvent.Status.REJECTED:
                return Submission(event, False)
            event.payload, event.received_at = payload, now
            _process_inline(program, event, now, invalid=unstorable, keep_balance=True)
            balance = getattr(event, "balance", None)
    except OperationalError:
        raise  # a dropped connection or a deadlock: nothing was kept, the partner's retry is answered anew
    except Exception as exc:
        # Anything else (a bug, or points beyond what the ledger stores) rolled back the event with
        # its processing: keep it as ``failed`` with the reason, then let the caller answer the error.
        logger.exception("event %r of program %s failed", event_id, program.pk)
        event = _keep_failed(program, partner, payload, event_id, now, exc)
        metrics.observe(program, [event], now)
        raise
    metrics.observe(program, [event], now)
    return Submission(event, True, balance)


def failure_error(exc: Exception) -> dict:
    """The ``error`` of an event whose processing raised ``exc``."""
    if out_of_range(exc):
        return {"type": "invalid_request_error", "code": "value_out_of_range", "param": None,
                "message": "The points this event would earn, or the balance it would leave, are out of range."}
    return {"type": "api_error", "code": "processing_failed", "message": str(exc)[:500], "param": None}


def _keep_failed(program, partner, payload, event_id, now, exc) -> InboundEvent:
    with transaction.atomic(durable=True):
        event, created = _store_one(program, partner, payload, event_id, now)
        if not created and event.status != InboundEvent.Status.REJECTED:
            return event  # a twin request stored it meanwhile
        event.payload, event.received_at = payload, now
        event.status, event.error, event.processed_at = InboundEvent.Status.FAILED, failure_error(exc), now
        event.awards, event.trace, event.points = [], [], 0
        _name_from_payload(event)
        prepared_update(event)
    return event


def _name_from_payload(event: InboundEvent) -> None:
    """The type and member an event that was not processed names, as far as its payload says."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    if not event.type and isinstance(payload.get("type"), str):
        event.type = payload["type"][:64]
    if not event.member_external_id and isinstance(payload.get("member_id"), str):
        event.member_external_id = payload["member_id"][:255]


def _store_one(program, partner, payload, event_id, now) -> tuple[InboundEvent, bool]:
    if event_id is None:
        return InboundEvent.objects.create(program=program, partner=partner, payload=payload, received_at=now), True
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rules_inboundevent (program_id, partner_id, event_id, type, member_external_id, order_id, "
            "payload, status, awards, trace, points, received_at) VALUES (%s, %s, %s, '', '', '', %s, 'received', "
            "'[]', '[]', 0, %s) ON CONFLICT (program_id, event_id) DO NOTHING RETURNING id",
            [program.pk, partner.pk if partner else None, event_id, json.dumps(payload), now],
        )
        row = cursor.fetchone()
    if row:
        # The row as just inserted, without reading it back.
        event = InboundEvent(
            id=row[0], program=program, partner=partner, event_id=event_id, type="", member_external_id="",
            order_id="", payload=payload, status=InboundEvent.Status.RECEIVED, awards=[], trace=[], points=0,
            received_at=now,
        )
        event._state.adding = False
        return event, True
    return InboundEvent.objects.select_for_update().get(program=program, event_id=event_id), False


def _process_inline(program: Program, event: InboundEvent, now: dt.datetime,
                    invalid: EventInvalid | None = None, *, keep_balance: bool = False) -> None:
    """Validate, qualify and post one stored event, inside the caller's transaction. With
    ``keep_balance``, a processed event keeps the balance it left (``balance_after``)."""
    try:
        if invalid:
            raise invalid
        clean = event_clean(event.payload, custom_schemas=custom_schemas(program), now=now,
                            max_age_days=program.event_max_age_days, received_at=event.received_at)
        event.type, event.member_external_id = clean.type, clean.member_id
        event.occurred_at, event.order_id = clean.occurred_at, clean.order_id
        if clean.type == "refund":
            # A refund is rejected after it has read and locked (purchase_not_found...): its
            # savepoint undoes what it did, an enrollment included.
            with transaction.atomic():
                member, _balance = _lock_member(program, event, clean.member_id)
                refunds.refund_post(program=program, event=event, clean=clean, member=member, now=now)
        else:
            # Nothing is written before the one rejection left (an unknown member), and any other
            # error rolls the caller's whole transaction back: no savepoint, two round trips fewer.
            member, balance = _lock_member(program, event, clean.member_id)
            if member.status != Member.Status.ACTIVE:  # nothing written yet: a rejection needs no savepoint
                raise EventInvalid(member_inactive_message(member), param="member_id", code="member_inactive")
            rules = engine.rules_for(program)
            usage = rule_usage(rules, [member.pk])[member.pk] if any(r.cap_period for r in rules) else {}
            qualification = engine.qualify(
                rules=rules, event=event_context(clean), member=member_context(member, balance),
                program=program_context(program), now=now, usage=usage,
            )
            if qualification.points:
                ledger.points_earn(member=member, points=qualification.points, key=earn_key(event),
                                   description=f"{clean.type} {clean.event_id}",
                                   source=Source("event", clean.event_id), now=now, savepoint=False)
            _save_usage({(r, member.pk, p): v for (r, p), v in
                         engine.usage_increments(rules, qualification, clean.occurred_at).items()})
            event.awards = [award.as_dict() for award in qualification.awards]
            event.trace, event.points = qualification.trace, qualification.points
        event.status, event.error, event.processed_at = InboundEvent.Status.PROCESSED, None, now
    except EventInvalid as exc:
        event.status, event.error, event.processed_at = InboundEvent.Status.REJECTED, _error(exc), now
        event.awards, event.trace, event.points = [], [], 0
        if event.type == "refund" and event.member_id is not None and not Member.objects.filter(
                pk=event.member_id).exists():
            event.member = None  # enrolled in the refund's savepoint, which its rejection undid
        _name_from_payload(event)
    if keep_balance and event.status == InboundEvent.Status.PROCESSED and event.member_id is not None:
        # Read under the member's lock: the balance this event left, not a later one's; kept as
        # the API writes it (its times as text), to be answered again as it was.
        balance = balance_read(event.member)
        # Kept as its text (a JSON string): jsonb would give its keys back in another order.
        event.balance_after, event.balance = JSONRenderer().render(balance).decode(), balance
    prepared_update(event)


# --- batches ----------------------------------------------------------------------------


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)
    received_ids: list[int] = field(default_factory=list)


_BATCH_INSERT_SQL = """
INSERT INTO rules_inboundevent (program_id, partner_id, event_id, type, member_external_id, member_id,
    occurred_at, order_id, payload, status, error, awards, trace, points, received_at, processed_at)
SELECT %(program)s::bigint, %(partner)s::bigint, x.event_id, x.type, x.member_external_id, x.member_id,
       x.occurred_at, x.order_id, x.payload, x.status, x.error, '[]', '[]', 0, %(now)s::timestamptz,
       CASE WHEN x.status = 'rejected' THEN %(now)s::timestamptz END
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(
    idx int, event_id text, type text, member_external_id text, member_id bigint, occurred_at timestamptz,
    order_id text, payload jsonb, status text, error jsonb)
ORDER BY x.idx
ON CONFLICT (program_id, event_id) DO UPDATE SET
    partner_id = EXCLUDED.partner_id, type = EXCLUDED.type, member_external_id = EXCLUDED.member_external_id,
    member_id = EXCLUDED.member_id, occurred_at = EXCLUDED.occurred_at, order_id = EXCLUDED.order_id,
    payload = EXCLUDED.payload, status = EXCLUDED.status, error = EXCLUDED.error, awards = '[]', trace = '[]',
    points = 0, received_at = EXCLUDED.received_at, processed_at = EXCLUDED.processed_at
WHERE rules_inboundevent.status = 'rejected'
RETURNING id, event_id, status
"""


def events_submit_batch(*, program: Program, partner: Partner | None, payloads: list) -> BatchResult:
    """Validate and store a batch in bulk; valid events are processed by workers after commit.

    An ``event_id`` seen before is a duplicate, except that a ``rejected`` event sent again is
    stored anew and tried again (as on the single endpoint), in the same batch too: the rejected
    copy is then kept without its id, as one whose id was taken."""
    now = timezone.now()
    schemas = custom_schemas(program)
    result = BatchResult()
    rows: list[dict] = []
    seen: dict[str, dict | None] = {}  # event_id -> its row if it was rejected here, else None
    cleaned: list[tuple[int, CleanEvent]] = []
    for index, payload in enumerate(payloads):
        payload, unstorable = keepable(payload)
        raw_id = payload.get("event_id") if isinstance(payload, dict) and not unstorable else None
        event_id = _event_id(payload) if not unstorable else None
        if event_id is not None and event_id in seen:
            rejected_row = seen[event_id]
            if rejected_row is None:
                result.duplicates += 1
                continue
            rejected_row["event_id"] = None  # sent again after its rejection: kept, without the id
        if event_id is not None:
            seen[event_id] = None
        try:
            if unstorable:
                raise unstorable
            cleaned.append((index, event_clean(payload, custom_schemas=schemas, now=now,
                                               max_age_days=program.event_max_age_days)))
        except EventInvalid as exc:
            result.rejected.append({"index": index, "event_id": raw_id if isinstance(raw_id, str) else None,
                                    "error": _error(exc)})
            # Kept with what it says of itself, as far as it can be read, so the inbox finds it by type.
            said = payload if isinstance(payload, dict) and not unstorable else {}
            rows.append({"idx": index, "event_id": event_id, "type": _text(said.get("type"), 64),
                         "member_external_id": _text(said.get("member_id"), 255), "member_id": None,
                         "occurred_at": None, "order_id": "", "payload": payload,
                         "status": "rejected", "error": _error(exc)})
            if event_id is not None:
                seen[event_id] = rows[-1]
    members = Member.objects.ids_by_external_id(program.pk, {clean.member_id for _i, clean in cleaned})
    for index, clean in cleaned:
        member_id = members.get(clean.member_id)
        if member_id is None and program.enroll_on_first_event:
            member_id = _resolve_member(program, clean.member_id).pk
            members[clean.member_id] = member_id
        status, error = "received", None
        if member_id is None:
            error = _error(MemberNotFound(f"No member {clean.member_id!r} in this program.", param="member_id"))
            status = "rejected"
            result.rejected.append({"index": index, "event_id": clean.event_id, "error": error})
        rows.append({"idx": index, "event_id": clean.event_id, "type": clean.type,
                     "member_external_id": clean.member_id, "member_id": member_id,
                     "occurred_at": clean.occurred_at.isoformat(), "order_id": clean.order_id,
                     "payload": payloads[index], "status": status, "error": error})
    rows.sort(key=lambda row: row["idx"])
    result.rejected.sort(key=lambda rejected: rejected["index"])  # the batch's order, as the partner sent it
    with transaction.atomic(durable=True):
        with prepared_cursor() as cursor:  # the rows as a parameter, not quoted into the SQL text
            cursor.execute(_BATCH_INSERT_SQL, {"program": program.pk, "partner": partner.pk if partner else None,
                                               "now": now, "rows": pg_json(rows)})
            inserted = cursor.fetchall()
        stored_ids = {event_id for _pk, event_id, _status in inserted}
        # A rejected payload whose event_id was taken is still kept, without the id.
        lost = [dict(row, event_id=None) for row in rows
                if row["status"] == "rejected" and row["event_id"] is not None and row["event_id"] not in stored_ids]
        if lost:
            with prepared_cursor() as cursor:
                cursor.execute(_BATCH_INSERT_SQL, {"program": program.pk, "partner": partner.pk if partner else None,
                                                   "now": now, "rows": pg_json(lost)})
        result.received_ids = [pk for pk, _event_id, status in inserted if status == "received"]
        result.accepted = len(result.received_ids)
        result.duplicates += sum(1 for row in rows if row["status"] == "received" and row["event_id"] not in stored_ids)
        ids = list(result.received_ids)
        if ids:  # what the sweeper finds them by, should their message be lost
            with prepared_cursor() as cursor:
                cursor.execute("INSERT INTO rules_eventbatch (event_ids, created_at) "
                               "VALUES (%s::bigint[], %s::timestamptz)", [pg_int_array(ids), now])
        transaction.on_commit(lambda: enqueue(ids))
    # What was stored: every rejected row, and the received ones whose id was taken here (a
    # duplicate, answered as one, was not received again).
    stored = [row for row in rows if row["status"] == "rejected" or row["event_id"] in stored_ids]
    metrics.count_received(program, stored)
    return result


def enqueue(event_ids: list[int], chunk: int = 250) -> None:
    from rules.tasks import process_events

    for start in range(0, len(event_ids), chunk):
        process_events.delay(event_ids[start:start + chunk])


def events_process(event_ids: Sequence[int], *, wait_for_members: bool = False) -> int:
    """Process waiting events set-based; safe to run twice and concurrently (SKIP LOCKED).
    Returns how many events were processed here.

    A member whose balance another transaction holds (another worker's batch has events of the
    same member) is not waited for: that member's events stay ``received``, and once the rest
    is committed a second pass takes them, waiting for the lock. Waiting first would idle this
    worker for the whole of the other batch."""
    now = timezone.now()
    busy: list[WaitingEvent] = []
    try:
        with transaction.atomic(durable=True):
            events = _waiting(event_ids)
            if not events:
                return 0
            balances = ledger.members_lock([event.member_id for event in events], skip_locked=not wait_for_members,
                                           figures=True)
            if not wait_for_members:
                busy = [event for event in events if event.member_id not in balances]
                events = [event for event in events if event.member_id in balances]
            done = _process_set(events, balances, now)
    except Exception:
        logger.exception("batch of %d events failed; processing them one by one", len(event_ids))
        return sum(_process_alone(pk) for pk in event_ids)
    for program, group in _by_program(done).items():
        metrics.observe(program, group, now)
    if busy:
        return len(done) + events_process([event.pk for event in busy], wait_for_members=True)
    return len(done)


@dataclass(slots=True)
class WaitingMember:
    """What qualification reads of a member (``member_context``)."""

    pk: int
    external_id: str
    email: str
    attributes: dict
    tier: str
    status: str
    enrolled_at: dt.datetime


@dataclass(slots=True)
class WaitingEvent:
    """A ``received`` event as the batch worker reads it: the columns it needs, locked, without
    building a model (and its member's) per event. Results are written back by ``_bulk_mark``."""

    pk: int
    program_id: int
    member_id: int | None
    event_id: str
    type: str
    member_external_id: str
    occurred_at: dt.datetime | None
    received_at: dt.datetime
    properties: dict
    member: WaitingMember | None
    program: Program | None = None
    status: str = InboundEvent.Status.RECEIVED
    awards: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    points: int = 0
    processed_at: dt.datetime | None = None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(column: str) -> str:
    """A timestamp as integer microseconds since the epoch: exact, and turned into a datetime far
    faster than the text PostgreSQL would otherwise send."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


def _from_micros(value: int | None) -> dt.datetime | None:
    return None if value is None else _EPOCH + dt.timedelta(microseconds=value)


_WAITING_SQL = f"""
SELECT e.id, e.program_id, e.member_id, e.event_id, e.type, e.member_external_id, {_micros("e.occurred_at")},
       {_micros("e.received_at")}, e.payload -> 'properties',
       m.external_id, m.email, m.attributes, m.tier, m.status, {_micros("m.enrolled_at")}
FROM rules_inboundevent e LEFT JOIN accounts_member m ON m.id = e.member_id
WHERE e.id = ANY(%(ids)s::bigint[]) AND e.status = 'received'
ORDER BY e.occurred_at, e.id
FOR UPDATE OF e SKIP LOCKED
"""


def _json(text: str | None):
    return json.loads(text) if isinstance(text, str) else text


def _waiting(event_ids: Sequence[int]) -> list[WaitingEvent]:
    """The events among ``event_ids`` still ``received`` and not locked by another worker,
    locked, oldest first, each with its program."""
    # Not prepared: a generic plan cannot see how few ids the array holds and may scan every
    # waiting event; planned with the ids in hand, it is a primary key lookup.
    with connection.cursor() as cursor:
        cursor.execute(_WAITING_SQL, {"ids": list(event_ids)})
        rows = cursor.fetchall()
    events = []
    for (pk, program_id, member_id, event_id, type_, external_id, occurred, received, properties,
         m_external, m_email, m_attributes, m_tier, m_status, m_enrolled) in rows:
        member = None if m_external is None else WaitingMember(
            member_id, m_external, m_email, _json(m_attributes) or {}, m_tier, m_status, _from_micros(m_enrolled))
        events.append(WaitingEvent(pk, program_id, member_id, event_id, type_, external_id, _from_micros(occurred),
                                   _from_micros(received), _json(properties) or {}, member))
    programs = Program.objects.in_bulk({event.program_id for event in events})
    for event in events:
        event.program = programs[event.program_id]
    return events


def _by_program(events: list[InboundEvent]) -> dict[Program, list[InboundEvent]]:
    groups: dict[int, tuple[Program, list]] = {}
    for event in events:
        groups.setdefault(event.program_id, (event.program, []))[1].append(event)
    return {program: group for program, group in groups.values()}


def _process_set(events: list[WaitingEvent], balances: dict, now: dt.datetime) -> list[WaitingEvent | InboundEvent]:
    """Qualify and post ``events``, whose members' balances the caller has locked."""
    done: list[InboundEvent] = []
    alone_later: list[WaitingEvent] = []
    for program, group in _by_program(events).items():
        rules = engine.rules_for(program)
        usage = rule_usage(rules, list({event.member_id for event in group}))
        requests, increments = [], {}
        matured = program.pending_days == 0
        # Each member as the batch's earlier events left it: its figures moved by their earns, as
        # the earns below will move its balance, so that a rule reading them sees what it would
        # have seen had the events come one by one. member_id -> (context, debt).
        members: dict[int, tuple[dict, int]] = {}
        one_by_one: set[int | None] = set()  # members with a refund in the batch, from it on
        for event in group:
            clean = CleanEvent(event.event_id, event.type, event.member_external_id, event.occurred_at,
                               event.properties)
            if (event.type == "refund" or event.member_id in one_by_one
                    or (event.member is not None and event.member.status != Member.Status.ACTIVE)):
                # Posted (or, for a suspended or closed member, rejected) as the single endpoint does
                # it; after a refund, the member's later events too, in order: the refund may give
                # caps back that they would use.
                if event.type == "refund":
                    one_by_one.add(event.member_id)
                alone_later.append(event)
                continue
            member_usage = usage[event.member_id]
            if event.member_id not in members:
                balance = balances.get(event.member_id)
                members[event.member_id] = member_context(event.member, balance), balance.debt if balance else 0
            context, debt = members[event.member_id]
            qualification = engine.qualify(
                rules=rules, event=event_context(clean), program=program_context(program), now=now,
                member=context, usage=member_usage,
            )
            members[event.member_id] = context, _moved_by_earn(context, debt, qualification.points, matured)
            for (rule_id, period), (points, times) in engine.usage_increments(
                rules, qualification, clean.occurred_at
            ).items():
                old = member_usage.get((rule_id, period), (0, 0))
                member_usage[(rule_id, period)] = (old[0] + points, old[1] + times)
                inc = increments.get((rule_id, event.member_id, period), (0, 0))
                increments[(rule_id, event.member_id, period)] = (inc[0] + points, inc[1] + times)
            if qualification.points:
                requests.append(EarnRequest(event.member_id, qualification.points, earn_key(event),
                                            f"{event.type} {event.event_id}", Source("event", event.event_id)))
            event.awards = [award.as_dict() for award in qualification.awards]
            event.trace, event.points = qualification.packed, qualification.points  # as stored
            event.status, event.processed_at = InboundEvent.Status.PROCESSED, now
            done.append(event)
        if requests:
            ledger.points_earn_many(program=program, requests=requests, now=now, locked=balances)
        _save_usage(increments)
    _bulk_mark(done)
    for waiting in alone_later:  # locked above
        event = InboundEvent.objects.select_related("member").get(pk=waiting.pk)
        _process_inline(waiting.program, event, now)
        done.append(event)
    return done


def _moved_by_earn(context: dict, debt: int, points: int, matured: bool) -> int:
    """``context``'s figures moved by an earn of ``points``, as ``ledger.points_earn_many`` moves
    the balance (the member's debt is settled first); the debt left."""
    settle = min(debt, points)
    context["lifetime_earned"] += points
    context["available"] += points if matured else settle
    return debt - settle


def _bulk_mark(events: list[WaitingEvent]) -> None:
    """Store the results of ``events``, processed by ``_process_set``: their traces already packed."""
    if not events:
        return
    rows = [{"id": e.pk, "awards": e.awards, "trace": e.trace, "points": e.points} for e in events]
    with prepared_cursor() as cursor:  # the results as a parameter, not quoted into the SQL text
        cursor.execute(
            "UPDATE rules_inboundevent e SET status = 'processed', error = NULL, awards = x.awards, "
            "trace = x.trace, points = x.points, processed_at = %s::timestamptz "
            "FROM jsonb_to_recordset(%s::jsonb) AS x(id bigint, awards jsonb, trace jsonb, points int) "
            "WHERE e.id = x.id",
            [events[0].processed_at, pg_json(rows, default=str)],
        )


def _process_alone(pk: int) -> int:
    """Process one event in its own transaction; a failure marks it ``failed`` with the reason."""
    now = timezone.now()
    try:
        with transaction.atomic(durable=True):
            event = (InboundEvent.objects.select_for_update(skip_locked=True, of=("self",))
                     .filter(pk=pk, status=InboundEvent.Status.RECEIVED).select_related("program").first())
            if event is None:
                return 0
            _process_inline(event.program, event, now)
        metrics.observe(event.program, [event], now)
        return 1
    except OperationalError:
        # A dropped connection or a deadlock: leave the event ``received`` for the sweeper.
        logger.warning("event %s hit a transient database error; the sweeper will retry it", pk, exc_info=True)
        return 0
    except Exception as exc:  # a bug or bad data: keep the event, say why, move on
        logger.exception("event %s failed", pk)
        marked = InboundEvent.objects.filter(pk=pk, status=InboundEvent.Status.RECEIVED).update(
            status=InboundEvent.Status.FAILED, processed_at=now, error=failure_error(exc))
        if marked:
            failed = InboundEvent.objects.select_related("program").get(pk=pk)
            metrics.observe(failed.program, [failed], now)
        return 0


def event_reprocess(*, event: InboundEvent) -> InboundEvent:
    """Try a rejected or failed event again (the admin's "reprocess"). An event kept without an
    ``event_id`` (it had none, or its id belongs to another event) is left as it is: nothing could
    tell its second processing from its first, nor from the event that holds its id."""
    if event.status not in (InboundEvent.Status.REJECTED, InboundEvent.Status.FAILED) or event.event_id is None:
        return event
    now = timezone.now()
    with transaction.atomic(durable=True):
        event = InboundEvent.objects.select_for_update().select_related("program").get(pk=event.pk)
        if event.status not in (InboundEvent.Status.REJECTED, InboundEvent.Status.FAILED):
            return event  # another reprocess got there first: counted there
        _process_inline(event.program, event, now)
    metrics.observe(event.program, [event], now)
    return event


def events_sweep(*, older_than: dt.timedelta = dt.timedelta(seconds=30), limit: int = 20000) -> int:
    """Re-enqueue events left ``received`` too long (a lost message, a dead worker), at most
    ``limit`` at a time, oldest batches first. They are found through the batches that stored them
    (``EventBatch``); a batch none of whose events still waits is forgotten."""
    cutoff = timezone.now() - older_than
    waiting: list[int] = []
    done: list[int] = []
    after: tuple[dt.datetime, int] = (dt.datetime.min.replace(tzinfo=dt.UTC), 0)
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        while len(waiting) < limit:  # a page of batches at a time: a backlog is never read whole
            cursor.execute(
                "SELECT id, created_at, event_ids FROM rules_eventbatch WHERE created_at < %s "
                "AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [cutoff, *after, _SWEEP_PAGE],
            )
            page = cursor.fetchall()
            cursor.execute("SELECT id FROM rules_inboundevent WHERE id = ANY(%s::bigint[]) AND status = 'received'",
                           [pg_int_array([event_id for _b, _c, event_ids in page for event_id in event_ids])])
            received = {row[0] for row in cursor.fetchall()}  # one statement for the page's batches
            for batch_id, created_at, event_ids in page:
                still = sorted(event_id for event_id in event_ids if event_id in received)
                if still:
                    waiting += still
                else:
                    done.append(batch_id)
                after = (created_at, batch_id)
            if len(page) < _SWEEP_PAGE:
                break
        if done:
            cursor.execute("DELETE FROM rules_eventbatch WHERE id = ANY(%s::bigint[])", [pg_int_array(done)])
    ids = waiting[:limit]
    if ids:
        logger.info("sweeper: re-enqueueing %d waiting events", len(ids))
        enqueue(ids)
    return len(ids)


_SWEEP_PAGE = 100  # batches read by the sweeper at a time



def purchase_earn(program: Program, purchase: InboundEvent) -> Operation | None:
    return Operation.objects.filter(program=program, key=earn_key(purchase)).first()
