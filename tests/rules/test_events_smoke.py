def purchase(event_id, member_id, amount="42.50", **props):
    return {"event_id": event_id, "type": "purchase", "member_id": member_id,
            "occurred_at": "2026-11-22T10:00:00Z",
            "properties": {"order_id": f"o-{event_id}", "amount": amount, "currency": "USD", **props}}


def test_single_event_processed_inline(api, member, spend_rule):
    response = api.post("/api/v1/events", purchase("e1", member.external_id), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "processed"
    assert body["awards"] == [{"points": 42, "rule": "1 point per unit", "campaign": None}]
    assert body["balance"]["available"] == 42
    again = api.post("/api/v1/events", purchase("e1", member.external_id), format="json")
    assert again.status_code == 200
    assert again.json()["balance"]["available"] == 42
    detail = api.get("/api/v1/events/e1").json()
    assert detail["status"] == "processed" and detail["trace"][0]["outcome"] == "fired"


def test_invalid_event_is_kept_as_rejected(api, member):
    from rules.models import InboundEvent

    response = api.post("/api/v1/events", purchase("e2", member.external_id, amount="abc"), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "properties.amount"
    assert InboundEvent.objects.get(event_id="e2").status == "rejected"


def test_unknown_member_is_404(api, program):
    response = api.post("/api/v1/events", purchase("e3", "nobody"), format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "member_not_found"


def test_no_key_is_401(client):
    response = client.post("/api/v1/events", {}, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
