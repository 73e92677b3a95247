"""Sending the outbox: claim due deliveries, POST them signed, record each outcome.

Several workers share the work. A batch is claimed with ``FOR UPDATE SKIP LOCKED`` in a short
transaction that moves its rows' ``next_attempt_at`` forward by a lease, so no other worker
takes them while they are being sent; the HTTP calls run outside any transaction, a few at a
time in threads (which never touch the database); each outcome is one conditional UPDATE. A
worker that dies mid-batch leaves its rows to be taken again when the lease ends: delivery is
at least once, and receivers deduplicate by the event id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import ipaddress
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Loyalty-Signature"
TIMEOUT_SECONDS = 10
RETRY_WINDOW = dt.timedelta(days=3)
BACKOFF_FIRST_SECONDS = 30
BACKOFF_CAP_SECONDS = 6 * 3600
SEND_THREADS = 8
# Longer than a batch can take: ceil(limit / SEND_THREADS) calls of at most TIMEOUT_SECONDS each.
LEASE = dt.timedelta(minutes=5)
ERROR_SNIPPET = 500
USER_AGENT = "loyalty-webhooks/1"


def signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint secret>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def backoff(attempts: int) -> dt.timedelta:
    """After the n-th failed attempt: 30 s doubling each time, ±25 % jitter, at most 6 h."""
    seconds = BACKOFF_FIRST_SECONDS * 2 ** min(attempts - 1, 20)
    return dt.timedelta(seconds=min(seconds * random.uniform(0.75, 1.25), BACKOFF_CAP_SECONDS))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is an answer other than 2xx, so a failed attempt: the body is never re-sent elsewhere.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class NotPublicAddress(OSError):
    """The endpoint's host name leads to an address that is not a public one."""


