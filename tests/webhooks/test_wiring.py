"""Each cause writes its webhook in its own transaction."""

import datetime as dt

import pytest

from campaigns import services as campaigns
from campaigns.models import Reward
from ledger import services as ledger
from ledger.services import EarnRequest
from ledger.upkeep import lots_expire
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import endpoint_create

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def endpoint(program):
    return endpoint_create(program=program, url="https://hooks.example.com/loyalty")


def _events(type_):
    return list(WebhookEvent.objects.filter(type=type_).order_by("id").values_list("data", flat=True))


def test_earning_emits_points_earned(program, member, make_member, endpoint):
    ledger.points_earn(member=member, points=30, key="e1", now=NOW)
    ledger.points_earn(member=member, points=30, key="e1", now=NOW)  # a replay emits nothing more
    other = make_member(program)
    ledger.points_earn_many(program=program, requests=[EarnRequest(other.pk, 5, "b1")], now=NOW)
    earned = _events("points.earned")
    assert [(d["member_id"], d["points"]) for d in earned] == [(member.external_id, 30), (other.external_id, 5)]
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2


def test_expiry_emits_points_expired(program, member, endpoint):
    ledger.points_earn(member=member, points=40, key="e1", now=NOW)
    lots_expire(now=NOW + dt.timedelta(days=400))
    assert _events("points.expired") == [{"member_id": member.external_id, "points": 40}]


def test_redemptions_emit_redeemed_and_voided(program, member, endpoint):
    ledger.points_earn(member=member, points=500, key="e1", now=NOW)
    reward = Reward.objects.create(program=program, code="mug", name="Mug", cost=100)
    captured = campaigns.redemption_create(member=member, reward=reward, key="r1")
    held = campaigns.redemption_create(member=member, points=50, key="r2", capture=False)
    campaigns.redemption_void(redemption=held)
    campaigns.redemption_cancel(redemption=captured)
    redeemed = _events("reward.redeemed")
    voided = _events("redemption.voided")
    assert [d["redemption_id"] for d in redeemed] == [captured.public_id]
    assert {(d["redemption_id"], d["status"]) for d in voided} == {(held.public_id, "voided"),
                                                                   (captured.public_id, "cancelled")}


def test_no_subscriber_writes_nothing(program, member):
    ledger.points_earn(member=member, points=30, key="e1", now=NOW)
    assert not WebhookEvent.objects.exists()
