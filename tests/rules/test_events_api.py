"""The events part of the partner API: POST /events, GET /events/{id}, POST /events/batch."""

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Member, Program
from ledger.audit import run_audit
from ledger.models import Balance, Entry
from rules.models import EventType, InboundEvent
from rules.pipeline import events_process
from rules.services import event_type_save
from tests.rules import fixtures_rules
from tests.rules.fixtures_rules import purchase

make_rule = fixtures_rules.make_rule
other_program_api = fixtures_rules.other_program_api

BALANCE_KEYS = {"available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired",
                "expiring"}
ERROR_KEYS = {"type", "code", "message", "param"}


def post(api, payload):
    return api.post("/api/v1/events", payload, format="json")


def review_type(program):
    return event_type_save(event_type=EventType(program=program, name="review_written", schema={
        "type": "object",
        "required": ["x"],
        "properties": {"x": {"type": "integer", "minimum": 1}, "text": {"type": "string"}},
        "additionalProperties": False,
    }))


# --- POST /events --------------------------------------------------------------------------


def test_event_is_processed_inline_and_the_same_event_id_replays_the_first_result(api, member, spend_rule):
    first = post(api, purchase("pos-77-123", member.external_id, amount="42.50"))
    assert first.status_code == 201, first.json()
    body = first.json()
    assert set(body) == {"event_id", "status", "awards", "balance"}
    assert body["event_id"] == "pos-77-123"
    assert body["status"] == "processed"
    assert body["awards"] == [{"points": 42, "rule": "1 point per unit", "campaign": None}]
    assert set(body["balance"]) == BALANCE_KEYS
    assert body["balance"]["available"] == 42 and body["balance"]["lifetime_earned"] == 42
    assert Entry.objects.filter(member=member).count() == 1

    again = post(api, purchase("pos-77-123", member.external_id, amount="42.50"))
    assert again.status_code == 200
    assert again.json() == body
    # the same id with another body is still the same event: the first result, nothing posted
    changed = post(api, purchase("pos-77-123", member.external_id, amount="999.00"))
    assert changed.status_code == 200
    assert changed.json() == body
    assert Entry.objects.filter(member=member).count() == 1
    assert Balance.objects.get(member=member).available == 42
    assert InboundEvent.objects.filter(event_id="pos-77-123").count() == 1
    assert run_audit() == []


def test_event_without_awards_is_processed_with_none(api, member):
    response = post(api, purchase("e-none", member.external_id))
    assert response.status_code == 201
    assert response.json()["awards"] == [] and response.json()["balance"]["available"] == 0
    assert not Entry.objects.filter(member=member).exists()


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        (lambda p: p.pop("event_id"), "missing_field", "event_id"),
        (lambda p: p.update(event_id=""), "invalid_field", "event_id"),
        (lambda p: p.update(event_id="has space"), "invalid_field", "event_id"),
        (lambda p: p.update(coupon="X"), "unknown_field", "coupon"),
        (lambda p: p.pop("member_id"), "missing_field", "member_id"),
        (lambda p: p.pop("type"), "missing_field", "type"),
        (lambda p: p["properties"].update(amount="abc"), "invalid_properties", "properties.amount"),
        (lambda p: p["properties"].update(amount="-5.00"), "invalid_properties", "properties.amount"),
        (lambda p: p["properties"].update(amount=42.5), "invalid_properties", "properties.amount"),
        (lambda p: p["properties"].update(amount="1.23456"), "invalid_properties", "properties.amount"),
        (lambda p: p["properties"].pop("currency"), "invalid_properties", "properties"),
        (lambda p: p["properties"].update(items=[{"sku": "LATTE", "quantity": 0}]), "invalid_properties",
         "properties.items.0.quantity"),
        (lambda p: p.update(type="review_written"), "unknown_event_type", "type"),
        (lambda p: p.update(type="Purchase!"), "invalid_field", "type"),
        (lambda p: p.update(occurred_at="2026-11-22T10:00:00"), "invalid_field", "occurred_at"),
        (lambda p: p.update(occurred_at="yesterday"), "invalid_field", "occurred_at"),
        (lambda p: p.update(occurred_at="2099-01-01T00:00:00Z"), "invalid_field", "occurred_at"),
        (lambda p: p.update(properties=[1, 2]), "invalid_field", "properties"),
    ],
)
def test_invalid_event_is_rejected_with_its_reason_and_kept(api, program, member, spend_rule, change, code, param):
    payload = purchase("e-bad", member.external_id)
    change(payload)
    response = post(api, payload)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert error["message"]

    stored = InboundEvent.objects.get(program=program)
    assert stored.status == "rejected"
    assert stored.error == error
    assert stored.payload == payload
    assert stored.processed_at is not None
    assert not Entry.objects.exists()
    if isinstance(payload.get("event_id"), str) and payload["event_id"] and " " not in payload["event_id"]:
        detail = api.get(f"/api/v1/events/{payload['event_id']}").json()
        assert detail["status"] == "rejected" and detail["error"] == error and detail["awards"] == []


