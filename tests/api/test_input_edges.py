"""Input at the edges of what JSON and ISO 8601 allow: a clear 400 in the envelope, never a 500,
and a batch's other events taken."""

from __future__ import annotations

import pytest

from ledger.models import Balance
from rules.models import InboundEvent
from tests.api.fixtures import assert_error, earn, purchase

pytestmark = pytest.mark.django_db


def post_text(api, path, text, method="POST"):
    return api.generic(method, path, text, content_type="application/json")


@pytest.mark.parametrize("occurred_at", ["2026-02-30T10:00:00Z", "2026-01-15T24:00:00Z",
                                         "2026-01-15T10:00:00+25:00", "0001-01-01T00:30:00+01:00"])
def test_a_time_that_does_not_exist_in_utc_is_refused_and_kept(api, member, occurred_at):
    body = purchase("no-such-time", member.external_id)
    body["occurred_at"] = occurred_at
    response = api.post("/api/v1/events", body, format="json")
    assert_error(response, 400, "invalid_field", param="occurred_at")
    assert response.json()["error"]["message"].startswith("occurred_at names no time that exists (")
    assert InboundEvent.objects.get(event_id="no-such-time").status == "rejected"
    assert api.get("/api/v1/events/no-such-time").status_code == 200


def test_a_time_that_does_not_exist_rejects_only_its_event_in_a_batch(api, member):
    bad = purchase("bad", member.external_id)
    bad["occurred_at"] = "2026-02-30T10:00:00Z"
    year_one = purchase("year-one", member.external_id)
    year_one["occurred_at"] = "0001-01-01T00:30:00+01:00"
    response = api.post("/api/v1/events/batch", {"events": [purchase("good", member.external_id), bad, year_one]},
                        format="json")
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert [(x["index"], x["error"]["param"]) for x in response.json()["rejected"]] == [
        (1, "occurred_at"), (2, "occurred_at")]
    assert api.get("/api/v1/events/year-one").json()["status"] == "rejected"


@pytest.mark.parametrize("path, method, text", [
    ("/api/v1/members", "POST", '{"external_id": "huge", "attributes": {"a": 1e400}}'),
    ("/api/v1/members/{m}", "PATCH", '{"attributes": {"a": -1e400}}'),
    ("/api/v1/events", "POST",
     '{"event_id": "huge", "type": "signup", "member_id": "{m}", "properties": {"x": 1e400}}'),
    ("/api/v1/events/batch", "POST", '{"events": [{"event_id": "huge", "type": "signup", "member_id": "{m}", '
                                     '"properties": {"x": 1e400}}]}'),
])
def test_a_number_beyond_a_double_is_a_body_that_cannot_be_read(api, member, path, method, text):
    # Python reads 1e400 as infinity, which PostgreSQL's JSON cannot hold (and orjson writes as null).
    response = post_text(api, path.replace("{m}", member.external_id), text.replace("{m}", member.external_id),
                         method)
    assert_error(response, 400, "invalid_json")
    assert "out of range" in response.json()["error"]["message"]
    assert not InboundEvent.objects.exists()


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("path, text", [
    ("/api/v1/members", '{"external_id": "deep", "attributes": {"a": DEEP}}'.replace("DEEP", DEEP)),
    ("/api/v1/events", '{"event_id": "deep", "type": "signup", "member_id": "x", "properties": {"a": DEEP}}'
     .replace("DEEP", DEEP)),
    ("/api/v1/redemptions", '{"member_id": DEEP}'.replace("DEEP", DEEP)),
])
def test_a_body_nested_too_deeply_is_refused(api, path, text):
    assert_error(post_text(api, path, text), 400, "invalid_json")


@pytest.mark.parametrize("path", ["/api/v1/members", "/api/v1/rewards", "/api/v1/members/{m}",
                                  "/api/v1/members/{m}/balance", "/api/v1/members/{m}/transactions"])
def test_format_is_an_unknown_query_parameter(api, member, path):
    # Not a renderer to look for (DRF's 404 when it names none): the member exists.
    assert_error(api.get(path.format(m=member.external_id) + "?format=xml"), 400, "unknown_parameter",
                 param="format")


def test_format_is_an_unknown_query_parameter_on_a_post(api, member):
    response = api.post("/api/v1/events?format=csv", purchase("f", member.external_id), format="json")
    assert_error(response, 400, "unknown_parameter", param="format")
    assert not InboundEvent.objects.exists()


def test_an_event_id_ending_in_a_newline_is_refused(api, member):
    assert_error(api.post("/api/v1/events", purchase("id\n", member.external_id), format="json"), 400,
                 "invalid_field", param="event_id")


@pytest.mark.parametrize("path, body, param", [
    ("/api/v1/redemptions", {"member_id": 123, "points": 1}, "member_id"),
    ("/api/v1/redemptions", {"member_id": "123", "points": 1, "description": 7}, "description"),
    ("/api/v1/adjustments", {"member_id": 123, "points": 1, "reason": "goodwill"}, "member_id"),
    ("/api/v1/adjustments", {"member_id": "123", "points": 1, "reason": 7}, "reason"),
    ("/api/v1/members", {"external_id": 456}, "external_id"),
])
def test_text_fields_take_strings_only(api, program, make_member, path, body, param):
    # As POST /events refuses {"member_id": 123}: not member "123" by conversion.
    member = make_member(program, external_id="123")
    earn(member, 100)
    assert_error(api.post(path, body, format="json"), 400, "invalid_field", param=param)
    assert Balance.objects.get(member=member).available == 100
    assert not program.members.filter(external_id="456").exists()
