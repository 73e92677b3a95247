"""Delivery against a real HTTP receiver on 127.0.0.1: signatures, retries, backoff, giving up."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import time

import pytest
from django.db import transaction
from django.utils import timezone

from webhooks.delivery import SIGNATURE_HEADER, backoff, deliveries_send_due, signature
from webhooks.models import WebhookDelivery
from webhooks.services import endpoint_update, webhook_emit

from .conftest import SIGNATURE, verify

pytestmark = pytest.mark.django_db

EARNED = {"member_id": "m-1", "points": 120, "balance": {"available": 420}, "note": "café ☕"}


def emit(program, type_="points.earned", data=EARNED, **kwargs):
    with transaction.atomic():
        return webhook_emit(program_id=program.pk, type=type_, data=data, **kwargs)


def make_due(delivery_id: int) -> None:
    """Instead of sleeping through the backoff."""
    WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    secret, body = "whsec_" + "ab" * 24, b'{"id":"evt_1"}'
    header = signature(secret=secret, body=body, timestamp=1767225600)
    expected = hmac.new(secret.encode(), b"1767225600." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"
    assert SIGNATURE.match(header)


def test_endpoint_secret_and_id_formats(endpoint):
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) == 6 + 48
    int(endpoint.secret.removeprefix("whsec_"), 16)
    assert endpoint.public_id.startswith("we_")


def test_retried_with_the_same_id_and_body_until_it_succeeds(program, endpoint, receiver):
    receiver.statuses = [500, 503, 200]
    event = emit(program)
    delivery = WebhookDelivery.objects.get()

    before = timezone.now()
    assert deliveries_send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert "receiver says no" in delivery.last_error
    # 30 s with jitter: not due again at once
    assert before + dt.timedelta(seconds=20) < delivery.next_attempt_at < timezone.now() + dt.timedelta(seconds=40)
    assert deliveries_send_due() == 0 and len(receiver.requests) == 1

    make_due(delivery.pk)
    assert deliveries_send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 2, 503)
    assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=40)  # about 60 s

    make_due(delivery.pk)
    assert deliveries_send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "succeeded", 3, 200, "")
    assert delivery.delivered_at is not None

    assert len(receiver.requests) == 3
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1  # the same bytes every time
    sent = json.loads(bodies.pop())
    assert sent == {"id": event.public_id, "type": "points.earned",
                    "created": int(event.created_at.timestamp()), "data": EARNED}
    for request in receiver.requests:
        assert request.path == "/hooks"
        assert request.headers["Content-Type"] == "application/json"
        verify(secret=endpoint.secret, header=request.headers[SIGNATURE_HEADER], body=request.body)

    make_due(delivery.pk)
    assert deliveries_send_due() == 0  # succeeded: never again unless redelivered by hand


def test_gives_up_once_the_event_is_three_days_old(program, endpoint, receiver):
    receiver.statuses = [500]
    emit(program, now=timezone.now() - dt.timedelta(days=3, minutes=1))
    assert deliveries_send_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    make_due(delivery.pk)
    assert deliveries_send_due() == 0


def test_the_last_retry_is_at_the_three_day_mark(program, endpoint, receiver):
    receiver.statuses = [500]
    event = emit(program, now=timezone.now() - dt.timedelta(days=3) + dt.timedelta(seconds=5))
    WebhookDelivery.objects.update(attempts=15)  # the next backoff is the 6 h cap
    assert deliveries_send_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending"
    assert delivery.next_attempt_at == event.created_at + dt.timedelta(days=3)


def test_backoff_doubles_with_jitter_up_to_six_hours():
    for attempts, seconds in [(1, 30), (2, 60), (5, 480), (10, 15360)]:
        for _ in range(20):
            assert seconds * 0.75 <= backoff(attempts).total_seconds() <= seconds * 1.25
    assert {backoff(n).total_seconds() <= 6 * 3600 for n in range(11, 60)} == {True}
    assert backoff(40) == dt.timedelta(hours=6)


def test_unreachable_endpoint_is_a_failed_attempt(program, make_endpoint, settings):
    settings.DEBUG = True  # plain http to 127.0.0.1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    make_endpoint(program, url=f"http://127.0.0.1:{port}/closed")
    emit(program)
    assert deliveries_send_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert "refused" in delivery.last_error.lower()


def test_redirects_are_not_followed(program, endpoint, receiver):
    receiver.statuses = [302, 200]
    emit(program)
    deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert [r.path for r in receiver.requests] == ["/hooks"]


def test_a_disabled_endpoint_gets_nothing(program, endpoint, receiver):
    emit(program)
    endpoint_update(endpoint=endpoint, is_active=False)  # its pending deliveries fail at once
    assert deliveries_send_due() == 0
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.last_error == "The endpoint is disabled."
    assert receiver.requests == []


def test_a_claimed_delivery_is_leased(program, endpoint):
    """While one worker sends a batch, its rows are not due for anyone else."""
    emit(program)
    from webhooks.delivery import _claim

    claimed = _claim(limit=10, now=timezone.now())
    assert list(claimed.values()) == [0]
    assert _claim(limit=10, now=timezone.now()) == {}
    assert WebhookDelivery.objects.get().next_attempt_at > timezone.now() + dt.timedelta(minutes=4)


@pytest.mark.django_db(transaction=True)
def test_workers_share_the_work_and_send_each_delivery_once(program, make_endpoint, receiver, monkeypatch):
    """Four workers, each with its own connection, drain 40 deliveries: each is sent once."""
    from webhooks import services

    # The workers here are the test's threads, not Celery: no nudge on commit.
    monkeypatch.setattr(services, "_deliver_after_commit", lambda: None)
    import threading

    from django.db import connection

    receiver.delay = 0.02
    make_endpoint(program, url=receiver.url)
    make_endpoint(program, url=receiver.url + "/second")
    for n in range(20):
        emit(program, data={"member_id": f"m-{n}", "points": n + 1})
    taken: list[int] = []
    start = threading.Barrier(4)

    def worker():
        try:
            start.wait()
            while (n := deliveries_send_due(limit=3)) > 0:
                taken.append(n)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(taken) == 40
    sent = [(r.path, json.loads(r.body)["id"]) for r in receiver.requests]
    assert len(sent) == 40 and len(set(sent)) == 40
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("succeeded", 1)}


def test_the_timestamp_is_the_attempts_time(program, endpoint, receiver):
    receiver.statuses = [500, 200]
    emit(program, now=timezone.now() - dt.timedelta(hours=1))
    deliveries_send_due()
    make_due(WebhookDelivery.objects.get().pk)
    deliveries_send_due()
    stamps = [verify(secret=endpoint.secret, header=r.headers[SIGNATURE_HEADER], body=r.body)
              for r in receiver.requests]
    assert all(abs(stamp - time.time()) < 60 for stamp in stamps)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_without_debug_a_delivery_never_reaches_an_address_that_is_not_public(program, endpoint, receiver, settings,
                                                                               host):
    """A host name checked when it was registered may lead anywhere by the time it is sent to (a
    name of the partner's pointed at this machine): the address is checked at every delivery."""
    from webhooks.models import WebhookEndpoint

    port = receiver.url.split(":")[2].split("/")[0]
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=f"http://{host}:{port}/hooks")  # as if it resolved so
    settings.DEBUG = False
    emit(program)
    assert deliveries_send_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert "NotPublicAddress" in delivery.last_error and "not a public address" in delivery.last_error
    assert receiver.requests == []
    settings.DEBUG = True  # development: local receivers are fine
    make_due(delivery.pk)
    assert deliveries_send_due() == 1
    assert len(receiver.requests) == 1


