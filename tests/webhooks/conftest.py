"""Fixtures of the webhook tests: a real HTTP receiver on 127.0.0.1, endpoints, API clients."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rest_framework.test import APIClient

SIGNATURE = re.compile(r"^t=(\d+),v1=([0-9a-f]{64})$")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next status of ``statuses`` (the last one once they run out)."""

    url: str
    statuses: list[int] = field(default_factory=lambda: [200])
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@pytest.fixture
def receiver(settings):
    # Plain http to 127.0.0.1 is for development only (Django's test runner turns DEBUG off).
    settings.DEBUG = True
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recv: Receiver = state["receiver"]
            if recv.delay:
                time.sleep(recv.delay)
            with recv.lock:
                recv.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = recv.next_status()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            answer = b"ok" if status < 300 else b"receiver says no"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()


def verify(*, secret: str, header: str, body: bytes, tolerance: int = 300) -> int:
    """What a receiver does, written from docs/webhooks.md rather than from our code. Returns t."""
    match = SIGNATURE.match(header)
    assert match, header
    timestamp, received = match[1], match[2]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, received), "bad signature"
    assert abs(time.time() - int(timestamp)) <= tolerance
    return int(timestamp)


@pytest.fixture
def make_endpoint(db):
    from webhooks.services import endpoint_create

    def make(program, url="https://hooks.example.com/loyalty", event_types=()):
        return endpoint_create(program=program, url=url, event_types=event_types)

    return make


@pytest.fixture
def endpoint(program, receiver, make_endpoint):
    return make_endpoint(program, url=receiver.url)


def _client(program, name):
    from accounts.services import partner_create

    _partner, key = partner_create(program=program, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def api(program):
    return _client(program, "Shop")


@pytest.fixture
def other_api(make_program):
    return _client(make_program(), "Other shop")


@pytest.fixture
def eager_celery():
    """Tasks run in the test process when enqueued: the after-commit nudge delivers at once."""
    from loyalty.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
