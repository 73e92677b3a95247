"""The partner API of webhook endpoints: contract, validation, isolation between programs."""

from __future__ import annotations

import pytest

from webhooks.models import WebhookEndpoint
from webhooks.services import MAX_ENDPOINTS_PER_PROGRAM

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/loyalty"


def create(api, body=None, **headers):
    return api.post("/api/v1/webhook_endpoints", body if body is not None else {"url": URL}, format="json",
                    **headers)


def test_create_shows_the_secret_once(api, program):
    response = create(api, {"url": URL, "event_types": ["reward.redeemed", "points.earned", "points.earned"]})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {"id", "url", "event_types", "is_active", "created_at", "secret"}
    assert body["id"].startswith("we_") and body["secret"].startswith("whsec_")
    assert (body["url"], body["event_types"], body["is_active"]) == (URL, ["points.earned", "reward.redeemed"], True)
    stored = WebhookEndpoint.objects.get(public_id=body["id"])
    assert (stored.program_id, stored.secret, stored.partner.name) == (program.pk, body["secret"], "Shop")

    detail = api.get(f"/api/v1/webhook_endpoints/{body['id']}")
    assert detail.status_code == 200
    assert detail.json() == {k: v for k, v in body.items() if k != "secret"}
    listed = api.get("/api/v1/webhook_endpoints").json()
    assert listed == {"data": [detail.json()], "has_more": False}


def test_no_event_types_means_all(api):
    body = create(api).json()
    assert body["event_types"] == []


def test_delete(api):
    endpoint_id = create(api).json()["id"]
    assert api.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 204
    missing = api.get(f"/api/v1/webhook_endpoints/{endpoint_id}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert api.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 404


def test_other_programs_endpoints_are_404(api, other_api):
    endpoint_id = create(api).json()["id"]
    assert other_api.get(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 404
    assert other_api.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 404
    assert other_api.get("/api/v1/webhook_endpoints").json() == {"data": [], "has_more": False}
    assert other_api.get(f"/api/v1/webhook_endpoints?starting_after={endpoint_id}").status_code == 400
    assert api.get(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 200


def test_list_pages_with_a_cursor(api):
    ids = [create(api, {"url": f"{URL}/{n}"}).json()["id"] for n in range(3)]
    first = api.get("/api/v1/webhook_endpoints?limit=2").json()
    assert [e["id"] for e in first["data"]] == ids[:2] and first["has_more"] is True
    assert all("secret" not in e for e in first["data"])
    second = api.get(f"/api/v1/webhook_endpoints?limit=2&starting_after={ids[1]}").json()
    assert [e["id"] for e in second["data"]] == ids[2:] and second["has_more"] is False
    assert api.get("/api/v1/webhook_endpoints?starting_after=we_nope").json()["error"]["code"] == "invalid_cursor"
    assert api.get("/api/v1/webhook_endpoints?page=2").json()["error"]["code"] == "unknown_parameter"


def test_idempotency_key_replays_the_creation(api):
    first = create(api, HTTP_IDEMPOTENCY_KEY="we-1")
    again = create(api, HTTP_IDEMPOTENCY_KEY="we-1")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"url": "ftp://hooks.example.com/x"}, "invalid_url", "url"),
    ({"url": "not a url"}, "invalid_field", "url"),
    ({}, "missing_field", "url"),
    ({"url": "https://user:pw@hooks.example.com/"}, "invalid_url", "url"),
    ({"url": URL, "event_types": ["points.spent"]}, "invalid_event_type", "event_types"),
    ({"url": URL, "event_types": "points.earned"}, "not_a_list", "event_types"),
    ({"url": URL, "secret": "mine"}, "unknown_field", "secret"),
])
def test_invalid_input_is_400_in_the_envelope(api, body, code, param):
    response = create(api, body)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert not WebhookEndpoint.objects.exists()


def test_production_takes_public_https_only(api, settings):
    settings.DEBUG = False
    for url in ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://[::1]/x",
                "https://localhost/x", "https://169.254.169.254/latest"):
        response = create(api, {"url": url})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url", url
    assert create(api, {"url": "https://hooks.example.com/x"}).status_code == 201


def test_development_takes_plain_http(api, settings):
    settings.DEBUG = True
    assert create(api, {"url": "http://127.0.0.1:8000/hooks"}).status_code == 201


def test_endpoints_per_program_are_capped(api):
    for n in range(MAX_ENDPOINTS_PER_PROGRAM):
        assert create(api, {"url": f"{URL}/{n}"}).status_code == 201
    response = create(api)
    assert response.status_code == 422 and response.json()["error"]["code"] == "too_many_endpoints"


def test_requires_a_key(client):
    response = client.get("/api/v1/webhook_endpoints")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