def test_the_public_address_check_connects_to_the_address_it_checked(monkeypatch):
    """Resolved once: a name that answers a public address to the check and a private one to a
    second lookup (DNS rebinding) is connected to at the address checked."""
    from webhooks import delivery

    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))],
                    [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]])
    monkeypatch.setattr(delivery.socket, "getaddrinfo", lambda *args, **kwargs: next(answers))
    connected = []

    class FakeSocket:
        def __init__(self, *args):
            pass

        def settimeout(self, timeout):
            pass

        def connect(self, address):
            connected.append(address)

    monkeypatch.setattr(delivery.socket, "socket", FakeSocket)
    delivery._connect_public(("hooks.example.com", 443), 5)
    assert connected == [("93.184.215.14", 443)]


def test_unsubscribing_from_a_type_fails_its_pending_deliveries(program, endpoint, receiver):
    receiver.statuses = [500, 200]
    emit(program)
    deliveries_send_due()  # the first attempt fails: a retry is pending
    endpoint_update(endpoint=endpoint, event_types=["reward.redeemed"])
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_error) == ("failed", "The endpoint no longer subscribes to its type.")
    make_due(delivery.pk)
    deliveries_send_due()
    assert len(receiver.requests) == 1


def test_a_pending_delivery_of_a_type_unsubscribed_elsewhere_is_not_sent(program, endpoint, receiver):
    # Changed without endpoint_update (the admin's form, say): the worker checks the type itself.
    from webhooks.models import WebhookEndpoint

    receiver.statuses = [500, 200]
    emit(program)
    deliveries_send_due()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(event_types=["reward.redeemed"])
    make_due(WebhookDelivery.objects.get().pk)
    deliveries_send_due()
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get().status == "failed"


def test_an_endpoint_disabled_then_enabled_again_does_not_get_its_old_retries(program, endpoint, receiver):
    receiver.statuses = [500, 200]
    emit(program)
    deliveries_send_due()
    endpoint_update(endpoint=endpoint, is_active=False)
    endpoint_update(endpoint=endpoint, is_active=True)
    make_due(WebhookDelivery.objects.get().pk)
    deliveries_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_error, len(receiver.requests)) == ("failed", "The endpoint is disabled.", 1)


def _dripping_receiver(*, seconds: float, step: float = 0.3):
    """Reads the request, then sends a 200's headers a line every ``step`` seconds for ``seconds``:
    never ``step`` without a byte, so no single read times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    conn.sendall(b"X-Drip: 1\r\n")
                    time.sleep(step)
                conn.sendall(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass  # the sender gave up

    import threading

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_an_answer_dripped_past_the_timeout_is_a_failed_attempt(settings, monkeypatch):
    # Scaled down: a 1 s timeout, a receiver taking 4 s to finish its 200.
    from webhooks import delivery

    settings.DEBUG = True
    monkeypatch.setattr(delivery, "TIMEOUT_SECONDS", 1)
    listener = _dripping_receiver(seconds=4)
    started = time.monotonic()
    outcome = delivery.post(url=f"http://127.0.0.1:{listener.getsockname()[1]}/hooks", body=b"{}", secret="s")
    elapsed = time.monotonic() - started
    listener.close()
    assert not outcome.succeeded and outcome.error.startswith("Timeout"), outcome
    assert elapsed < 2.5
