def test_member_lifecycle(api):
    created = api.post("/api/v1/members", {"external_id": "c-1", "email": "a@b.c", "attributes": {"vip": True}},
                       format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["balance"]["available"] == 0
    assert api.post("/api/v1/members", {"external_id": "c-1"}, format="json").json()["error"]["code"] == "member_exists"
    patched = api.patch("/api/v1/members/c-1", {"email": "x@y.z"}, format="json")
    assert patched.json()["email"] == "x@y.z"
    adjusted = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 50, "reason": "welcome"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="adj-1")
    assert adjusted.status_code == 201, adjusted.json()
    replay = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 50, "reason": "welcome"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="adj-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == adjusted.json()
    reused = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 51, "reason": "welcome"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="adj-1")
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    assert api.get("/api/v1/members/c-1/balance").json()["available"] == 50
    history = api.get("/api/v1/members/c-1/transactions").json()
    assert [t["kind"] for t in history["data"]] == ["adjust"] and history["has_more"] is False
    listing = api.get("/api/v1/members?limit=1").json()
    assert len(listing["data"]) == 1
    assert api.get("/api/v1/members?bogus=1").json()["error"]["code"] == "unknown_parameter"


def test_other_program_sees_404(api, other_api):
    api.post("/api/v1/members", {"external_id": "c-1"}, format="json")
    assert other_api.get("/api/v1/members/c-1").status_code == 404
    assert other_api.get("/api/v1/members/c-1/balance").status_code == 404
