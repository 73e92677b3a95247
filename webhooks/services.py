"""Writes of the webhooks app: emitting events into the outbox, endpoints, manual redelivery.

``webhook_emit`` and ``webhook_emit_many`` only write rows, and only inside the caller's
transaction: the event and its deliveries commit or roll back with their cause. Nothing
leaves the process here. After commit a Celery task (``deliver_due``) is nudged once per
transaction; the beat runs it every few seconds anyway, so a lost nudge only delays delivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.db.models.signals import post_delete, post_save
from django.db.transaction import TransactionManagementError
from django.dispatch import receiver
from django.utils import timezone

from accounts.models import Partner, Program
from loyalty.errors import DomainError
from webhooks.models import WEBHOOK_EVENT_TYPES, WebhookDelivery, WebhookEndpoint, WebhookEvent, new_event_id

__all__ = [
    "WEBHOOK_EVENT_TYPES", "webhook_emit", "webhook_emit_many", "points_expiring_emit", "endpoint_create",
    "endpoint_update", "endpoint_delete", "delivery_retry", "events_prune",
]

# The keys each event type's ``data`` must carry: the public contract in docs/webhooks.md.
REQUIRED_DATA: dict[str, frozenset[str]] = {
    "points.earned": frozenset({"member_id", "points"}),
    "points.expiring": frozenset({"member_id", "points", "expires_on"}),
    "points.expired": frozenset({"member_id", "points"}),
    "reward.redeemed": frozenset({"member_id", "redemption_id", "points"}),
    "redemption.voided": frozenset({"member_id", "redemption_id", "points"}),
}
# Every emit writes one delivery row per subscribed endpoint inside its cause's transaction.
MAX_ENDPOINTS_PER_PROGRAM = 20
EXPIRING_DAYS_AHEAD = 30
EVENT_RETENTION_DAYS = 30


class InvalidWebhookURL(DomainError):
    code = "invalid_url"
    status = 400


class InvalidEventType(DomainError):
    code = "invalid_event_type"
    status = 400


class TooManyEndpoints(DomainError):
    code = "too_many_endpoints"


# --- emitting ---------------------------------------------------------------------------------


def keyed_event_id(*, program_id: int, type: str, key: str) -> str:
    """The public id of the event emitted for ``key``: the same key gives the same id."""
    digest = hashlib.sha256(f"{program_id}\x00{type}\x00{key}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


# (program id, type) -> (monotonic time read, endpoint ids): subscriptions are read at most once
# per WEBHOOK_SUBSCRIPTION_CACHE_SECONDS per process, for every earn asks. Saving or deleting an
# endpoint empties it in this process at once; other processes follow within those seconds.
_subscriptions: dict[tuple[int, str], tuple[float, list[int]]] = {}


@receiver([post_save, post_delete], sender=WebhookEndpoint)
def _forget_subscriptions(**kwargs) -> None:
    _subscriptions.clear()


def subscribed_endpoint_ids(*, program_id: int, type: str) -> list[int]:
    ttl = settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS
    cached = _subscriptions.get((program_id, type))
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    ids = list(
        WebhookEndpoint.objects.filter(program_id=program_id, is_active=True)
        .filter(Q(event_types=[]) | Q(event_types__contains=[type]))
        .order_by("id").values_list("id", flat=True)
    )
    if ttl > 0:
        _subscriptions[(program_id, type)] = (now, ids)
    return ids


def _check_emit(type: str, items: Iterable[dict]) -> None:
    if type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"Unknown webhook event type {type!r}; one of {', '.join(WEBHOOK_EVENT_TYPES)}.")
    for data in items:
        if not isinstance(data, dict):
            raise ValueError(f"{type} data must be a dict, got {data!r}.")
        missing = REQUIRED_DATA[type] - data.keys()
        if missing:
            raise ValueError(f"{type} data lacks {', '.join(sorted(missing))}: {data!r}.")
    if not connection.in_atomic_block:
        raise TransactionManagementError(
            "webhook_emit must run inside the transaction of what caused the event (transaction.atomic)."
        )


_INSERT_EVENTS_SQL = """
INSERT INTO webhooks_webhookevent (public_id, program_id, type, data, created_at)
SELECT p, %s, %s, d::jsonb, %s FROM unnest(%s::text[], %s::text[]) AS v(p, d)
ON CONFLICT (public_id) DO NOTHING
RETURNING id, public_id
"""
_INSERT_DELIVERIES_SQL = """
INSERT INTO webhooks_webhookdelivery (event_id, endpoint_id, status, attempts, next_attempt_at, last_error)
SELECT e, p.id, 'pending', 0, %s, '' FROM unnest(%s::bigint[]) AS e
CROSS JOIN (SELECT id FROM webhooks_webhookendpoint WHERE id = ANY(%s::bigint[]) AND is_active) AS p
ON CONFLICT (event_id, endpoint_id) DO NOTHING
"""


def _deliver_after_commit() -> None:
    from webhooks.tasks import deliver_due

    deliver_due.delay()


def _nudge_workers_on_commit() -> None:
    """``deliver_due.delay()`` after commit, once per transaction however many events it emits.
    ``robust``: the rows are committed by then, and the beat delivers them if the broker is down."""
    pending = transaction.get_connection().run_on_commit
    if not any(func is _deliver_after_commit for _savepoints, func, _robust in pending):
        transaction.on_commit(_deliver_after_commit, robust=True)


def _emit(*, program_id: int, type: str, items: Sequence[dict], keys: Sequence[str] | None,
          now: dt.datetime | None) -> list[WebhookEvent]:
    _check_emit(type, items)
    if keys is not None and len(keys) != len(items):
        raise ValueError("keys must match items one to one.")
    endpoint_ids = subscribed_endpoint_ids(program_id=program_id, type=type)
    if not endpoint_ids or not items:
        return []
    now = now or timezone.now()
    public_ids = ([keyed_event_id(program_id=program_id, type=type, key=key) for key in keys] if keys is not None
                  else [new_event_id() for _ in items])
    by_public_id = {public_id: data for public_id, data in zip(public_ids, items, strict=True)}
    bodies = [json.dumps(data, cls=DjangoJSONEncoder) for data in by_public_id.values()]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENTS_SQL, [program_id, type, now, list(by_public_id), bodies])
        created = cursor.fetchall()  # without the keys used before: those events exist already
        if not created:
            return []
        cursor.execute(_INSERT_DELIVERIES_SQL, [now, [row[0] for row in created], endpoint_ids])
    _nudge_workers_on_commit()
    return [WebhookEvent(id=event_id, public_id=public_id, program_id=program_id, type=type,
                         data=by_public_id[public_id], created_at=now) for event_id, public_id in created]


def webhook_emit(
    *, program_id: int, type: str, data: dict, key: str | None = None, now: dt.datetime | None = None,
) -> WebhookEvent | None:
    """Put one event in the outbox, with a delivery for each active endpoint of the program
    subscribed to ``type``. Call it inside the transaction of its cause: it writes rows, it sends
    nothing. ``None`` when nothing was written: no endpoint wants the type (one query), or
    ``key`` was used before for this program and type (the event exists already)."""
    events = _emit(program_id=program_id, type=type, items=[data], keys=None if key is None else [key], now=now)
    return events[0] if events else None


def webhook_emit_many(
    *, program_id: int, type: str, items: Sequence[dict], keys: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """``webhook_emit`` for set-based callers: three statements for the whole list. ``keys``
    (optional, one per item) make a re-run emit nothing for items emitted before. Returns the
    number of events written."""
    return len(_emit(program_id=program_id, type=type, items=items, keys=keys, now=now))


def points_expiring_emit(*, now: dt.datetime | None = None, batch_size: int = 5000) -> int:
    """Beat, nightly: one ``points.expiring`` per member with points expiring on the UTC day
    ``EXPIRING_DAYS_AHEAD`` days from today, with their total. The event's key is the member and
    the day, so a second run on the same day (or a redelivered task) emits nothing new."""
    from ledger.models import Lot  # a read of the ledger; it belongs in ledger/selectors.py

    now = now or timezone.now()
    day = now.astimezone(dt.UTC).date() + dt.timedelta(days=EXPIRING_DAYS_AHEAD)
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    emitted = 0
    program_ids = (
        WebhookEndpoint.objects.filter(is_active=True)
        .filter(Q(event_types=[]) | Q(event_types__contains=["points.expiring"]))
        .order_by("program_id").values_list("program_id", flat=True).distinct()
    )
    for program_id in program_ids:
        after = 0
        while True:
            rows = list(
                Lot.objects.filter(program_id=program_id, remaining__gt=0, expired_at__isnull=True,
                                   expires_at__gte=start, expires_at__lt=start + dt.timedelta(days=1),
                                   member_id__gt=after)
                .values("member_id", "member__external_id").annotate(points=Sum("remaining"))
                .order_by("member_id")[:batch_size]
            )
            if not rows:
                break
            with transaction.atomic():
                emitted += webhook_emit_many(
                    program_id=program_id, type="points.expiring", now=now,
                    items=[{"member_id": row["member__external_id"], "points": row["points"],
                            "expires_on": day.isoformat()} for row in rows],
                    keys=[f"{row['member_id']}:{day.isoformat()}" for row in rows],
                )
            after = rows[-1]["member_id"]
    return emitted


# --- endpoints --------------------------------------------------------------------------------


def _is_internal_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name; where it points is only known when it is resolved


def endpoint_url_check(url: str) -> str:
    """http or https (https only in production), with a host and no credentials in it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidWebhookURL("url is not a valid URL.", param="url") from None
    schemes = ("https", "http") if settings.DEBUG else ("https",)
    if parts.scheme not in schemes:
        raise InvalidWebhookURL(f"url must start with {' or '.join(f'{s}://' for s in schemes)}.", param="url")
    if not parts.hostname:
        raise InvalidWebhookURL("url has no host.", param="url")
    if parts.username or parts.password:
        raise InvalidWebhookURL("url must not contain credentials; verify the signature instead.", param="url")
    if not settings.DEBUG and _is_internal_host(parts.hostname):
        raise InvalidWebhookURL("url must point to a public host.", param="url")
    return url


def endpoint_event_types_check(event_types: Iterable[str]) -> list[str]:
    """Known types, each once, in the canonical order. Empty means every type."""
    event_types = list(event_types)
    unknown = [t for t in event_types if t not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise InvalidEventType(
            f"Unknown event type {unknown[0]!r}; one of {', '.join(WEBHOOK_EVENT_TYPES)}.", param="event_types"
        )
    return [t for t in WEBHOOK_EVENT_TYPES if t in event_types]


def endpoint_capacity_check(*, program: Program) -> None:
    # Not locked: two racing creates may pass one over the cap, which only bounds the work per emit.
    if WebhookEndpoint.objects.filter(program=program).count() >= MAX_ENDPOINTS_PER_PROGRAM:
        raise TooManyEndpoints(f"A program may have at most {MAX_ENDPOINTS_PER_PROGRAM} webhook endpoints.")


def endpoint_create(
    *, program: Program, url: str, event_types: Iterable[str] = (), partner: Partner | None = None,
) -> WebhookEndpoint:
    """A new endpoint, with a new secret (shown to whoever creates it)."""
    url = endpoint_url_check(url)
    event_types = endpoint_event_types_check(event_types)
    endpoint_capacity_check(program=program)
    return WebhookEndpoint.objects.create(program=program, partner=partner, url=url, event_types=event_types)


def endpoint_update(
    *, endpoint: WebhookEndpoint, url: str | None = None, event_types: Iterable[str] | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """New url, types or state apply to the next attempt of every delivery, pending ones too: a
    disabled endpoint's pending deliveries fail at once (enabled again, it does not get them), and
    so do those of types it no longer subscribes to."""
    fields = []
    if url is not None:
        endpoint.url, fields = endpoint_url_check(url), [*fields, "url"]
    if event_types is not None:
        endpoint.event_types, fields = endpoint_event_types_check(event_types), [*fields, "event_types"]
    if is_active is not None:
        endpoint.is_active, fields = is_active, [*fields, "is_active"]
    if fields:
        with transaction.atomic():
            endpoint.save(update_fields=fields)
            pending = WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING)
            if not endpoint.is_active:
                pending.update(status=WebhookDelivery.Status.FAILED, last_error="The endpoint is disabled.")
            elif endpoint.event_types:
                pending.exclude(event__type__in=endpoint.event_types).update(
                    status=WebhookDelivery.Status.FAILED, last_error="The endpoint no longer subscribes to its type.")
    return endpoint


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its deliveries (sent or not) go; the events stay for other endpoints."""
    endpoint.delete()


# --- deliveries -------------------------------------------------------------------------------


def delivery_retry(*, delivery: WebhookDelivery, now: dt.datetime | None = None) -> WebhookDelivery:
    """Send again as soon as a worker is free, whatever became of it: the same event id and body.
    An event past the retry window gets one attempt; if it fails, the delivery is failed again."""
    now = now or timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now, delivered_at=None,
    )
    _nudge_workers_on_commit()
    delivery.refresh_from_db()
    return delivery


def events_prune(*, now: dt.datetime | None = None, batch_size: int = 5000) -> int:
    """Beat, nightly: forget events older than EVENT_RETENTION_DAYS with nothing left to send
    (their deliveries go with them). Returns the events deleted."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=EVENT_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            WebhookEvent.objects.filter(created_at__lt=cutoff)
            .exclude(deliveries__status=WebhookDelivery.Status.PENDING)
            .order_by("id").values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        with transaction.atomic():
            WebhookDelivery.objects.filter(event_id__in=ids).delete()
            deleted += WebhookEvent.objects.filter(id__in=ids).delete()[0]
