"""``Idempotency-Key`` for every POST of the partner API.

The first request with a key claims it (a row committed at once, so a concurrent twin sees
it and gets 409 ``idempotency_key_in_use``); its response is stored when it is done and
replayed, with ``Idempotent-Replayed: true``, for the same key and the same body. The same
key with another body is 422 ``idempotency_key_reused``. Responses of 5xx and 429 are not
stored: the key is freed so the request can be retried. A claim whose request died (no response
after ``IDEMPOTENCY_LOCK_SECONDS``) may be taken over; ledger writes below carry operation
keys derived from the idempotency key, so a takeover never posts twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from loyalty.errors import Conflict, DomainError
from loyalty.models import IdempotencyRecord

HEADER = "Idempotency-Key"


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class InvalidIdempotencyKey(DomainError):
    code = "invalid_idempotency_key"
    status = 400


class _Replay(APIException):
    def __init__(self, response: Response):
        super().__init__()
        self.response = response


def _request_hash(request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str) if request.data is not None else ""
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


@contextmanager
def _bookkeeping():
    """A transaction that need not wait for its commit to reach the disk. Safe here: a claim or
    stored response lost in a crash only means the request runs again, and the ledger operation
    keys derived from the Idempotency-Key make that second run change nothing."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield cursor


def idempotency_claim(*, program_id: int, key: str, request_hash: str) -> IdempotencyRecord | Response:
    """Claim ``key``; or the stored response to replay; or raise in-use / reused."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)
    with _bookkeeping() as cursor:
        cursor.execute(
            "INSERT INTO loyalty_idempotencyrecord (program_id, key, request_hash, state, created_at, locked_at) "
            "VALUES (%s, %s, %s, 'in_progress', %s, %s) ON CONFLICT (program_id, key) DO NOTHING RETURNING id",
            [program_id, key, request_hash, now, now],
        )
        row = cursor.fetchone()
    if row:
        return IdempotencyRecord(id=row[0], program_id=program_id, key=key, request_hash=request_hash)
    record = IdempotencyRecord.objects.get(program_id=program_id, key=key)
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request.", param="Idempotency-Key"
        )
    if record.state == IdempotencyRecord.State.DONE:
        response = Response(record.response_body, status=record.response_status)
        response["Idempotent-Replayed"] = "true"
        return response
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyRecord.State.IN_PROGRESS, locked_at__lt=stale
    ).update(locked_at=now)
    if taken:
        return record
    raise IdempotencyKeyInUse(
        "A request with this Idempotency-Key is still being processed.", param="Idempotency-Key"
    )


class IdempotentMixin:
    """For API views: applies ``Idempotency-Key`` to POST requests."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._idempotency_record = None
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return
        if not 1 <= len(key) <= 255:
            raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
        claimed = idempotency_claim(program_id=request.user.program_id, key=key, request_hash=_request_hash(request))
        if isinstance(claimed, Response):
            raise _Replay(claimed)
        self._idempotency_record = claimed

    def operation_key(self, request, suffix: str = "") -> str | None:
        """A ledger operation key derived from the request's Idempotency-Key, if it has one."""
        key = request.headers.get(HEADER)
        if not key:
            return None
        return f"idem:{hashlib.sha256(key.encode()).hexdigest()}{suffix}"

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = getattr(self, "_idempotency_record", None)
        if record is not None:
            with _bookkeeping():
                if response.status_code >= 500 or response.status_code == 429:
                    IdempotencyRecord.objects.filter(pk=record.pk).delete()
                else:
                    response.render()
                    IdempotencyRecord.objects.filter(pk=record.pk).update(
                        state=IdempotencyRecord.State.DONE, response_status=response.status_code,
                        response_body=json.loads(response.content) if response.content else None,
                    )
        return response


def idempotency_records_clean() -> int:
    """Beat: forget keys older than IDEMPOTENCY_KEY_TTL_HOURS."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted

