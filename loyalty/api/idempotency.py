"""``Idempotency-Key`` for every POST of the partner API.

The first request with a key claims it (a row committed at once, so a concurrent twin sees
it and gets 409 ``idempotency_key_in_use``); its response is stored when it is done (by a view
whose change is one transaction, in that transaction: ``IdempotentMixin.respond_in_transaction``) and
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

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone
from psycopg import pq
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from loyalty.db import prepared_cursor
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


# Bookkeeping statements need not wait for their commit to reach the disk. Safe here: a claim
# or stored response lost in a crash only means the request runs again, and the ledger
# operation keys derived from the Idempotency-Key make that second run change nothing. Each is
# one statement in its own transaction (Django's autocommit), which turns synchronous_commit off
# for itself: one round trip, where BEGIN, SET LOCAL, the statement and COMMIT took four.
_ASYNC_COMMIT = "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true) AS off)"

_CLAIM_SQL = f"""{_ASYNC_COMMIT}
INSERT INTO loyalty_idempotencyrecord (program_id, partner_id, key, request_hash, state, created_at, locked_at)
SELECT %(program)s::bigint, %(partner)s::bigint, %(key)s::text, %(hash)s::text, 'in_progress',
       %(now)s::timestamptz, %(now)s::timestamptz
FROM async_commit
ON CONFLICT (partner_id, key) DO NOTHING RETURNING id
"""

_DONE_SQL = f"""{_ASYNC_COMMIT}
UPDATE loyalty_idempotencyrecord SET state = 'done', response_status = %(status)s::integer,
       response_body = to_jsonb(%(body)s::text)
FROM async_commit WHERE id = %(id)s::bigint
"""

_FORGET_SQL = f"""{_ASYNC_COMMIT}
DELETE FROM loyalty_idempotencyrecord USING async_commit WHERE id = %(id)s::bigint
"""


def _done_with_commit(record_id: int, status: int, body: str | None) -> None:
    """``_DONE_SQL`` carried by the open transaction's commit (``DatabaseWrapper.run_with_commit``)."""
    text = pq.Escaping(connection.connection.pgconn).escape_literal(body.encode()) if body is not None else b"NULL"
    connection.run_with_commit(b"UPDATE loyalty_idempotencyrecord SET state = 'done', response_status = %d, "
                               b"response_body = to_jsonb(%s::text) WHERE id = %d;" % (status, text, record_id))


def _bookkeep(sql: str, params: dict) -> tuple | None:
    """Run one bookkeeping statement in a transaction of its own; its first row, if any."""
    if connection.in_atomic_block:
        # Inside a caller's transaction the setting would last until that transaction's commit.
        sql = sql.replace("SELECT set_config('synchronous_commit', 'off', true)", "SELECT NULL", 1)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if cursor.description else None


def idempotency_claim(*, partner, key: str, request_hash: str) -> IdempotencyRecord | HttpResponse:
    """Claim ``key`` for ``partner``; or the stored response to replay; or raise in-use / reused.
    Keys are the partner's own: another partner of the program never sees them."""
    program_id = partner.program_id
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)
    row = _bookkeep(_CLAIM_SQL, {"program": program_id, "partner": partner.pk, "key": key, "hash": request_hash,
                                 "now": now})
    if row:
        return IdempotencyRecord(id=row[0], program_id=program_id, partner_id=partner.pk, key=key,
                                 request_hash=request_hash)
    record = IdempotencyRecord.objects.get(partner_id=partner.pk, key=key)
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request.", param="Idempotency-Key"
        )
    if record.state == IdempotencyRecord.State.DONE:
        response = _stored_response(record)
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


def _stored_response(record: IdempotencyRecord) -> HttpResponse:
    """The first response again. Its body is kept as the text that was sent (a JSON string in the
    ``jsonb`` column), so that a replay is the same bytes: stored as a JSON value, its keys would
    come back in ``jsonb``'s order. Records stored as a value (before the text was kept) are
    rendered again from it."""
    body = record.response_body
    if isinstance(body, str):
        return HttpResponse(body.encode(), status=record.response_status, content_type="application/json")
    return Response(body, status=record.response_status)


class IdempotentMixin:
    """For API views: applies ``Idempotency-Key`` to POST requests."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._idempotency_record = self._idempotency_stored = None
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return
        if not 1 <= len(key) <= 255:
            raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
        claimed = idempotency_claim(partner=request.user, key=key, request_hash=_request_hash(request))
        if isinstance(claimed, HttpResponse):
            raise _Replay(claimed)
        self._idempotency_record = claimed

    def operation_key(self, request, suffix: str = "") -> str | None:
        """A ledger operation key derived from the request's Idempotency-Key and its partner, if it
        has a key (two partners' equal keys are two operations)."""
        key = request.headers.get(HEADER)
        if not key:
            return None
        return f"idem:{hashlib.sha256(f'{request.user.pk}:{key}'.encode()).hexdigest()}{suffix}"

    def respond_in_transaction(self, request, response: Response) -> Response:
        """For a view whose change is one transaction: called in that transaction with the response
        the change gets, it renders the response and stores it for the request's key in the same
        commit (no round trip of its own). The view then answers with this response; should the
        transaction roll back, the response the request gets instead is stored as usual."""
        record = getattr(self, "_idempotency_record", None)
        if record is None:
            return response
        response.accepted_renderer = request.accepted_renderer
        response.accepted_media_type = request.accepted_media_type
        response.renderer_context = self.get_renderer_context()
        response.render()
        _done_with_commit(record.pk, response.status_code, response.content.decode() if response.content else None)
        self._idempotency_stored = response
        return response

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = getattr(self, "_idempotency_record", None)
        if record is not None and getattr(self, "_idempotency_stored", None) is not response:
            if response.status_code >= 500 or response.status_code == 429:
                _bookkeep(_FORGET_SQL, {"id": record.pk})
            else:
                response.render()
                _bookkeep(_DONE_SQL, {"id": record.pk, "status": response.status_code,
                                      "body": response.content.decode() if response.content else None})
        return response


def idempotency_records_clean() -> int:
    """Beat: forget keys older than IDEMPOTENCY_KEY_TTL_HOURS."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted

