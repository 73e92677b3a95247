"""Shapes, helpers and fixtures shared by the partner API contract tests (imported by the modules
that use them; ``api`` and ``other_api`` stay in ``conftest.py``)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

# --- the shapes API.md names -------------------------------------------------------------

ERROR_KEYS = {"type", "code", "message", "param"}
BALANCE_KEYS = {"available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
                "expiring"}
EXPIRING_KEYS = {"points", "expires_at"}
MEMBER_KEYS = {"external_id", "email", "attributes", "tier", "status", "enrolled_at", "balance"}
TRANSACTION_KEYS = {"id", "kind", "points", "created_at", "description", "source"}
SOURCE_KEYS = {"type", "id"}
TRANSACTION_KINDS = {"earn", "redeem", "expire", "reverse", "adjust", "hold", "release"}
EVENT_PROCESSED_KEYS = {"event_id", "status", "awards", "balance"}
AWARD_KEYS = {"points", "rule", "campaign"}
EVENT_KEYS = {"event_id", "type", "status", "awards", "error"}
EVENT_STATUSES = {"received", "processed", "rejected", "failed"}
BATCH_KEYS = {"accepted", "duplicates", "rejected"}
BATCH_REJECTED_KEYS = {"index", "event_id", "error"}
REWARD_KEYS = {"id", "name", "cost", "stock", "available"}
REDEMPTION_KEYS = {"id", "status", "points", "reward", "voucher_code", "balance"}
ADJUSTMENT_KEYS = {"entry", "balance"}
LIST_KEYS = {"data", "has_more"}
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found",
    409: "conflict", 422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error",
}

OCCURRED_ISO = "2026-01-15T10:00:00Z"
_ids = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{time.monotonic_ns() % 10**9}"


def assert_error(response, status: int, code: str | None = None, *, param: object = ..., error_type: str | None = None):
    """The one error shape: exactly ``{"error": {"type", "code", "message", "param"}}``."""
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["type"] == (error_type or ERROR_TYPES[status]), error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    if code is not None:
        assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    return error


def assert_timestamp(value: str) -> dt.datetime:
    """ISO 8601 with a zone."""
    assert isinstance(value, str), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_balance(balance: dict) -> None:
    assert set(balance) == BALANCE_KEYS, balance
    for name in BALANCE_KEYS - {"expiring"}:
        assert type(balance[name]) is int, (name, balance)
    assert isinstance(balance["expiring"], list)
    previous = None
    for lot in balance["expiring"]:
        assert set(lot) == EXPIRING_KEYS, lot
        assert type(lot["points"]) is int and lot["points"] > 0
        expires_at = assert_timestamp(lot["expires_at"])
        assert previous is None or previous <= expires_at, "expiring must be soonest first"
        previous = expires_at


def assert_member(body: dict) -> None:
    assert set(body) == MEMBER_KEYS, body
    assert_timestamp(body["enrolled_at"])
    assert isinstance(body["attributes"], dict)
    assert_balance(body["balance"])


def assert_transaction(body: dict) -> None:
    assert set(body) == TRANSACTION_KEYS, body
    assert body["kind"] in TRANSACTION_KINDS, body
    assert type(body["points"]) is int
    assert isinstance(body["id"], str)
    assert_timestamp(body["created_at"])
    assert set(body["source"]) == SOURCE_KEYS, body


def assert_list(body: dict) -> list:
    assert set(body) == LIST_KEYS, body
    assert isinstance(body["has_more"], bool)
    return body["data"]


# --- clients and data ----------------------------------------------------------------------


def client_for(program, name: str = "Partner") -> APIClient:
    from accounts.services import partner_create

    _partner, key = partner_create(program=program, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.api_key = key
    return client


def bare_client(key: str | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def earn(member, points: int, *, key: str | None = None, now: dt.datetime | None = None):
    from ledger.services import points_earn

    return points_earn(member=member, points=points, key=key or unique("earn"), now=now)


def spend_rule(program):
    from rules.models import Rule
    from rules.services import rule_save

    return rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))


def purchase(event_id: str, member_id: str, amount: str = "42.50", **properties) -> dict:
    properties.setdefault("order_id", f"o-{event_id}")
    return {"event_id": event_id, "type": "purchase", "member_id": member_id, "occurred_at": OCCURRED_ISO,
            "properties": {"amount": amount, "currency": "USD", **properties}}


def in_threads(n: int, work, *, workers: int | None = None) -> list:
    """Run ``work(i)`` for i in range(n) on ``workers`` threads (default n) released together by a
    barrier; each thread uses, then closes, its own database connection."""
    workers = workers or n
    barrier = threading.Barrier(workers, timeout=60)
    local = threading.local()

    def run(i):
        if not getattr(local, "started", False):
            local.started = True
            barrier.wait()
        return work(i)

    def close(_):
        connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        results = [future.result(timeout=300) for future in futures]
        # close each worker thread's connection (one task per thread, held together)
        gate = threading.Barrier(workers, timeout=60)
        list(pool.map(lambda _: (gate.wait(), close(_)), range(workers)))
    return results


def in_thread(fn, results: dict, name: str) -> threading.Thread:
    """Start ``fn`` on a thread with its own database connection (closed at the end); its result,
    or the exception it raised, goes to ``results[name]``."""
    def run():
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[name] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def snapshot(program) -> dict:
    """Everything of ``program`` that a request could change."""
    from accounts.models import Member
    from campaigns.models import Redemption, Reward, VoucherCode
    from ledger.models import Balance, Entry, Hold, Lot, Operation
    from loyalty.models import IdempotencyRecord
    from rules.models import InboundEvent
    from webhooks.models import WebhookEndpoint

    return {
        "members": list(Member.objects.filter(program=program).order_by("id")
                        .values_list("external_id", "email", "attributes", "status", "tier")),
        "balances": list(Balance.objects.filter(program=program).order_by("member_id").values()),
        "entries": list(Entry.objects.filter(program=program).order_by("id").values_list("id", "kind", "points")),
        "lots": list(Lot.objects.filter(program=program).order_by("id").values_list("id", "remaining", "expired_at")),
        "operations": Operation.objects.filter(program=program).count(),
        "holds": list(Hold.objects.filter(program=program).order_by("id").values_list("id", "status")),
        "redemptions": list(Redemption.objects.filter(program=program).order_by("id")
                            .values_list("public_id", "status", "voucher_code")),
        "rewards": list(Reward.objects.filter(program=program).order_by("id").values_list("code", "stock")),
        "events": list(InboundEvent.objects.filter(program=program).order_by("id")
                       .values_list("event_id", "status", "points", "member_id")),
        "endpoints": list(WebhookEndpoint.objects.filter(program=program).order_by("id")
                          .values_list("public_id", "url", "is_active")),
        "vouchers": list(VoucherCode.objects.filter(reward__program=program).order_by("id")
                         .values_list("code", "redemption_id")),
        "idempotency": IdempotencyRecord.objects.filter(program=program).count(),
    }


@pytest.fixture
def make_client(db):
    """A partner key (and client) of ``program``: ``make_client(program, name)``."""
    return client_for


class Statements(list):
    """The SQL of every statement sent through Django's connection (prepared ones too)."""

    def __call__(self, execute, sql, params, many, context):
        self.append(sql)
        return execute(sql, params, many, context)

    def spends(self) -> list[str]:
        return [sql for sql in self if "INSERT INTO ledger_operation" in sql]