def test_a_rejected_event_can_be_sent_again_with_the_same_id(api, member, spend_rule):
    assert post(api, purchase("e-retry", member.external_id, amount="abc")).status_code == 400
    response = post(api, purchase("e-retry", member.external_id, amount="10.00"))
    assert response.status_code == 201
    assert response.json()["balance"]["available"] == 10
    stored = InboundEvent.objects.get(event_id="e-retry")
    assert (stored.status, stored.error, stored.points) == ("processed", None, 10)


def test_custom_event_type_is_checked_against_its_json_schema(api, program, member, make_rule):
    review_type(program)
    make_rule(program, kind="event", event_type="review_written", points=25, name="review")
    valid = {"event_id": "rev-1", "type": "review_written", "member_id": member.external_id,
             "properties": {"x": 5, "text": "Great"}}
    response = post(api, valid)
    assert response.status_code == 201, response.json()
    assert response.json()["awards"] == [{"points": 25, "rule": "review", "campaign": None}]

    for event_id, properties, param in [
        ("rev-2", {"x": "five"}, "properties.x"),
        ("rev-3", {"x": 0}, "properties.x"),
        ("rev-4", {}, "properties"),
        ("rev-5", {"x": 1, "extra": True}, "properties"),
    ]:
        response = post(api, {**valid, "event_id": event_id, "properties": properties})
        assert response.status_code == 400, (event_id, response.json())
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_properties", param), event_id
        stored = InboundEvent.objects.get(event_id=event_id)
        assert stored.status == "rejected" and stored.error == error
    assert Balance.objects.get(member=member).available == 25


def test_custom_event_types_are_per_program(api, other_program_api, program, member):
    other_client, other_member = other_program_api
    review_type(program)
    response = other_client.post("/api/v1/events", {
        "event_id": "rev-1", "type": "review_written", "member_id": other_member.external_id,
        "properties": {"x": 5}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_event_type"


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"name": "purchase"}, "name"), ({"schema": {"type": "no-such-type"}}, "schema")],
)
def test_event_type_save_refuses_builtin_names_and_bad_schemas(program, fields, field):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        event_type_save(event_type=EventType(program=program, **{"name": "custom", **fields}))
    assert list(info.value.message_dict) == [field]


def test_unknown_member_is_404_and_the_event_is_kept(api, program):
    response = post(api, purchase("e-nobody", "nobody"))
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("not_found", "member_not_found", "member_id")
    stored = InboundEvent.objects.get(event_id="e-nobody")
    assert stored.status == "rejected" and stored.error == error
    assert not Member.objects.filter(program=program).exists()