def _connect_public(address: tuple[str, int], timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
    """``socket.create_connection``, to a host whose every address is a public one. A URL is
    checked when it is registered, but a host name may lead anywhere (a name of the partner's own
    pointed at 10.0.0.5, at this machine, at a cloud's metadata service): it is resolved here, its
    addresses checked, and the connection made to an address that was checked, not resolved again."""
    host, port = address
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_rest, sockaddr in found:
        if not ipaddress.ip_address(sockaddr[0]).is_global:
            raise NotPublicAddress(f"{host} leads to {sockaddr[0]}, which is not a public address")
    error = None
    for family, kind, proto, _name, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError(f"{host} has no address")


# The sockets of the attempt this thread is making (``post``), which its deadline shuts down.
_attempt = threading.local()


class _Watched:
    """A connection whose socket the attempt's deadline can shut down: the socket's own timeout
    bounds each read, not the answer, which a receiver sending a byte every few seconds could
    stretch for hours, past the worker's lease on the delivery."""

    def connect(self):
        super().connect()
        sockets = getattr(_attempt, "sockets", None)
        if sockets is not None:
            sockets.append(self.sock)


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _PublicHTTPConnection(_Watched, http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public  # what ``connect`` opens its socket with


class _PublicHTTPSConnection(_Watched, http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public  # TLS then checks the certificate against the name


def _handlers(http_connection, https_connection) -> tuple:
    class HTTPHandler(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(http_connection, req, **kwargs)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(https_connection, req, **kwargs)

    return HTTPHandler, HTTPSHandler


_opener = urllib.request.build_opener(_NoRedirects, *_handlers(_HTTPConnection, _HTTPSConnection))
# Without DEBUG, as URLs are checked when they are registered: only public addresses are reached.
_public_opener = urllib.request.build_opener(_NoRedirects, *_handlers(_PublicHTTPConnection, _PublicHTTPSConnection))


def _shut(sockets: list, expired: threading.Event) -> None:
    expired.set()
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a read blocked on it returns at once
        except OSError:
            pass


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(*, url: str, body: bytes, secret: str) -> Outcome:
    """One signed POST; any failure is an Outcome, never an exception."""
    timestamp = int(time.time())
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(secret=secret, body=body, timestamp=timestamp),
    })
    opener = _opener if settings.DEBUG else _public_opener
    # The whole answer within TIMEOUT_SECONDS of the connection, not only each read.
    _attempt.sockets, expired = [], threading.Event()
    deadline = threading.Timer(TIMEOUT_SECONDS, _shut, (_attempt.sockets, expired))
    deadline.daemon = True
    deadline.start()
    try:
        outcome = _open(opener, request)
    finally:
        deadline.cancel()
        _attempt.sockets = None
    if expired.is_set():
        return Outcome(None, f"Timeout: no whole answer within {TIMEOUT_SECONDS} s")
    return outcome


def _open(opener, request) -> Outcome:
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(ERROR_SNIPPET)
            return Outcome(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            snippet = exc.read(ERROR_SNIPPET).decode("utf-8", "replace")
        return Outcome(exc.code, f"HTTP {exc.code}: {snippet}".strip())
    except urllib.error.URLError as exc:
        return Outcome(None, f"{type(exc.reason).__name__}: {exc.reason}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")


def _claim(*, limit: int, now: dt.datetime) -> dict[int, int]:
    """Lease up to ``limit`` due deliveries to this worker: ``{id: attempts}``."""
    with transaction.atomic():
        claimed = dict(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at").values_list("id", "attempts")[:limit]
        )
        if claimed:
            WebhookDelivery.objects.filter(id__in=claimed).update(next_attempt_at=now + LEASE)
    return claimed


def _record(delivery: WebhookDelivery, *, claimed_attempts: int, outcome: Outcome) -> None:
    """Write the outcome, unless someone else took the row meanwhile (a redelivery by hand,
    or another worker after the lease ended): their outcome is as good as ours."""
    now = timezone.now()
    attempts = claimed_attempts + 1
    fields = {"attempts": attempts, "last_attempt_at": now, "last_status_code": outcome.status_code,
              "last_error": outcome.error}
    if outcome.succeeded:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, delivered_at=now)
    else:
        deadline = delivery.event.created_at + RETRY_WINDOW
        if now >= deadline:
            fields.update(status=WebhookDelivery.Status.FAILED)
        else:
            fields.update(next_attempt_at=min(now + backoff(attempts), deadline))
    WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=claimed_attempts
    ).update(**fields)


def deliveries_send_due(limit: int = 100) -> int:
    """Send up to ``limit`` due deliveries. Returns how many were taken (sent or given up)."""
    claimed = _claim(limit=limit, now=timezone.now())
    if not claimed:
        return 0
    deliveries = list(WebhookDelivery.objects.filter(id__in=claimed).select_related("event", "endpoint"))
    to_send = []
    for delivery in deliveries:
        why = ("The endpoint is disabled." if not delivery.endpoint.is_active else
               None if delivery.endpoint.subscribes_to(delivery.event.type) else
               f"The endpoint no longer subscribes to {delivery.event.type}.")
        if why is None:
            to_send.append(delivery)
        else:
            WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(
                status=WebhookDelivery.Status.FAILED, last_error=why)

    def send(delivery: WebhookDelivery) -> Outcome:
        return post(url=delivery.endpoint.url, body=delivery.event.body(), secret=delivery.endpoint.secret)

    with ThreadPoolExecutor(max_workers=max(1, min(SEND_THREADS, len(to_send)))) as pool:
        outcomes = list(pool.map(send, to_send))
    for delivery, outcome in zip(to_send, outcomes, strict=True):
        _record(delivery, claimed_attempts=claimed[delivery.pk], outcome=outcome)
        if not outcome.succeeded:
            logger.info("webhook %s to %s failed (attempt %d): %s", delivery.event.public_id,
                        delivery.endpoint.url, claimed[delivery.pk] + 1, outcome.error)
    return len(deliveries)


def deliveries_drain(*, limit: int = 100, seconds: float = 50.0) -> int:
    """Send batches while full batches come back, for at most about ``seconds``."""
    started = time.monotonic()
    total = 0
    while True:
        taken = deliveries_send_due(limit)
        total += taken
        if taken < limit or time.monotonic() - started > seconds:
            return total
