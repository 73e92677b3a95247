"""The batch worker reads waiting events without models (``pipeline._waiting``): it must see
exactly what the ORM sees, and qualify exactly as the single-event endpoint does."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import transaction

from accounts.models import Member
from rules import pipeline
from rules.models import InboundEvent
from tests.rules.fixtures_rules import make_rule, purchase, refund  # noqa: F401 - make_rule is a fixture

pytestmark = pytest.mark.django_db

ENROLLED = dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)


@pytest.fixture
def rules(program, make_rule):  # noqa: F811
    """Rules whose outcome depends on the member's attributes, tier, enrolment and the event's time."""
    make_rule(program, kind="spend", event_type="purchase", name="base")
    make_rule(program, kind="multiplier", multiplier=Decimal("2"), name="gold", condition="member.tier == 'gold'")
    make_rule(program, kind="event", event_type="purchase", points=7, name="Lisbon",
              condition="member.attributes.city == 'Lisbon' && member.attributes.visits > 1.5")
    make_rule(program, kind="event", event_type="purchase", points=11, name="old hands",
              condition="member.enrolled_at < timestamp('2024-03-01T00:00:00Z')")
    make_rule(program, kind="event", event_type="purchase", points=5, name="late", member_cap_period="day",
              member_cap_times=1, condition="event.occurred_at > member.enrolled_at")


def _member(make_member, program, external_id):
    member = make_member(program, external_id=external_id, attributes={"city": "Lisbon", "visits": 2.5},
                         enrolled_at=ENROLLED)
    Member.objects.filter(pk=member.pk).update(tier="gold")
    member.tier = "gold"
    return member


def test_waiting_events_read_as_the_orm_reads_them(program, make_member, rules):
    member = _member(make_member, program, "w-1")
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        dict(purchase("w-e1", "w-1", weight=0.1, seats=[1, 2.5e-3, -7]),
             occurred_at="2026-11-29T08:01:02.345678+01:00"),
        # An integer beyond 64 bits, which orjson refuses: read by the standard library instead.
        dict(purchase("w-e2", "w-1", amount="1.05", channel="ação", ref=2**70), occurred_at="2026-11-29T09:00:00Z"),
    ])
    assert result.rejected == []
    with transaction.atomic():
        waiting = {event.pk: event for event in pipeline._waiting(result.received_ids)}
    assert len(waiting) == 2
    for stored in InboundEvent.objects.filter(pk__in=result.received_ids).select_related("member"):
        seen = waiting[stored.pk]
        assert (seen.program_id, seen.member_id, seen.event_id, seen.type, seen.member_external_id) == (
            stored.program_id, stored.member_id, stored.event_id, stored.type, stored.member_external_id)
        assert seen.occurred_at == stored.occurred_at and seen.received_at == stored.received_at
        assert seen.occurred_at.tzinfo is not None and seen.occurred_at.utcoffset() == dt.timedelta(0)
        assert seen.properties == stored.payload["properties"]
        assert type(seen.properties.get("ref", 0)) is int and type(seen.properties.get("weight", 0.0)) is float
        assert seen.program == program
        assert pipeline.member_context(seen.member, None) == pipeline.member_context(member, None)
    assert waiting[min(waiting)].occurred_at == dt.datetime(2026, 11, 29, 7, 1, 2, 345678, tzinfo=dt.UTC)


def test_a_batch_qualifies_exactly_as_the_single_endpoint(program, make_member, rules, api):
    _member(make_member, program, "w-inline")
    _member(make_member, program, "w-batch")
    sent = {"inline": purchase("e-inline", "w-inline", amount="19.99"),
            "batch": purchase("e-batch", "w-batch", amount="19.99")}
    assert api.post("/api/v1/events", sent["inline"], format="json").status_code == 201
    assert api.post("/api/v1/events/batch", {"events": [sent["batch"]]}, format="json").status_code == 202
    waiting = list(InboundEvent.objects.filter(status="received").values_list("id", flat=True))
    assert pipeline.events_process(waiting) == 1
    inline, batch = (api.get(f"/api/v1/events/e-{name}").json() for name in ("inline", "batch"))
    assert inline["status"] == batch["status"] == "processed"
    assert inline["awards"] == batch["awards"] and sum(award["points"] for award in batch["awards"]) > 0
    assert inline["trace"] == batch["trace"]
    fired = {entry["rule"] for entry in batch["trace"] if entry["outcome"] == "fired"}
    assert {"base", "gold", "Lisbon", "old hands", "late"} <= fired


def test_a_refund_in_a_batch_is_posted_through_its_own_path(program, make_member, rules, api):
    _member(make_member, program, "w-r")
    assert api.post("/api/v1/events", purchase("p-1", "w-r", amount="40.00"), format="json").status_code == 201
    earned = sum(award["points"] for award in api.get("/api/v1/events/p-1").json()["awards"])
    assert api.post("/api/v1/events/batch", {"events": [refund("r-1", "w-r", "o-p-1", amount="40.00")]},
                    format="json").status_code == 202
    waiting = list(InboundEvent.objects.filter(status="received").values_list("id", flat=True))
    assert pipeline.events_process(waiting) == 1
    assert api.get("/api/v1/events/r-1").json()["status"] == "processed"
    assert api.get("/api/v1/members/w-r/balance").json()["available"] == 0 < earned


@pytest.mark.parametrize("pending_days", [0, 14])
def test_events_of_one_member_in_a_batch_see_what_the_earlier_ones_earned(program, make_member, make_rule, api,  # noqa: F811
                                                                          pending_days):
    """A rule reading the member's figures sees, for each event of a batch, the figures the
    batch's earlier events left, as when the same events come one by one."""
    from accounts.models import Program

    Program.objects.filter(pk=program.pk).update(pending_days=pending_days)
    make_rule(program, kind="spend", event_type="purchase", name="base")
    make_rule(program, kind="event", event_type="purchase", points=50, name="second visit",
              condition="member.lifetime_earned >= 10")
    make_rule(program, kind="event", event_type="purchase", points=3, name="has points",
              condition="member.available >= 10")
    make_member(program, external_id="one-by-one")
    make_member(program, external_id="batched")
    amounts = ["10.00", "10.00", "5.00"]
    for n, amount in enumerate(amounts):
        assert api.post("/api/v1/events", purchase(f"s-{n}", "one-by-one", amount=amount),
                        format="json").status_code == 201
    batch = [purchase(f"b-{n}", "batched", amount=amount) for n, amount in enumerate(amounts)]
    assert api.post("/api/v1/events/batch", {"events": batch}, format="json").status_code == 202
    waiting = list(InboundEvent.objects.filter(status="received").values_list("id", flat=True))
    assert pipeline.events_process(waiting) == 3
    singly = [api.get(f"/api/v1/events/s-{n}").json() for n in range(3)]
    batched = [api.get(f"/api/v1/events/b-{n}").json() for n in range(3)]
    assert [e["awards"] for e in batched] == [e["awards"] for e in singly]
    assert [e["trace"] for e in batched] == [e["trace"] for e in singly]
    fired = [{t["rule"] for t in e["trace"] if t["outcome"] == "fired"} for e in batched]
    assert fired[0] == {"base"} and "second visit" in fired[1]
    assert ("has points" in fired[1]) == (pending_days == 0)
    figures = [{k: v for k, v in api.get(f"/api/v1/members/{m}/balance").json().items() if k != "expiring"}
               for m in ("one-by-one", "batched")]
    assert figures[0] == figures[1]
    assert figures[0]["lifetime_earned"] == 25 + 50 * 2 + (3 * 2 if pending_days == 0 else 0)


