"""A suspended or closed member neither earns nor redeems; refunds, adjustments and what was
redeemed before (capture, void, cancel) still go through, and events are kept."""

from __future__ import annotations

import pytest

from accounts.models import Member
from campaigns import services as campaigns
from ledger.audit import run_audit
from ledger.models import Balance
from rules.models import InboundEvent
from rules.pipeline import events_process
from tests.api.fixtures import assert_error, earn, purchase, spend_rule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def suspended(program, make_member):
    spend_rule(program)
    member = make_member(program, external_id="c-1")
    earn(member, 500)
    held = campaigns.redemption_create(member=member, points=10, capture=False, key="held")
    captured = campaigns.redemption_create(member=member, points=10, key="captured")
    Member.objects.filter(pk=member.pk).update(status=Member.Status.SUSPENDED)
    return member, held, captured


@pytest.mark.parametrize("status", [Member.Status.SUSPENDED, Member.Status.CLOSED])
def test_an_inactive_member_earns_nothing_and_the_event_is_kept(api, program, suspended, status):
    member, _held, _captured = suspended
    Member.objects.filter(pk=member.pk).update(status=status)
    response = api.post("/api/v1/events", purchase("e-1", "c-1", "42.00"), format="json")
    assert_error(response, 422, "member_inactive", param="member_id")
    assert status in response.json()["error"]["message"]
    event = InboundEvent.objects.get(program=program, event_id="e-1")
    assert (event.status, event.error["code"], event.points) == ("rejected", "member_inactive", 0)
    assert Balance.objects.get(member=member).available == 480


def test_a_batch_event_of_an_inactive_member_is_rejected_by_the_worker(api, program, suspended):
    member, _held, _captured = suspended
    response = api.post("/api/v1/events/batch", {"events": [purchase("b-1", "c-1", "42.00")]}, format="json")
    assert response.status_code == 202
    events_process(list(InboundEvent.objects.filter(program=program).values_list("pk", flat=True)))
    event = InboundEvent.objects.get(program=program, event_id="b-1")
    assert (event.status, event.error["code"]) == ("rejected", "member_inactive")
    assert Balance.objects.get(member=member).available == 480
    assert run_audit() == []


def test_an_inactive_member_redeems_nothing_but_earlier_redemptions_complete(api, suspended):
    member, held, captured = suspended
    refused = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 5}, format="json")
    assert_error(refused, 422, "member_inactive", param="member_id")
    assert api.post(f"/api/v1/redemptions/{held.public_id}/capture").status_code == 200
    assert api.post(f"/api/v1/redemptions/{captured.public_id}/cancel").status_code == 200
    adjusted = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": -30, "reason": "closing"}, format="json")
    assert adjusted.status_code == 201, adjusted.json()
    assert Balance.objects.get(member=member).available == 500 - 10 - 30
    assert run_audit() == []
