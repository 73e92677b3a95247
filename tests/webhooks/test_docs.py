"""docs/webhooks.md: its verification snippet verifies real deliveries, and its example is right."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.db import transaction

from webhooks.delivery import SIGNATURE_HEADER, deliveries_send_due
from webhooks.services import webhook_emit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()


def snippet_verify():
    [code] = [block for block in re.findall(r"```python\n(.*?)```", DOC, re.S) if "def verify_" in block]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own documentation
    return namespace["verify_loyalty_signature"]


@pytest.mark.django_db
def test_the_snippet_verifies_a_real_delivery(program, endpoint, receiver):
    verify = snippet_verify()
    with transaction.atomic():
        webhook_emit(program_id=program.pk, type="points.earned", data={"member_id": "m-1", "points": 5})
    deliveries_send_due()
    [request] = receiver.requests
    header = request.headers[SIGNATURE_HEADER]
    assert verify(endpoint.secret, header, request.body)
    assert not verify(endpoint.secret, header, request.body + b" ")
    assert not verify("whsec_other", header, request.body)
    assert not verify(endpoint.secret, "garbage", request.body)


def test_the_example_signature_is_right(monkeypatch):
    import time

    verify = snippet_verify()
    secret = re.search(r"secret `(whsec_[0-9a-f]{48})`", DOC)[1]
    body = re.search(r"\n(\{\"created\".*\})\n", DOC)[1].encode()
    header = re.search(r"Loyalty-Signature: (t=\d+,v1=[0-9a-f]{64})", DOC)[1]
    monkeypatch.setattr(time, "time", lambda: 1767225600)
    assert verify(secret, header, body)


@pytest.mark.parametrize("header", [
    f"t={int(time.time())},v1=\u00e9" + "0" * 63,  # latin-1 on the wire: a non-ASCII signature
    "t=\u00b2,v1=" + "0" * 64,  # "²".isdigit() is True, int("²") raises
    "v1=" + "0" * 64,
    "",
])
def test_the_snippet_refuses_a_forged_header_without_raising(header):
    assert snippet_verify()("whsec_0123456789abcdef", header, b"{}") is False
