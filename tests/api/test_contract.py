"""The partner API against /work/shared/API.md: every path, shape, status and error code it names."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Member, PartnerAPIKey
from campaigns.models import Redemption, Reward
from ledger.audit import run_audit
from ledger.models import Balance, Entry
from loyalty.api import urls as api_urls
from rules.models import EventType, InboundEvent
from rules.services import event_type_save
from tests.api.fixtures import (
    ADJUSTMENT_KEYS,
    AWARD_KEYS,
    BATCH_KEYS,
    BATCH_REJECTED_KEYS,
    ERROR_KEYS,
    EVENT_KEYS,
    EVENT_PROCESSED_KEYS,
    EVENT_STATUSES,
    REDEMPTION_KEYS,
    REWARD_KEYS,
    assert_balance,
    assert_error,
    assert_list,
    assert_member,
    assert_timestamp,
    assert_transaction,
    bare_client,
    client_for,
    earn,
    purchase,
    spend_rule,
)

# Every route of loyalty/api/urls.py: (url name, method, path, JSON body).
ROUTES = [
    ("member-list", "get", "/api/v1/members", None),
    ("member-list", "post", "/api/v1/members", {"external_id": "new-1"}),
    ("member-detail", "get", "/api/v1/members/c-1", None),
    ("member-detail", "patch", "/api/v1/members/c-1", {"email": "x@y.z"}),
    ("member-balance", "get", "/api/v1/members/c-1/balance", None),
    ("member-transactions", "get", "/api/v1/members/c-1/transactions", None),
    ("adjustment-create", "post", "/api/v1/adjustments", {"member_id": "c-1", "points": 5, "reason": "x"}),
    ("reward-list", "get", "/api/v1/rewards", None),
    ("redemption-create", "post", "/api/v1/redemptions", {"member_id": "c-1", "points": 5}),
    ("redemption-detail", "get", "/api/v1/redemptions/rdm_x", None),
    ("redemption-capture", "post", "/api/v1/redemptions/rdm_x/capture", None),
    ("redemption-void", "post", "/api/v1/redemptions/rdm_x/void", None),
    ("redemption-cancel", "post", "/api/v1/redemptions/rdm_x/cancel", None),
    ("event-create", "post", "/api/v1/events", purchase("ev-1", "c-1")),
    ("event-batch", "post", "/api/v1/events/batch", {"events": [purchase("ev-2", "c-1")]}),
    ("event-detail", "get", "/api/v1/events/ev-1", None),
    ("webhook-endpoint-list", "get", "/api/v1/webhook_endpoints", None),
    ("webhook-endpoint-list", "post", "/api/v1/webhook_endpoints", {"url": "https://example.com/hook"}),
    ("webhook-endpoint-detail", "get", "/api/v1/webhook_endpoints/we_x", None),
    ("webhook-endpoint-detail", "delete", "/api/v1/webhook_endpoints/we_x", None),
]
ROUTE_IDS = [f"{method.upper()} {path}" for _name, method, path, _body in ROUTES]


def call(client, method, path, body=None, **extra):
    if body is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(path, body, format="json", **extra)


def test_every_route_is_in_the_table():
    assert {name for name, *_ in ROUTES} == {pattern.name for pattern in api_urls.urlpatterns}


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method", "path", "body"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("header", [None, "Bearer nope.nope", "Bearer ", "Basic abc", "Bearer a b"])
def test_no_key_or_a_bad_key_is_401(db, program, name, method, path, body, header):
    client = bare_client()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    members = Member.objects.count()
    response = call(client, method, path, body)
    assert_error(response, 401, error_type="authentication_error", param=None)
    assert Member.objects.count() == members


def test_a_revoked_or_expired_key_is_401(program, api):
    client = client_for(program, "Till")
    assert client.get("/api/v1/rewards").status_code == 200
    api_key = PartnerAPIKey.objects.get(partner__name="Till")
    api_key.revoked = True
    api_key.save()
    assert_error(client.get("/api/v1/rewards"), 401, error_type="authentication_error")

    other = client_for(program, "Kiosk")
    PartnerAPIKey.objects.filter(partner__name="Kiosk").update(expiry_date=timezone.now() - dt.timedelta(seconds=1))
    assert_error(other.get("/api/v1/rewards"), 401, error_type="authentication_error")


def test_a_disabled_partner_is_401(program):
    from accounts.models import Partner

    client = client_for(program, "Gone")
    Partner.objects.filter(name="Gone").update(is_active=False)
    assert_error(client.get("/api/v1/rewards"), 401, error_type="authentication_error")


def test_keys_are_stored_hashed(program):
    client = client_for(program, "Hashed")
    stored = PartnerAPIKey.objects.get(partner__name="Hashed")
    assert client.api_key not in {str(value) for value in stored.__dict__.values()}


# --- strict input --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_unknown_query_parameter_is_400(api, name, method, path, body):
    response = call(api, method, f"{path}?bogus=1", body)
    assert_error(response, 400, "unknown_parameter", param="bogus")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/api/v1/members", {"external_id": "u-1", "nickname": "x"}, "nickname"),
        ("/api/v1/adjustments", {"member_id": "c-1", "points": 5, "reason": "x", "note": "y"}, "note"),
        ("/api/v1/redemptions", {"member_id": "c-1", "points": 5, "coupon": "y"}, "coupon"),
        ("/api/v1/events", {**purchase("ev-u", "c-1"), "coupon": "X"}, "coupon"),
        ("/api/v1/events/batch", {"events": [purchase("ev-b", "c-1")], "mode": "fast"}, "mode"),
        ("/api/v1/webhook_endpoints", {"url": "https://example.com/h", "secret": "s"}, "secret"),
    ],
)
def test_unknown_body_field_is_400_and_changes_nothing(api, program, make_member, path, body, param):
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    response = api.post(path, body, format="json")
    assert_error(response, 400, "unknown_field", param=param)
    assert Balance.objects.get(member=member).available == 100
    assert Member.objects.filter(program=program).count() == 1
    assert not Redemption.objects.exists()


def test_unknown_body_field_on_patch_is_400_and_changes_nothing(api, program, make_member):
    make_member(program, external_id="c-1", email="a@b.c")
    response = api.patch("/api/v1/members/c-1", {"email": "x@y.z", "tier": "gold"}, format="json")
    assert_error(response, 400, "unknown_field", param="tier")
    member = Member.objects.get(external_id="c-1")
    assert (member.email, member.tier) == ("a@b.c", "")


@pytest.mark.parametrize("action", ["capture", "void", "cancel"])
def test_redemption_actions_refuse_a_body(api, program, make_member, action):
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    capture = action == "cancel"
    created = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10, "capture": capture}, format="json")
    response = api.post(f"/api/v1/redemptions/{created.json()['id']}/{action}", {"reason": "x"}, format="json")
    assert_error(response, 400)
    assert Redemption.objects.get().status == ("captured" if capture else "held")


def test_invalid_json_is_400_in_the_envelope(api):
    response = api.generic("POST", "/api/v1/members", "{not json", content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "", " 5", "1e2"])
@pytest.mark.parametrize("path", ["/api/v1/members", "/api/v1/members/c-1/transactions", "/api/v1/rewards",
                                  "/api/v1/webhook_endpoints"])
def test_limit_out_of_range_is_400(api, program, make_member, path, limit):
    make_member(program, external_id="c-1")
    assert_error(api.get(path, {"limit": limit}), 400, param="limit")


@pytest.mark.parametrize("path", ["/api/v1/members", "/api/v1/members/c-1/transactions", "/api/v1/rewards",
                                  "/api/v1/webhook_endpoints"])
def test_limit_bounds_and_unknown_cursor(api, program, make_member, path):
    make_member(program, external_id="c-1")
    assert api.get(path, {"limit": "1"}).status_code == 200
    assert api.get(path, {"limit": "100"}).status_code == 200
    assert_error(api.get(path, {"starting_after": "no-such-thing"}), 400, param="starting_after")


def test_unknown_route_and_method_use_the_envelope(api):
    assert_error(api.get("/api/v1/nothing-here"), 404, error_type="not_found")
    response = api.delete("/api/v1/members")
    assert response.status_code == 405
    assert set(response.json()) == {"error"} and set(response.json()["error"]) == ERROR_KEYS


# --- schema and docs -----------------------------------------------------------------------


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "openapi: 3" in text or '"openapi": "3' in text
    for path in ["/api/v1/members", "/api/v1/members/{external_id}", "/api/v1/members/{external_id}/balance",
                 "/api/v1/members/{external_id}/transactions", "/api/v1/adjustments", "/api/v1/rewards",
                 "/api/v1/redemptions", "/api/v1/redemptions/{redemption_id}/capture",
                 "/api/v1/redemptions/{redemption_id}/void", "/api/v1/redemptions/{redemption_id}/cancel",
                 "/api/v1/events", "/api/v1/events/batch", "/api/v1/events/{event_id}"]:
        assert f"{path}:" in text or f'"{path}"' in text, path
    assert bare_client().get("/api/docs/").status_code == 200


# --- members -------------------------------------------------------------------------------


def test_member_create_get_patch_shapes(api):
    created = api.post("/api/v1/members", {"external_id": "c-1", "email": "a@b.c", "attributes": {"vip": True}},
                       format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert_member(body)
    assert (body["external_id"], body["email"], body["attributes"], body["status"]) == (
        "c-1", "a@b.c", {"vip": True}, "active")
    assert body["balance"] == {"available": 0, "pending": 0, "held": 0, "lifetime_earned": 0,
                               "lifetime_redeemed": 0, "lifetime_expired": 0, "expiring": []}

    fetched = api.get("/api/v1/members/c-1")
    assert fetched.status_code == 200 and fetched.json() == body

    patched = api.patch("/api/v1/members/c-1", {"email": "x@y.z", "attributes": {"vip": False}}, format="json")
    assert patched.status_code == 200, patched.json()
    assert_member(patched.json())
    assert (patched.json()["email"], patched.json()["attributes"]) == ("x@y.z", {"vip": False})
    assert api.get("/api/v1/members/c-1").json()["email"] == "x@y.z"


def test_member_exists_is_409(api):
    assert api.post("/api/v1/members", {"external_id": "c-1"}, format="json").status_code == 201
    response = api.post("/api/v1/members", {"external_id": "c-1", "email": "other@b.c"}, format="json")
    assert_error(response, 409, "member_exists", error_type="conflict")
    assert Member.objects.filter(external_id="c-1").count() == 1


def test_member_not_found_is_404_everywhere(api):
    for response in [
        api.get("/api/v1/members/ghost"),
        api.patch("/api/v1/members/ghost", {"email": "x@y.z"}, format="json"),
        api.get("/api/v1/members/ghost/balance"),
        api.get("/api/v1/members/ghost/transactions"),
        api.post("/api/v1/adjustments", {"member_id": "ghost", "points": 5, "reason": "x"}, format="json"),
        api.post("/api/v1/redemptions", {"member_id": "ghost", "points": 5}, format="json"),
        api.post("/api/v1/events", purchase("ev-ghost", "ghost"), format="json"),
    ]:
        assert_error(response, 404, "member_not_found", error_type="not_found")


def test_members_list_paginates_with_starting_after(api, program, make_member):
    ids = [make_member(program, external_id=f"p-{i:02}").external_id for i in range(25)]
    first = api.get("/api/v1/members")
    data = assert_list(first.json())
    assert len(data) == 20 and first.json()["has_more"] is True  # default limit 20
    for member in data:
        assert_member(member)

    seen, after = [], None
    while True:
        params = {"limit": 10} if after is None else {"limit": 10, "starting_after": after}
        body = api.get("/api/v1/members", params).json()
        page = [m["external_id"] for m in assert_list(body)]
        seen += page
        if not body["has_more"]:
            break
        after = page[-1]
    assert seen == ids
    assert len(seen) == len(set(seen))
    last = api.get("/api/v1/members", {"limit": 5, "starting_after": ids[19]}).json()
    assert [m["external_id"] for m in last["data"]] == ids[20:] and last["has_more"] is False
    exact = api.get("/api/v1/members", {"limit": 25}).json()
    assert len(exact["data"]) == 25 and exact["has_more"] is False


# --- balance and transactions --------------------------------------------------------------


def test_balance_shape_and_expiring_soonest_first(api, program, make_member):
    member = make_member(program, external_id="c-1")
    now = timezone.now()
    earn(member, 300, now=now - dt.timedelta(days=10))
    earn(member, 100, now=now - dt.timedelta(days=200))
    earn(member, 200, now=now - dt.timedelta(days=50))
    response = api.get("/api/v1/members/c-1/balance")
    assert response.status_code == 200
    balance = response.json()
    assert_balance(balance)
    assert balance["available"] == 600 and balance["lifetime_earned"] == 600
    assert [lot["points"] for lot in balance["expiring"]] == [100, 200, 300]


def test_points_are_spent_oldest_expiry_first_and_a_cancel_returns_them_to_their_lots(api, program, make_member):
    member = make_member(program, external_id="c-1")
    now = timezone.now()
    earn(member, 100, now=now - dt.timedelta(days=200))
    earn(member, 100, now=now - dt.timedelta(days=10))
    before = api.get("/api/v1/members/c-1/balance").json()["expiring"]
    redeemed = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 150, "description": "paid with points"},
                        format="json")
    assert redeemed.status_code == 201, redeemed.json()
    assert [lot["points"] for lot in redeemed.json()["balance"]["expiring"]] == [50]
    assert redeemed.json()["balance"]["expiring"][0]["expires_at"] == before[1]["expires_at"]
    cancelled = api.post(f"/api/v1/redemptions/{redeemed.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.json()
    assert cancelled.json()["balance"]["expiring"] == before
    assert run_audit() == []


def test_transactions_shape_kinds_and_newest_first(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 500)
    api.post("/api/v1/adjustments", {"member_id": "c-1", "points": -20, "reason": "fix"}, format="json")
    redeemed = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 30}, format="json").json()
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 40, "capture": False}, format="json").json()
    api.post(f"/api/v1/redemptions/{held['id']}/void")
    api.post(f"/api/v1/redemptions/{redeemed['id']}/cancel")
    response = api.get("/api/v1/members/c-1/transactions")
    assert response.status_code == 200
    data = assert_list(response.json())
    for entry in data:
        assert_transaction(entry)
    assert [(t["kind"], t["points"]) for t in data] == [
        ("reverse", 30), ("release", 40), ("hold", -40), ("redeem", -30), ("adjust", -20), ("earn", 500)]
    assert data[3]["source"] == {"type": "redemption", "id": redeemed["id"]}
    created = [assert_timestamp(t["created_at"]) for t in data]
    assert created == sorted(created, reverse=True)


def test_transactions_paginate_newest_first_with_starting_after(api, program, make_member):
    member = make_member(program, external_id="c-1")
    base = timezone.now() - dt.timedelta(days=1)
    for i in range(23):
        earn(member, i + 1, now=base + dt.timedelta(seconds=i // 2))  # pairs share a timestamp
    expected = list(Entry.objects.filter(member=member).order_by("-created_at", "-id").values_list("id", flat=True))
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 5} if after is None else {"limit": 5, "starting_after": after}
        body = api.get("/api/v1/members/c-1/transactions", params).json()
        page = [t["id"] for t in assert_list(body)]
        pages += 1
        seen += page
        assert body["has_more"] is (len(seen) < 23)
        if not body["has_more"]:
            break
        after = page[-1]
    assert pages == 5
    assert seen == [str(pk) for pk in expected]
    assert len(api.get("/api/v1/members/c-1/transactions").json()["data"]) == 20
    # Not an entry of this member's: a bad cursor, however many digits (Python refuses to read a
    # number of more than 4,300 digits, and no id has more than 19).
    for bad in ("0", "99999999999999999999999", "9" * 5000, "12a"):
        response = api.get("/api/v1/members/c-1/transactions", {"starting_after": bad})
        assert_error(response, 400, param="starting_after")


def test_adjustment_shape_and_insufficient_points(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    response = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": -50, "reason": "goodwill undo"},
                        format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == ADJUSTMENT_KEYS
    assert_transaction(body["entry"])
    assert (body["entry"]["kind"], body["entry"]["points"], body["entry"]["description"]) == (
        "adjust", -50, "goodwill undo")
    assert_balance(body["balance"])
    assert body["balance"]["available"] == 50

    short = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": -51, "reason": "x"}, format="json")
    assert_error(short, 422, "insufficient_points", error_type="invalid_request_error")
    assert Balance.objects.get(member=member).available == 50
    credit = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 25, "reason": "welcome"}, format="json")
    assert credit.status_code == 201 and credit.json()["balance"]["available"] == 75
    assert_error(api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 0, "reason": "x"}, format="json"),
                 400, param="points")
    assert_error(api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 5}, format="json"), 400,
                 param="reason")


# --- events --------------------------------------------------------------------------------


def test_event_processed_shape_and_replay_by_event_id(api, program, make_member):
    member = make_member(program, external_id="c-1")
    spend_rule(program)
    first = api.post("/api/v1/events", purchase("pos-77-123", "c-1", amount="42.50"), format="json")
    assert first.status_code == 201, first.json()
    body = first.json()
    assert set(body) == EVENT_PROCESSED_KEYS
    assert body["event_id"] == "pos-77-123" and body["status"] == "processed"
    for award in body["awards"]:
        assert set(award) == AWARD_KEYS
    assert body["awards"] == [{"points": 42, "rule": "1 point per unit", "campaign": None}]
    assert_balance(body["balance"])
    again = api.post("/api/v1/events", purchase("pos-77-123", "c-1", amount="42.50"), format="json")
    assert again.status_code == 200 and again.json() == body
    assert Entry.objects.filter(member=member).count() == 1


def test_event_detail_has_the_named_fields(api, program, make_member):
    make_member(program, external_id="c-1")
    spend_rule(program)
    api.post("/api/v1/events", purchase("pos-1", "c-1"), format="json")
    response = api.get("/api/v1/events/pos-1")
    assert response.status_code == 200
    body = response.json()
    assert EVENT_KEYS <= set(body)
    assert (body["event_id"], body["type"], body["status"], body["error"]) == ("pos-1", "purchase", "processed", None)
    assert body["status"] in EVENT_STATUSES
    assert [set(a) for a in body["awards"]] == [AWARD_KEYS]
    assert_error(api.get("/api/v1/events/no-such-event"), 404, error_type="not_found")


def test_event_detail_has_the_keys_api_md_lists_and_the_trace(api, program, make_member):
    """API.md: GET /events/{event_id} -> {"event_id", "type", "status", "awards", "error"};
    docs/api.md adds the explanation trace, and nothing else."""
    make_member(program, external_id="c-1")
    api.post("/api/v1/events", purchase("pos-1", "c-1"), format="json")
    assert set(api.get("/api/v1/events/pos-1").json()) == EVENT_KEYS | {"trace"}


def test_event_for_an_unknown_member_is_404_unless_the_program_enrolls(api, program):
    assert_error(api.post("/api/v1/events", purchase("ev-1", "who"), format="json"), 404, "member_not_found",
                 param="member_id")
    assert not Member.objects.filter(external_id="who").exists()
    program.enroll_on_first_event = True
    program.save()
    response = api.post("/api/v1/events", purchase("ev-2", "who"), format="json")
    assert response.status_code == 201, response.json()
    assert Member.objects.filter(program=program, external_id="who").exists()


def test_event_failing_its_schema_is_rejected_and_kept(api, program, make_member):
    make_member(program, external_id="c-1")
    event_type_save(event_type=EventType(program=program, name="review_written", schema={
        "type": "object", "required": ["stars"], "properties": {"stars": {"type": "integer"}}}))
    response = api.post("/api/v1/events", {"event_id": "rv-1", "type": "review_written", "member_id": "c-1",
                                           "properties": {"stars": "five"}}, format="json")
    error = assert_error(response, 400, param="properties.stars")
    detail = api.get("/api/v1/events/rv-1").json()
    assert detail["status"] == "rejected" and detail["error"] == error
    assert InboundEvent.objects.get(event_id="rv-1").status == "rejected"


def test_batch_shape_bad_events_do_not_reject_the_others(api, program, make_member):
    make_member(program, external_id="c-1")
    api.post("/api/v1/events", purchase("seen-before", "c-1"), format="json")
    events = [purchase("b-1", "c-1"), {"event_id": "b-2", "type": "purchase"}, purchase("b-3", "ghost"),
              purchase("b-1", "c-1"), purchase("seen-before", "c-1"), purchase("b-4", "c-1")]
    response = api.post("/api/v1/events/batch", {"events": events}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == BATCH_KEYS
    assert (body["accepted"], body["duplicates"]) == (2, 2)
    for rejected in body["rejected"]:
        assert set(rejected) == BATCH_REJECTED_KEYS
        assert set(rejected["error"]) == ERROR_KEYS
    assert [(r["index"], r["event_id"], r["error"]["code"]) for r in body["rejected"]] == [
        (1, "b-2", "missing_field"), (2, "b-3", "member_not_found")]
    assert api.get("/api/v1/events/b-1").json()["status"] == "received"
    assert api.get("/api/v1/events/b-2").json()["status"] == "rejected"


def test_batch_limits(api):
    assert_error(api.post("/api/v1/events/batch", {"events": [purchase(f"e-{i}", "c-1") for i in range(1001)]},
                          format="json"), 400, "batch_too_large", param="events")
    assert_error(api.post("/api/v1/events/batch", {"events": []}, format="json"), 400, param="events")
    assert_error(api.post("/api/v1/events/batch", {"events": "x"}, format="json"), 400, param="events")
    assert not InboundEvent.objects.exists()


# --- rewards and redemptions ---------------------------------------------------------------


def test_rewards_shape_and_availability(api, program):
    Reward.objects.create(program=program, code="free-coffee", name="Free coffee", cost=150)
    Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=1000, stock=50)
    Reward.objects.create(program=program, code="gone", name="Gone", cost=10, stock=0)
    Reward.objects.create(program=program, code="off", name="Off", cost=10, is_active=False)
    response = api.get("/api/v1/rewards")
    assert response.status_code == 200
    data = assert_list(response.json())
    for reward in data:
        assert set(reward) == REWARD_KEYS
    by_id = {r["id"]: r for r in data}
    assert by_id["free-coffee"] == {"id": "free-coffee", "name": "Free coffee", "cost": 150, "stock": None,
                                    "available": True}
    assert by_id["tote-bag"]["stock"] == 50 and by_id["tote-bag"]["available"] is True
    assert by_id["gone"]["available"] is False and by_id["off"]["available"] is False


def test_rewards_paginate_with_starting_after(api, program):
    codes = [Reward.objects.create(program=program, code=f"r-{i:02}", name=f"R {i}", cost=10 + i).code
             for i in range(23)]
    seen, after = [], None
    while True:
        params = {"limit": 10} if after is None else {"limit": 10, "starting_after": after}
        body = api.get("/api/v1/rewards", params).json()
        page = [r["id"] for r in assert_list(body)]
        seen += page
        assert body["has_more"] is (len(seen) < 23)
        if not body["has_more"]:
            break
        after = page[-1]
    assert sorted(seen) == sorted(codes) and len(seen) == len(set(seen)) == 23
    assert len(api.get("/api/v1/rewards").json()["data"]) == 20


def test_redemption_shapes_held_capture_void_cancel(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 1000)
    Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=300, stock=5, vouchers="generated")
    captured = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag", "quantity": 1},
                        format="json")
    assert captured.status_code == 201, captured.json()
    body = captured.json()
    assert REDEMPTION_KEYS <= set(body)
    assert (body["status"], body["points"], body["reward"]) == ("captured", 300, "tote-bag")
    assert isinstance(body["voucher_code"], str) and body["voucher_code"]
    assert_balance(body["balance"])
    assert body["balance"]["available"] == 700

    by_points = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 100,
                                                 "description": "paid with points"}, format="json").json()
    assert (by_points["status"], by_points["points"], by_points["reward"], by_points["voucher_code"]) == (
        "captured", 100, None, None)

    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag", "capture": False},
                    format="json")
    assert held.status_code == 201
    assert (held.json()["status"], held.json()["voucher_code"]) == ("held", None)
    assert (held.json()["balance"]["available"], held.json()["balance"]["held"]) == (300, 300)
    capture = api.post(f"/api/v1/redemptions/{held.json()['id']}/capture")
    assert capture.status_code == 200, capture.json()
    assert REDEMPTION_KEYS <= set(capture.json())
    assert capture.json()["status"] == "captured" and capture.json()["voucher_code"]
    assert (capture.json()["balance"]["held"], capture.json()["balance"]["lifetime_redeemed"]) == (0, 700)

    held2 = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 50, "capture": False}, format="json").json()
    void = api.post(f"/api/v1/redemptions/{held2['id']}/void")
    assert void.status_code == 200 and void.json()["status"] == "voided"
    assert void.json()["balance"]["available"] == 300

    cancel = api.post(f"/api/v1/redemptions/{body['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    assert cancel.json()["balance"]["available"] == 600
    assert Reward.objects.get(code="tote-bag").stock == 4
    assert api.get(f"/api/v1/redemptions/{body['id']}").json()["status"] == "cancelled"
    assert run_audit() == []


def test_redemption_and_capture_have_the_keys_api_md_lists_and_the_documented_extras(api, program, make_member):
    """API.md: -> 201 {"id", "status", "points", "reward", "voucher_code", "balance"}; docs/api.md adds
    member_id, quantity and created_at, and nothing else."""
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    response = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json")
    assert set(response.json()) == REDEMPTION_KEYS | {"member_id", "quantity", "created_at"}


def test_redemption_errors(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 500)
    Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=1000, stock=1)
    Reward.objects.create(program=program, code="mug", name="Mug", cost=100, stock=0)
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag"}, format="json"),
                 422, "insufficient_points", error_type="invalid_request_error")
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 501}, format="json"),
                 422, "insufficient_points")
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "mug"}, format="json"),
                 409, "out_of_stock", error_type="conflict")
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "nope"}, format="json"),
                 404, error_type="not_found", param="reward")
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "mug", "points": 5}, format="json"),
                 400)
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1"}, format="json"), 400)
    assert_error(api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 0}, format="json"), 400,
                 param="points")
    for action in ["capture", "void", "cancel"]:
        assert_error(api.post(f"/api/v1/redemptions/rdm_nope/{action}"), 404, error_type="not_found")
    assert_error(api.get("/api/v1/redemptions/rdm_nope"), 404, error_type="not_found")
    assert (Reward.objects.get(code="tote-bag").stock, Reward.objects.get(code="mug").stock) == (1, 0)
    assert Balance.objects.get(member=member).available == 500
    assert not Redemption.objects.exists()


def test_redemption_state_errors_are_409(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 500)
    captured = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json").json()
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10, "capture": False}, format="json").json()
    assert_error(api.post(f"/api/v1/redemptions/{captured['id']}/void"), 409, error_type="conflict")
    assert_error(api.post(f"/api/v1/redemptions/{held['id']}/cancel"), 409, error_type="conflict")
    assert api.post(f"/api/v1/redemptions/{held['id']}/void").status_code == 200
    assert_error(api.post(f"/api/v1/redemptions/{held['id']}/capture"), 409, error_type="conflict")


# --- webhook endpoints (not in API.md; the same conventions) -------------------------------


def test_webhook_endpoint_shapes(api):
    created = api.post("/api/v1/webhook_endpoints", {"url": "https://example.com/hook"}, format="json")
    assert created.status_code == 201, created.json()
    endpoint_id = created.json()["id"]
    assert "secret" in created.json()
    fetched = api.get(f"/api/v1/webhook_endpoints/{endpoint_id}").json()
    assert "secret" not in fetched
    assert [e["id"] for e in assert_list(api.get("/api/v1/webhook_endpoints").json())] == [endpoint_id]
    assert api.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 204
    assert_error(api.get(f"/api/v1/webhook_endpoints/{endpoint_id}"), 404, error_type="not_found")


def test_a_hold_not_captured_in_time_is_voided_by_itself(api, program, make_member):
    from campaigns.services import redemptions_void_expired

    member = make_member(program, external_id="c-1")
    earn(member, 100)
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 60, "capture": False}, format="json").json()
    later = timezone.now() + dt.timedelta(minutes=program.hold_timeout_minutes, seconds=1)
    assert redemptions_void_expired(now=later) == 1
    assert api.get(f"/api/v1/redemptions/{held['id']}").json()["status"] == "voided"
    balance = api.get("/api/v1/members/c-1/balance").json()
    assert (balance["available"], balance["held"]) == (100, 0)
    assert_error(api.post(f"/api/v1/redemptions/{held['id']}/capture"), 409, error_type="conflict")
    assert run_audit() == []


def test_every_entry_of_a_redemption_names_the_redemption_by_its_api_id(api, program, make_member):
    """``source`` of the entries a redemption writes (redeem, hold, release, reverse) is
    {"type": "redemption", "id": <the id the API gave>}: a partner can match them up."""
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    captured = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json").json()
    api.post(f"/api/v1/redemptions/{captured['id']}/cancel")
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 20, "capture": False}, format="json").json()
    api.post(f"/api/v1/redemptions/{held['id']}/void")
    entries = api.get("/api/v1/members/c-1/transactions").json()["data"]
    sources = {(t["kind"], t["points"]): t["source"] for t in entries if t["kind"] != "earn"}
    assert sources == {
        ("redeem", -10): {"type": "redemption", "id": captured["id"]},
        ("reverse", 10): {"type": "redemption", "id": captured["id"]},
        ("hold", -20): {"type": "redemption", "id": held["id"]},
        ("release", 20): {"type": "redemption", "id": held["id"]},
    }


def test_an_event_body_of_null_is_400_not_500(api):
    response = api.generic("POST", "/api/v1/events", "null", content_type="application/json")
    assert_error(response, 400)


def test_a_null_event_in_a_batch_rejects_only_that_event(api, program, make_member):
    """API.md: one bad event never rejects the others."""
    make_member(program, external_id="c-1")
    body = '{"events": [null, {"event_id": "ok-1", "type": "signup", "member_id": "c-1"}]}'
    response = api.generic("POST", "/api/v1/events/batch", body, content_type="application/json")
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in response.json()["rejected"]] == [(0, "invalid_event")]
