"""Details of the contract a partner's client trips over: the auth scheme's case, a redemption's
two forms kept apart, compact JSON on every error, the idempotency header in the schema."""

from __future__ import annotations

import pytest

from accounts.services import partner_create
from campaigns.models import Redemption
from tests.api.fixtures import assert_error, bare_client, earn

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(program, make_member, scheme):
    make_member(program, external_id="c-1")
    _partner, key = partner_create(program=program, name="POS")
    client = bare_client()
    response = client.get("/api/v1/members/c-1/balance", HTTP_AUTHORIZATION=f"{scheme} {key}")
    assert response.status_code == 200, response.content


def test_a_redemption_of_points_refuses_a_quantity(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 500)
    response = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 100, "quantity": 3}, format="json")
    assert_error(response, 400, "invalid_redemption", param="quantity")
    assert not Redemption.objects.exists()


def test_an_unknown_api_path_is_a_compact_404(api):
    response = api.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert response.content == (b'{"error":{"type":"not_found","code":"resource_missing",'
                                b'"message":"No such resource.","param":null}}')


def test_the_events_posts_take_an_idempotency_key_in_the_schema(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/v1/events", "/api/v1/events/batch"):
        names = [p["name"] for p in schema["paths"][path]["post"].get("parameters", [])]
        assert "Idempotency-Key" in names, path


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/api/v1/redemptions", {"member_id": "c-1", "points": "100"}, "points"),
    ("/api/v1/redemptions", {"member_id": "c-1", "points": 100.0}, "points"),
    ("/api/v1/redemptions", {"member_id": "c-1", "points": True}, "points"),
    ("/api/v1/redemptions", {"member_id": "c-1", "points": 100, "capture": "no"}, "capture"),
    ("/api/v1/redemptions", {"member_id": "c-1", "points": 100, "capture": 0}, "capture"),
    ("/api/v1/redemptions", {"member_id": "c-1", "reward": "mug", "quantity": "2"}, "quantity"),
    ("/api/v1/adjustments", {"member_id": "c-1", "points": "100", "reason": "x"}, "points"),
])
def test_numbers_and_booleans_are_json_ones_not_strings(api, program, make_member, path, body, param):
    """API.md: points are integers. A string, a float or a boolean in their place is refused, not converted."""
    from campaigns.models import Reward
    from ledger.models import Entry

    member = make_member(program, external_id="c-1")
    earn(member, 500)
    Reward.objects.create(program=program, code="mug", name="Mug", cost=10, vouchers="generated")
    response = api.post(path, body, format="json")
    assert_error(response, 400, "invalid_field", param=param)
    assert not Redemption.objects.exists()
    assert Entry.objects.filter(member=member).count() == 1


@pytest.mark.parametrize("action", ["capture", "void"])
def test_a_body_on_a_redemption_action_is_an_unknown_field(api, program, make_member, action):
    from campaigns import services as campaigns

    member = make_member(program, external_id="c-1")
    earn(member, 500)
    held = campaigns.redemption_create(member=member, points=10, capture=False, key="held")
    response = api.post(f"/api/v1/redemptions/{held.public_id}/{action}", {"note": "x"}, format="json")
    assert_error(response, 400, "unknown_field", param="note")
    held.refresh_from_db()
    assert held.status == "held"
