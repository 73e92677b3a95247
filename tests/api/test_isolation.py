"""Two programs, each with a partner key: program B's key sees nothing of program A.

API.md: "A member, event, reward or redemption of another program: 404, exactly as if it did
not exist." Every case is sent twice with B's key, once naming A's object and once naming an
object that exists nowhere: the two answers must be the same (status, type, code, param, and
the message up to the id), and nothing of A may change.
"""

from __future__ import annotations

import json

import pytest

from campaigns import services as campaigns
from campaigns.models import Reward
from ledger.audit import run_audit
from ledger.models import Entry
from rules import pipeline
from tests.api.fixtures import assert_error, assert_list, client_for, earn, purchase, snapshot, spend_rule
from webhooks.services import endpoint_create

GHOST = {
    "member": "ghost-member", "event": "ghost-event", "reward": "ghost-reward", "held": "rdm_0000000000ghost0001",
    "captured": "rdm_0000000000ghost0002", "endpoint": "we_000000000000ghost00001", "entry": "999999999999",
}

# (case id, method, path template, body template, status, code). Placeholders name A's objects.
CASES = [
    ("member-get", "get", "/api/v1/members/{member}", None, 404, "member_not_found"),
    ("member-patch", "patch", "/api/v1/members/{member}", {"email": "evil@x.yz", "attributes": {"pwned": True}},
     404, "member_not_found"),
    ("member-balance", "get", "/api/v1/members/{member}/balance", None, 404, "member_not_found"),
    ("member-transactions", "get", "/api/v1/members/{member}/transactions", None, 404, "member_not_found"),
    ("adjust-debit", "post", "/api/v1/adjustments", {"member_id": "{member}", "points": -100, "reason": "x"},
     404, "member_not_found"),
    ("adjust-credit", "post", "/api/v1/adjustments", {"member_id": "{member}", "points": 100, "reason": "x"},
     404, "member_not_found"),
    ("redeem-reward", "post", "/api/v1/redemptions", {"member_id": "{member}", "reward": "{reward}"},
     404, "member_not_found"),
    ("redeem-points", "post", "/api/v1/redemptions", {"member_id": "{member}", "points": 100},
     404, "member_not_found"),
    ("redeem-hold", "post", "/api/v1/redemptions", {"member_id": "{member}", "points": 100, "capture": False},
     404, "member_not_found"),
    ("redeem-own-member-their-reward", "post", "/api/v1/redemptions", {"member_id": "b-1", "reward": "{reward}"},
     404, "reward_not_found"),
    ("redemption-get", "get", "/api/v1/redemptions/{captured}", None, 404, "redemption_not_found"),
    ("redemption-capture", "post", "/api/v1/redemptions/{held}/capture", None, 404, "redemption_not_found"),
    ("redemption-void", "post", "/api/v1/redemptions/{held}/void", None, 404, "redemption_not_found"),
    ("redemption-cancel", "post", "/api/v1/redemptions/{captured}/cancel", None, 404, "redemption_not_found"),
    ("event-create", "post", "/api/v1/events", purchase("b-ev-1", "{member}", amount="500.00"),
     404, "member_not_found"),
    ("event-get", "get", "/api/v1/events/{event}", None, 404, None),
    ("webhook-get", "get", "/api/v1/webhook_endpoints/{endpoint}", None, 404, None),
    ("webhook-delete", "delete", "/api/v1/webhook_endpoints/{endpoint}", None, 404, None),
    ("members-cursor", "get", "/api/v1/members?starting_after={member}", None, 400, "invalid_cursor"),
    ("rewards-cursor", "get", "/api/v1/rewards?starting_after={reward}", None, 400, "invalid_cursor"),
    ("webhooks-cursor", "get", "/api/v1/webhook_endpoints?starting_after={endpoint}", None, 400, "invalid_cursor"),
    ("transactions-cursor", "get", "/api/v1/members/b-1/transactions?starting_after={entry}", None,
     400, "invalid_cursor"),
]


def fill(template, names: dict):
    if template is None:
        return None
    text = json.dumps(template) if not isinstance(template, str) else template
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return json.loads(text) if not isinstance(template, str) else text


