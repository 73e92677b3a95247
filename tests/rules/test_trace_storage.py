"""An event's trace is stored compact (rules.trace) and read back exactly as the engine wrote it."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from rules.models import InboundEvent
from rules.pipeline import events_process
from rules.trace import OUTCOMES, trace_pack, trace_unpack
from tests.rules import fixtures_rules
from tests.rules.fixtures_rules import purchase

make_rule = fixtures_rules.make_rule


def _line(outcome, points=0, detail="", rule_id=7, rule="Base: 1 point per USD"):
    return {"rule_id": rule_id, "rule": rule, "outcome": outcome, "points": points, "detail": detail}


def test_every_line_reads_back_as_written():
    trace = [_line(outcome) for outcome in OUTCOMES] + [
        _line("fired", 42),
        _line("cap_reached", 0, "gave 500 of 500 points this day"),
        _line("fired", -3, "refunded 10.00 of 20.00", rule_id=None, rule="refund"),
        _line("a_future_outcome", 1, "kept by name"),
        {"rule_id": 1, "rule": "x", "outcome": "fired", "points": 1, "detail": "", "extra": True},  # another shape
        {"note": "not a trace line at all"},
    ]
    packed = trace_pack(trace)
    assert packed[:3] == [[7, "Base: 1 point per USD", 0], [7, "Base: 1 point per USD", 1],
                          [7, "Base: 1 point per USD", 2]]
    assert packed[len(OUTCOMES)] == [7, "Base: 1 point per USD", 0, 42]
    assert packed[len(OUTCOMES) + 1] == [7, "Base: 1 point per USD", 4, 0, "gave 500 of 500 points this day"]
    assert packed[-3][2] == "a_future_outcome" and packed[-2:] == trace[-2:]
    assert trace_unpack(packed) == trace
    assert trace_unpack(trace) == trace  # stored before: dicts read as they are
    assert len(json.dumps(packed)) < len(json.dumps(trace)) / 2


@pytest.mark.django_db
def test_a_processed_events_trace_is_stored_compact_and_served_whole(api, program, member, make_rule):
    make_rule(program, kind="spend", event_type="purchase", name="Base")
    make_rule(program, kind="event", event_type="signup", points=100, name="Welcome")
    make_rule(program, kind="spend", event_type="purchase", name="Never", condition='member.tier == "platinum"')
    inline = api.post("/api/v1/events", purchase("inline-1", member.external_id, amount="12.00"), format="json")
    assert inline.status_code == 201
    batch = api.post("/api/v1/events/batch", {"events": [purchase("batch-1", member.external_id, amount="7.00")]},
                     format="json")
    assert batch.status_code == 202
    events_process(list(InboundEvent.objects.filter(event_id="batch-1").values_list("id", flat=True)))
    for event_id, points in (("inline-1", 12), ("batch-1", 7)):
        trace = api.get(f"/api/v1/events/{event_id}").json()["trace"]
        assert sorted((line["rule"], line["outcome"], line["points"]) for line in trace) == [
            ("Base", "fired", points), ("Never", "condition_false", 0), ("Welcome", "not_this_event_type", 0)]
        assert {line["detail"] for line in trace if line["rule"] == "Welcome"} == {"applies to signup"}
        with connection.cursor() as cursor:
            cursor.execute("SELECT trace::text FROM rules_inboundevent WHERE event_id = %s", [event_id])
            stored = json.loads(cursor.fetchone()[0])
        assert all(isinstance(line, list) for line in stored) and len(stored) == 3
        assert trace_unpack(stored) == InboundEvent.objects.get(event_id=event_id).trace == trace