def test_a_rule_on_the_events_hour_fires_alike_inline_and_in_a_batch(program, make_member, make_rule, api):  # noqa: F811
    """The partner wrote the time with its offset: inline and batch both read the hour in UTC."""
    make_rule(program, kind="event", event_type="purchase", points=10, name="afternoon (UTC)",
              condition="event.occurred_at.getHours() >= 12")
    make_member(program, external_id="inline-1")
    make_member(program, external_id="batch-1")
    at = "2026-11-30T09:30:00-05:00"  # 14:30 UTC
    assert api.post("/api/v1/events", dict(purchase("h-inline", "inline-1"), occurred_at=at),
                    format="json").status_code == 201
    assert api.post("/api/v1/events/batch", {"events": [dict(purchase("h-batch", "batch-1"), occurred_at=at)]},
                    format="json").status_code == 202
    assert pipeline.events_process(list(InboundEvent.objects.filter(status="received").values_list("id", flat=True)))
    inline, batch = (api.get(f"/api/v1/events/h-{name}").json() for name in ("inline", "batch"))
    assert inline["trace"] == batch["trace"] and inline["awards"] == batch["awards"]
    assert {t["rule"]: t["outcome"] for t in batch["trace"]} == {"afternoon (UTC)": "fired"}


def test_events_after_a_refund_in_a_batch_see_what_the_refund_gave_back(program, make_member, make_rule, api):  # noqa: F811
    # A "once a day" bonus whose purchase is returned in full can be earned again that day, in a
    # batch as one by one: the member's events after the refund are posted in order, after it.
    make_rule(program, kind="event", event_type="purchase", points=10, name="daily bonus",
              member_cap_period="day", member_cap_times=1)
    make_member(program, external_id="one-by-one")
    make_member(program, external_id="batched")

    def events(member, prefix):
        return [
            dict(purchase(f"{prefix}-p1", member, amount="10.00"), occurred_at="2026-11-22T09:00:00Z"),
            dict(refund(f"{prefix}-r1", member, f"o-{prefix}-p1"), occurred_at="2026-11-22T09:30:00Z"),
            dict(purchase(f"{prefix}-p2", member, amount="10.00"), occurred_at="2026-11-22T10:00:00Z"),
            dict(purchase(f"{prefix}-p3", member, amount="10.00"), occurred_at="2026-11-22T11:00:00Z"),
        ]

    for event in events("one-by-one", "s"):
        assert api.post("/api/v1/events", event, format="json").status_code == 201
    assert api.post("/api/v1/events/batch", {"events": events("batched", "b")}, format="json").status_code == 202
    waiting = list(InboundEvent.objects.filter(status="received").values_list("id", flat=True))
    assert pipeline.events_process(waiting) == 4
    for n in ("p2", "p3"):
        singly = api.get(f"/api/v1/events/s-{n}").json()["awards"]
        assert api.get(f"/api/v1/events/b-{n}").json()["awards"] == singly
    assert api.get("/api/v1/events/b-p2").json()["awards"] == [{"points": 10, "rule": "daily bonus", "campaign": None}]
    assert api.get("/api/v1/events/b-p3").json()["awards"] == []