@pytest.fixture
def world(program, make_program, make_member):
    """Program A with one of everything; program B with its own key and member."""
    spend_rule(program)
    a_member = make_member(program, external_id="a-1", email="a@a.aa", attributes={"tier": "x"})
    earn(a_member, 1000)
    reward = Reward.objects.create(program=program, code="rw-a", name="A's reward", cost=100, stock=5)
    captured = campaigns.redemption_create(member=a_member, reward=reward, key="a-captured")
    held = campaigns.redemption_create(member=a_member, points=50, capture=False, key="a-held")
    event = pipeline.event_submit(program=program, partner=None, payload=purchase("ev-a", "a-1", amount="20.00")).event
    endpoint = endpoint_create(program=program, url="https://a.example.com/hook")
    entry = Entry.objects.filter(member=a_member).order_by("id").first()

    b_program = make_program()
    b_member = make_member(b_program, external_id="b-1")
    earn(b_member, 1000)
    Reward.objects.create(program=b_program, code="rw-b", name="B's reward", cost=100)
    return {
        "a": client_for(program, "A"), "b": client_for(b_program, "B"), "program": program, "b_program": b_program,
        "names": {"member": a_member.external_id, "event": event.event_id, "reward": reward.code,
                  "held": held.public_id, "captured": captured.public_id, "endpoint": endpoint.public_id,
                  "entry": str(entry.pk)},
    }


def send(client, method, path, body, **extra):
    if body is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(path, body, format="json", **extra)


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_key", [False, True], ids=["plain", "idempotency-key"])
def test_other_programs_objects_are_404_as_if_they_did_not_exist(world, case, method, path, body, status, code,
                                                                with_key):
    before = snapshot(world["program"])
    extra = {"HTTP_IDEMPOTENCY_KEY": f"iso-{case}"} if with_key and method == "post" else {}
    theirs = send(world["b"], method, fill(path, world["names"]), fill(body, world["names"]), **extra)
    error = assert_error(theirs, status, code)
    extra = {"HTTP_IDEMPOTENCY_KEY": f"iso-ghost-{case}"} if extra else {}
    ghost = send(world["b"], method, fill(path, GHOST), fill(body, GHOST), **extra)
    ghost_error = assert_error(ghost, status, code)

    assert (error["type"], error["code"], error["param"]) == (ghost_error["type"], ghost_error["code"],
                                                              ghost_error["param"])
    message = error["message"]
    used = [name for name in GHOST if "{" + name + "}" in path + json.dumps(body)]
    for name in used:
        message = message.replace(world["names"][name], GHOST[name])
    assert message == ghost_error["message"]
    assert snapshot(world["program"]) == before
    assert run_audit() == []


def test_lists_show_only_the_callers_program(world):
    b = world["b"]
    assert [m["external_id"] for m in assert_list(b.get("/api/v1/members").json())] == ["b-1"]
    assert [r["id"] for r in assert_list(b.get("/api/v1/rewards").json())] == ["rw-b"]
    assert assert_list(b.get("/api/v1/webhook_endpoints").json()) == []
    assert [m["external_id"] for m in world["a"].get("/api/v1/members").json()["data"]] == ["a-1"]


def test_a_batch_naming_another_programs_member_rejects_that_event_only(world):
    before = snapshot(world["program"])
    response = world["b"].post("/api/v1/events/batch", {"events": [
        purchase("b-batch-1", world["names"]["member"], amount="500.00"), purchase("b-batch-2", "b-1")]},
        format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in body["rejected"]] == [(0, "member_not_found")]
    assert snapshot(world["program"]) == before


def test_event_ids_are_per_program(world):
    """B sending A's event_id gets its own, new event; A's stays A's."""
    before = snapshot(world["program"])
    event_id = world["names"]["event"]
    response = world["b"].post("/api/v1/events", purchase(event_id, "b-1", amount="7.00"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["awards"] == []  # B has no rules: not A's result replayed
    assert response.json()["balance"]["lifetime_earned"] == 1000
    assert world["b"].get(f"/api/v1/events/{event_id}").json()["awards"] == []
    assert world["a"].get(f"/api/v1/events/{event_id}").json()["awards"][0]["points"] == 20
    assert snapshot(world["program"]) == before


def test_a_can_still_use_its_objects_afterwards(world):
    """The 404s above are about the caller, not broken objects: A's own key works on all of them."""
    a, names = world["a"], world["names"]
    assert a.get(f"/api/v1/members/{names['member']}").status_code == 200
    assert a.get(f"/api/v1/redemptions/{names['captured']}").status_code == 200
    assert a.post(f"/api/v1/redemptions/{names['held']}/capture").status_code == 200
    assert a.post(f"/api/v1/redemptions/{names['captured']}/cancel").status_code == 200
    assert a.get(f"/api/v1/webhook_endpoints/{names['endpoint']}").status_code == 200
    assert a.get(f"/api/v1/events/{names['event']}").status_code == 200
    assert run_audit() == []
