"""The pipeline at its edges: a rule changed between two events, an event reprocessed later, a
refund rejected after enrolling its member."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Member
from rules import pipeline
from rules.models import InboundEvent
from rules.services import rule_save
from tests.rules import fixtures_rules
from tests.rules.fixtures_rules import purchase, refund

make_rule = fixtures_rules.make_rule
pytestmark = pytest.mark.django_db


@pytest.fixture
def api(program):
    from accounts.services import partner_create

    _partner, key = partner_create(program=program, name="POS")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_rule_switched_off_stops_firing_on_this_processes_next_event(program, make_member, make_rule, api):
    # The partner key's program (and its rules version) is cached: saving a rule forgets it here.
    rule = make_rule(program, kind="event", event_type="purchase", points=1000, name="launch bonus")
    make_member(program, external_id="c-1")
    for n in (1, 2):
        response = api.post("/api/v1/events", purchase(f"e-{n}", "c-1"), format="json")
        assert [a["rule"] for a in response.json()["awards"]] == ["launch bonus"]
    rule.is_active = False
    rule_save(rule=rule)
    response = api.post("/api/v1/events", purchase("e-3", "c-1"), format="json")
    assert response.status_code == 201 and response.json()["awards"] == []


def test_an_event_without_its_time_reprocessed_later_happened_when_it_was_received(
        program, make_member, make_rule, monkeypatch):
    received = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    make_rule(program, kind="event", event_type="purchase", points=50, name="black friday",
              active_from=dt.datetime(2026, 11, 27, tzinfo=dt.UTC),
              active_until=dt.datetime(2026, 11, 28, tzinfo=dt.UTC))
    payload = purchase("bf-1", "late-joiner")
    del payload["occurred_at"]
    monkeypatch.setattr(timezone, "now", lambda: received)
    event = pipeline.event_submit(program=program, partner=None, payload=payload).event
    assert (event.status, event.error["code"]) == ("rejected", "member_not_found")
    make_member(program, external_id="late-joiner")
    monkeypatch.setattr(timezone, "now", lambda: received + dt.timedelta(days=2))
    event = pipeline.event_reprocess(event=InboundEvent.objects.get(pk=event.pk))
    assert (event.status, event.occurred_at) == ("processed", received)
    assert [a["rule"] for a in event.awards] == ["black friday"]


def test_a_rejected_refund_names_no_member_its_rejection_undid(make_program):
    program = make_program(enroll_on_first_event=True)
    event = pipeline.event_submit(program=program, partner=None,
                                  payload=refund("r-ghost", "ghost", "no-such-order")).event
    assert (event.status, event.error["code"]) == ("rejected", "purchase_not_found")
    assert not Member.objects.filter(program=program, external_id="ghost").exists()
    stored = InboundEvent.objects.get(pk=event.pk)
    assert (stored.member_id, stored.member_external_id) == (None, "ghost")