@pytest.mark.django_db(transaction=True)  # the request's transaction is its own, not a test's savepoint
def test_an_inline_purchase_finds_and_locks_its_member_in_one_statement_without_a_savepoint(
        api, member, spend_rule):
    """The inline path's round trips: the member and its balance row come from one locking
    statement, and nothing in it needs a savepoint (the one rejection left, an unknown member,
    comes before any write)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    connection.close()  # a new connection: statements it has prepared are logged without their text
    with CaptureQueriesContext(connection) as queries:
        assert post(api, purchase("e-trips", member.external_id, amount="5.00")).status_code == 201
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [sql for sql in statements if "SAVEPOINT" in sql]
    lookups = [sql for sql in statements if "external_id = " in sql]  # the member found by its id
    assert len(lookups) == 1 and "JOIN ledger_balance" in lookups[0] and "FOR UPDATE OF b" in lookups[0]
    assert not [sql for sql in statements if "FROM ledger_balance" in sql and "= ANY" in sql]  # no second lock
    assert Balance.objects.get(member=member).available == 5
    assert run_audit() == []


def test_the_same_event_id_again_answers_the_balance_the_event_left_not_todays(api, program, member, spend_rule):
    Program.objects.filter(pk=program.pk).update(expiry_days=365)
    first = post(api, purchase("first", member.external_id, amount="42.50"))
    assert first.status_code == 201, first.json()
    assert first.json()["balance"]["expiring"][0]["expires_at"].endswith("Z")
    assert post(api, purchase("second", member.external_id, amount="8.00")).json()["balance"]["available"] == 50
    again = post(api, purchase("first", member.external_id, amount="42.50"))
    assert again.status_code == 200
    assert again.content == first.content  # the first result: available 42, one lot expiring
    assert Balance.objects.get(member=member).available == 50


def test_program_that_enrolls_on_first_event(api, program, spend_rule):
    Program.objects.filter(pk=program.pk).update(enroll_on_first_event=True)
    response = post(api, purchase("e-new", "newcomer", amount="12.00"))
    assert response.status_code == 201, response.json()
    assert response.json()["balance"]["available"] == 12
    member = Member.objects.get(program=program, external_id="newcomer")
    assert Balance.objects.get(member=member).available == 12
    assert post(api, purchase("e-new-2", "newcomer", amount="3.00")).json()["balance"]["available"] == 15
    assert Member.objects.filter(program=program).count() == 1
    assert run_audit() == []


@pytest.mark.parametrize("member_id", ["a/b", "c 1", " ", "\u00e9\t", "x\u2028y"])
def test_an_event_never_enrolls_a_member_that_members_endpoints_could_not_reach(api, program, spend_rule,
                                                                               member_id):
    """POST /members refuses '/' and white space in an external id; so does an enrolling event."""
    Program.objects.filter(pk=program.pk).update(enroll_on_first_event=True)
    single = post(api, purchase("e-odd", member_id, amount="12.00"))
    assert single.status_code == 400, single.json()
    assert (single.json()["error"]["code"], single.json()["error"]["param"]) == ("invalid_field", "member_id")
    batch = api.post("/api/v1/events/batch", {"events": [purchase("e-odd-2", member_id)]}, format="json")
    assert batch.json()["rejected"][0]["error"]["param"] == "member_id"
    assert not Member.objects.filter(program=program).exists()
    kept = InboundEvent.objects.filter(program=program).values_list("event_id", "status")
    assert sorted(kept) == [("e-odd", "rejected"), ("e-odd-2", "rejected")]


# --- GET /events/{id} ----------------------------------------------------------------------


def test_event_detail_shows_status_awards_error_and_trace(api, program, member, make_rule, spend_rule):
    make_rule(program, kind="event", name="gold bonus", points=10, condition="member.tier == 'gold'")
    post(api, purchase("e-detail", member.external_id, amount="20.00"))
    response = api.get("/api/v1/events/e-detail")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"event_id", "type", "status", "awards", "error"}
    assert (body["event_id"], body["type"], body["status"], body["error"]) == ("e-detail", "purchase", "processed",
                                                                             None)
    assert body["awards"] == [{"points": 20, "rule": "1 point per unit", "campaign": None}]
    outcomes = {entry["rule"]: entry["outcome"] for entry in body["trace"]}
    assert outcomes == {"1 point per unit": "fired", "gold bonus": "condition_false"}


def test_event_detail_of_unknown_or_other_programs_event_is_404(api, other_program_api, member):
    other_client, other_member = other_program_api
    assert other_client.post("/api/v1/events", purchase("theirs", other_member.external_id),
                             format="json").status_code == 201
    for event_id in ("theirs", "never-sent"):
        response = api.get(f"/api/v1/events/{event_id}")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"
    # event ids are per program: ours with the same id is a different event
    assert post(api, purchase("theirs", member.external_id)).status_code == 201
    assert InboundEvent.objects.filter(event_id="theirs").count() == 2


def test_an_event_whose_id_is_batch_is_read_like_any_other(api, other_program_api, member, spend_rule):
    """``/events/batch`` is also where the batch is sent: a GET there is the event "batch"."""
    other_client, other_member = other_program_api
    assert other_client.post("/api/v1/events", purchase("batch", other_member.external_id),
                             format="json").status_code == 201
    assert api.get("/api/v1/events/batch").status_code == 404  # another program's event "batch"
    created = post(api, purchase("batch", member.external_id, amount="10.00"))
    assert created.status_code == 201, created.json()
    detail = api.get("/api/v1/events/batch")
    assert detail.status_code == 200, detail.json()
    assert (detail.json()["event_id"], detail.json()["status"]) == ("batch", "processed")
    assert detail.json()["awards"] == created.json()["awards"]
    assert api.get("/api/v1/events/batch?x=1").status_code == 400  # unknown query parameter, as anywhere
    assert api.delete("/api/v1/events/batch").status_code == 405


def test_event_of_another_programs_member_is_member_not_found(api, other_program_api):
    _other_client, other_member = other_program_api
    response = post(api, purchase("e-cross", other_member.external_id))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "member_not_found"


# --- POST /events/batch --------------------------------------------------------------------


def batch(api, body):
    return api.post("/api/v1/events/batch", body, format="json")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"events": [purchase(f"b-{i}", "m") for i in range(1001)]}, "batch_too_large", "events"),
        ({"events": [purchase("b-1", "m")], "mode": "fast"}, "unknown_field", "mode"),
        ({"events": []}, "missing_field", "events"),
        ({"events": {"a": 1}}, "missing_field", "events"),
        ({}, "missing_field", "events"),
    ],
)
def test_batch_envelope_is_validated(api, member, body, code, param):
    response = batch(api, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert not InboundEvent.objects.exists()


def test_batch_of_exactly_1000_is_accepted(api, member):
    response = batch(api, {"events": [purchase(f"b-{i}", member.external_id) for i in range(1000)]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1000, "duplicates": 0, "rejected": []}


def test_one_bad_event_never_rejects_the_others(api, program, member, make_member, spend_rule):
    other = make_member(program)
    events = [
        purchase("b-0", member.external_id, amount="10.00"),
        purchase("b-1", other.external_id, amount="20.00"),
        purchase("b-2", member.external_id, amount="not money"),
        purchase("b-3", "nobody", amount="5.00"),
        purchase("b-0", member.external_id, amount="10.00"),  # repeated in the batch
        {"type": "purchase", "member_id": member.external_id},  # no event_id
        purchase("b-6", member.external_id, amount="30.00"),
    ]
    response = batch(api, {"events": events})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {"accepted", "duplicates", "rejected"}
    assert (body["accepted"], body["duplicates"]) == (3, 1)
    assert [r["index"] for r in body["rejected"]] == [2, 3, 5]  # in the batch's order
    rejected = {r["index"]: r for r in body["rejected"]}
    assert rejected[2]["event_id"] == "b-2"
    assert (rejected[2]["error"]["code"], rejected[2]["error"]["param"]) == ("invalid_properties",
                                                                             "properties.amount")
    assert (rejected[3]["event_id"], rejected[3]["error"]["code"]) == ("b-3", "member_not_found")
    assert (rejected[5]["event_id"], rejected[5]["error"]["code"]) == (None, "missing_field")
    for r in body["rejected"]:
        assert set(r) == {"index", "event_id", "error"} and set(r["error"]) == ERROR_KEYS

    # the rejected ones are kept, with their reason
    kept = InboundEvent.objects.filter(program=program, status="rejected")
    assert kept.count() == 3
    assert InboundEvent.objects.get(event_id="b-2").error == rejected[2]["error"]
    assert InboundEvent.objects.get(event_id="b-3").error == rejected[3]["error"]
    assert kept.get(event_id=None).payload == events[5]
    # kept with what they say of themselves, so the inbox finds them by type and member
    assert {(e.event_id, e.type, e.member_external_id) for e in kept} == {
        ("b-2", "purchase", member.external_id), ("b-3", "purchase", "nobody"), (None, "purchase", member.external_id)}
    assert api.get("/api/v1/events/b-2").json()["status"] == "rejected"

    waiting = list(InboundEvent.objects.filter(program=program, status="received").values_list("id", flat=True))
    assert len(waiting) == 3
    assert api.get("/api/v1/events/b-0").json()["status"] == "received"
    assert events_process(waiting) == 3
    assert events_process(waiting) == 0  # safe to run twice
    assert Balance.objects.get(member=member).available == 40
    assert Balance.objects.get(member=other).available == 20
    assert Entry.objects.filter(program_id=program.pk).count() == 3
    detail = api.get("/api/v1/events/b-6").json()
    assert detail["status"] == "processed"
    assert detail["awards"] == [{"points": 30, "rule": "1 point per unit", "campaign": None}]
    assert detail["trace"][0]["outcome"] == "fired"

    # the same batch again: nothing new, nothing posted twice
    again = batch(api, {"events": events}).json()
    assert (again["accepted"], again["duplicates"]) == (0, 4)
    assert [r["index"] for r in again["rejected"]] == [2, 3, 5]
    assert not InboundEvent.objects.filter(program=program, status="received").exists()
    assert Entry.objects.filter(program_id=program.pk).count() == 3
    assert run_audit() == []


UNSTORABLE = [
    (None, "invalid_event"),
    ({"event_id": "nul-1", "type": "purchase", "member_id": "c-1",
      "properties": {"order_id": "o\x00-1", "amount": "1.00", "currency": "USD"}}, "null_characters_not_allowed"),
    ({"event_id": "sur-1", "type": "purchase", "member_id": "c-\ud800"}, "surrogate_characters_not_allowed"),
]


@pytest.mark.parametrize(("payload", "code"), UNSTORABLE)
def test_an_event_postgresql_cannot_store_as_sent_is_kept_as_text_and_rejected(api, program, member, payload, code):
    import json

    body = json.dumps(payload)  # lone surrogates go over the wire as JSON escapes, as partners send them
    response = api.post("/api/v1/events", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    kept = InboundEvent.objects.get(program=program)
    assert kept.status == "rejected" and kept.event_id is None
    assert kept.error["code"] == code
    assert json.loads(kept.payload["unstorable_json"]) == payload  # nothing lost
    assert not Entry.objects.exists()


def test_a_batch_with_events_postgresql_cannot_store_keeps_them_and_takes_the_rest(api, program, member, spend_rule):
    import json

    events = [purchase("ok-1", member.external_id, amount="10.00")] + [p for p, _code in UNSTORABLE]
    response = api.post("/api/v1/events/batch", json.dumps({"events": events}), content_type="application/json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in body["rejected"]] == [
        (i + 1, code) for i, (_p, code) in enumerate(UNSTORABLE)]
    kept = InboundEvent.objects.filter(program=program, status="rejected").order_by("id")
    assert [json.loads(e.payload["unstorable_json"]) for e in kept] == [p for p, _code in UNSTORABLE]


def test_batch_events_already_sent_singly_are_duplicates(api, member, spend_rule):
    post(api, purchase("s-1", member.external_id, amount="10.00"))
    body = batch(api, {"events": [purchase("s-1", member.external_id, amount="10.00"),
                                  purchase("s-2", member.external_id, amount="5.00")]}).json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, [])


def test_a_rejected_event_resent_in_a_batch_is_tried_again(api, program, member, spend_rule):
    """As with the single endpoint: an event rejected earlier (here, unknown member) may be sent
    again with the same id once the problem is fixed; it must not be dropped as a duplicate."""
    first = batch(api, {"events": [purchase("late-1", "late-member", amount="10.00")]}).json()
    assert first["rejected"][0]["error"]["code"] == "member_not_found"
    from accounts.services import member_create

    late = member_create(program=program, external_id="late-member")
    again = batch(api, {"events": [purchase("late-1", "late-member", amount="10.00")]}).json()
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (1, 0, [])
    events_process(list(InboundEvent.objects.filter(status="received").values_list("id", flat=True)))
    assert Balance.objects.get(member=late).available == 10


def test_a_batch_that_sends_a_rejected_event_again_keeps_both_and_takes_the_later(api, program, member, spend_rule):
    """A copy of an event rejected earlier in the same batch is tried again, not dropped as a
    duplicate of an event that was never taken; the rejected copy is kept without its id."""
    body = batch(api, {"events": [purchase("d-1", member.external_id, amount="abc"),
                                  purchase("d-1", member.external_id, amount="10.00"),
                                  purchase("d-1", member.external_id, amount="20.00")]}).json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert [(r["index"], r["event_id"], r["error"]["code"]) for r in body["rejected"]] == [
        (0, "d-1", "invalid_properties")]
    stored = InboundEvent.objects.get(program=program, event_id="d-1")
    assert stored.status == "received" and stored.payload["properties"]["amount"] == "10.00"
    kept = InboundEvent.objects.get(program=program, event_id=None)
    assert kept.status == "rejected" and kept.payload["properties"]["amount"] == "abc"
    events_process([stored.pk])
    assert Balance.objects.get(member=member).available == 10
    assert api.get("/api/v1/events/d-1").json()["status"] == "processed"


def test_a_batch_that_sends_an_invalid_event_twice_rejects_and_keeps_both(api, program, member, spend_rule):
    body = batch(api, {"events": [purchase("d-2", member.external_id, amount="abc"),
                                  purchase("d-2", member.external_id, amount="-1")]}).json()
    assert (body["accepted"], body["duplicates"]) == (0, 0)
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    kept = {e.payload["properties"]["amount"]: e.event_id
            for e in InboundEvent.objects.filter(program=program, status="rejected")}
    assert kept == {"abc": None, "-1": "d-2"}  # the later copy holds the id


def test_batch_enrolls_on_first_event(api, program, spend_rule):
    Program.objects.filter(pk=program.pk).update(enroll_on_first_event=True)
    body = batch(api, {"events": [purchase("n-1", "newbie", amount="4.00"),
                                  purchase("n-2", "newbie", amount="6.00")]}).json()
    assert (body["accepted"], body["rejected"]) == (2, [])
    member = Member.objects.get(program=program, external_id="newbie")
    events_process(list(InboundEvent.objects.filter(status="received").values_list("id", flat=True)))
    assert Balance.objects.get(member=member).available == 10
    assert run_audit() == []


def test_a_cel_runtime_error_in_one_rule_does_not_fail_the_event(api, program, member, spend_rule, make_rule):
    """A rule that divides by a property the partner sent as 0: the rule is traced as an error,
    the other rules still award, the partner gets its 201."""
    make_rule(program, kind="event", name="visits bonus", points=5,
              condition="100 / int(event.properties.visits) > 10")
    response = post(api, purchase("e-div", member.external_id, amount="10.00", visits=0))
    assert response.status_code == 201, response.json()
    assert response.json()["awards"] == [{"points": 10, "rule": "1 point per unit", "campaign": None}]
    trace = {e["rule"]: e["outcome"] for e in api.get("/api/v1/events/e-div").json()["trace"]}
    assert trace["visits bonus"] == "error"


def test_inline_and_batch_paths_count_cap_periods_alike(api, program, member, make_member, make_rule):
    """23:30 at UTC-5 on 22 November is 04:30 UTC on the 23rd. The worker reads occurred_at back
    from the database (UTC); the inline path must put the event in the same day-cap period."""
    from rules.models import RuleUsage

    rule = make_rule(program, kind="event", name="daily", points=5, member_cap_period="day", member_cap_times=1)
    other = make_member(program)
    late_evening = "2026-11-22T23:30:00-05:00"
    inline = {**purchase("cap-inline", member.external_id), "occurred_at": late_evening}
    queued = {**purchase("cap-batch", other.external_id), "occurred_at": late_evening}
    assert post(api, inline).status_code == 201
    assert batch(api, {"events": [queued]}).json()["accepted"] == 1
    events_process(list(InboundEvent.objects.filter(status="received").values_list("id", flat=True)))
    periods = {usage.member_id: usage.period for usage in RuleUsage.objects.filter(rule=rule)}
    assert periods == {member.pk: "2026-11-23", other.pk: "2026-11-23"}


# --- the program's window for late events ---------------------------------------------------


def _days_ago(days: float) -> str:
    return (timezone.now() - dt.timedelta(days=days)).isoformat()


def test_a_program_without_a_window_takes_events_of_any_age(api, member, spend_rule):
    response = post(api, dict(purchase("old-1", member.external_id), occurred_at=_days_ago(3 * 365)))
    assert response.status_code == 201 and response.json()["status"] == "processed"


def test_an_event_older_than_the_programs_window_is_rejected_and_kept(api, program, member, spend_rule):
    Program.objects.filter(pk=program.pk).update(event_max_age_days=30)
    late = post(api, dict(purchase("late-1", member.external_id), occurred_at=_days_ago(30.1)))
    assert late.status_code == 400, late.json()
    error = late.json()["error"]
    assert (error["code"], error["param"]) == ("event_too_old", "occurred_at")
    assert error["message"] == "occurred_at is more than 30 days ago: this program takes events of the last 30 days."
    kept = InboundEvent.objects.get(event_id="late-1")
    assert (kept.status, kept.error["code"], kept.points) == ("rejected", "event_too_old", 0)
    on_time = post(api, dict(purchase("late-2", member.external_id), occurred_at=_days_ago(29.9)))
    assert on_time.status_code == 201 and on_time.json()["awards"]
    assert Balance.objects.get(member=member).lifetime_earned == on_time.json()["balance"]["lifetime_earned"] > 0


def test_a_batch_rejects_its_late_events_alone(api, program, member, spend_rule):
    Program.objects.filter(pk=program.pk).update(event_max_age_days=7)
    events = [dict(purchase("w-0", member.external_id), occurred_at=_days_ago(1)),
              dict(purchase("w-1", member.external_id), occurred_at=_days_ago(8)),
              dict(purchase("w-2", member.external_id), occurred_at=_days_ago(6))]
    body = batch(api, {"events": events}).json()
    rejected = [(r["index"], r["error"]["code"]) for r in body["rejected"]]
    assert (body["accepted"], rejected) == (2, [(1, "event_too_old")])
    assert InboundEvent.objects.get(event_id="w-1").status == "rejected"
