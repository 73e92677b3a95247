"""docs/api.md: its point-of-sale walk-through, run as written against the demo program.

Every ``curl`` command of the page's ``sh`` blocks is parsed (method, path, headers, body) and
sent in order through Django's test client with the key ``create_partner`` prints; ``rdm_...``
stands for the redemption the walk-through created. What the page says each step answers is
checked against the answers.
"""

from __future__ import annotations

import json
import re
import shlex
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
API = "/api/v1"


def curl_commands(text: str) -> list[dict]:
    """The curl commands of the ``sh`` blocks: method, path, headers and body of each."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
        source = "\n".join(lines).replace("\\\n", " ")
        for words in (shlex.split(command) for command in re.split(r"\n(?=curl )", source)):
            if not words or words[0] != "curl":
                continue
            command = {"method": "GET", "headers": {}, "body": None, "path": None}
            options = iter(words[1:])
            for word in options:
                if word == "-X":
                    command["method"] = next(options)
                elif word == "-H":
                    name, _, value = next(options).partition(":")
                    command["headers"][name.strip()] = value.strip()
                elif word == "-d":
                    command["body"] = next(options)
                elif word.startswith("$API"):
                    command["path"] = word.replace("$API", API)
                elif word != "-s":
                    raise AssertionError(f"docs/api.md: curl option {word!r} is not understood by this test")
            commands.append(command)
    return commands


def send(client: APIClient, command: dict, key: str, redemption_id: str | None):
    path = command["path"].replace("rdm_...", redemption_id or "rdm_...")
    headers = {}
    for name, value in command["headers"].items():
        value = value.replace("$KEY", key)
        if name.lower() == "content-type":
            continue
        headers["HTTP_" + name.upper().replace("-", "_")] = value
    if command["method"] == "GET":
        return client.get(path, **headers)
    return client.generic(command["method"], path, data=command["body"] or "",
                          content_type="application/json", **headers)


@pytest.mark.django_db
def test_the_walk_through_runs_as_written():
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    out = StringIO()
    call_command("create_partner", program="demo", name="Store 42 POS", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]  # "the key is printed alone on the last line"

    commands = curl_commands(DOC)
    assert [(c["method"], c["path"]) for c in commands] == [
        ("POST", f"{API}/members"),
        ("POST", f"{API}/events"),
        ("GET", f"{API}/members/c-1/balance"),
        ("GET", f"{API}/members/c-1/transactions?limit=10"),
        ("POST", f"{API}/redemptions"),
        ("POST", f"{API}/redemptions/rdm_.../capture"),
        ("POST", f"{API}/events"),
    ], "the walk-through's commands changed: update this test with them"
    client = APIClient()
    enroll, purchase, balance, history, hold, capture, refund = commands

    # 1. Enroll: 201; the same request and key replays it; the same member without the key is 409.
    first = send(client, enroll, key, None)
    assert first.status_code == 201, first.content
    assert first.json()["external_id"] == "c-1" and "balance" in first.json()
    again = send(client, enroll, key, None)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    duplicate = send(client, {**enroll, "headers": {k: v for k, v in enroll["headers"].items()
                                                     if k != "Idempotency-Key"}}, key, None)
    assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (409, "member_exists")

    # 2. Earn: qualified in the request; the same event_id again is 200 with the first result.
    earned = send(client, purchase, key, None)
    assert earned.status_code == 201, earned.content
    body = earned.json()
    assert set(body) >= {"event_id", "status", "awards", "balance"} and body["status"] == "processed"
    assert body["awards"] and body["balance"]["available"] > 0
    replay = send(client, purchase, key, None)
    assert replay.status_code == 200 and replay.json() == body
    detail = client.get(f"{API}/events/pos-42-0001", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert detail.status_code == 200 and detail.json()["trace"]

    # 3. Balance, and history newest first.
    read = send(client, balance, key, None)
    assert read.status_code == 200 and read.json()["available"] == body["balance"]["available"]
    assert "expiring" in read.json()
    listed = send(client, history, key, None)
    assert listed.status_code == 200 and set(listed.json()) == {"data", "has_more"}
    assert listed.json()["data"]

    # 4. A hold at the till, then captured.
    if read.json()["available"] < 150:  # the walk-through's member has the points it redeems
        pytest.fail(f"docs/api.md redeems a 150-point reward but c-1 has {read.json()['available']} points")
    held = send(client, hold, key, None)
    assert held.status_code == 201, held.content
    assert held.json()["status"] == "held" and held.json()["points"] == 150
    assert held.json()["reward"] == "free-coffee" and held.json()["voucher_code"] is None
    assert set(held.json()) >= {"id", "status", "points", "reward", "voucher_code", "balance", "member_id",
                                "quantity", "created_at"}
    redemption_id = held.json()["id"]
    assert redemption_id.startswith("rdm_")
    captured = send(client, capture, key, redemption_id)
    assert captured.status_code in (200, 201), captured.content
    assert captured.json()["status"] == "captured"

    # 5. Refund: the purchase's points are reversed in proportion to the amount returned.
    refunded = send(client, refund, key, None)
    assert refunded.status_code == 201, refunded.content
    assert refunded.json()["status"] == "processed"
    after = client.get(f"{API}/members/c-1/balance", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    earned_points = sum(award["points"] for award in body["awards"])
    bought = cents(json.loads(purchase["body"])["properties"]["amount"])
    returned = cents(json.loads(refund["body"])["properties"]["amount"])
    assert after["available"] == body["balance"]["available"] - 150 - earned_points * returned // bought


def cents(amount: str) -> int:
    units, _, fraction = amount.partition(".")
    return int(units) * 100 + int((fraction + "00")[:2])


def test_the_parser_reads_multi_line_bodies():
    [command] = curl_commands("```sh\ncurl -s -X POST $API/events -H \"Authorization: Bearer $KEY\" -d '{\n"
                              "  \"a\": 1}'\n```")
    assert command == {"method": "POST", "path": f"{API}/events", "headers": {"Authorization": "Bearer $KEY"},
                       "body": '{\n  "a": 1}'}
    assert json.loads(command["body"]) == {"a": 1}
