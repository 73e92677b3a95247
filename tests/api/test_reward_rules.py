"""A reward's own rules through the API: its per-member limit and its active window."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from campaigns.models import Redemption, Reward
from campaigns.services import redemptions_void_expired
from ledger.audit import run_audit
from ledger.models import Hold
from ledger.services import points_earn
from tests.api.fixtures import assert_error


@pytest.fixture
def member(program, make_member):
    member = make_member(program, external_id="c-1")
    points_earn(member=member, points=10_000, key="seed")
    return member


def redeem(api, reward="lamp", **extra):
    return api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": reward, **extra}, format="json")


def test_the_per_member_limit_counts_captured_and_held_redemptions_not_voided_or_cancelled(api, program, member):
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=100, per_member_limit=3)
    captured = redeem(api)
    held = redeem(api, capture=False)
    assert (captured.status_code, held.status_code) == (201, 201)
    too_many = redeem(api, quantity=2)
    assert_error(too_many, 409, "reward_limit_reached", param="quantity")
    assert too_many.json()["error"]["message"] == "At most 3 of 'lamp' per member; 2 already taken."
    assert redeem(api).status_code == 201  # the third
    assert_error(redeem(api), 409, "reward_limit_reached", param="quantity")
    assert api.post(f"/api/v1/redemptions/{held.json()['id']}/void").status_code == 200
    assert api.post(f"/api/v1/redemptions/{captured.json()['id']}/cancel").status_code == 200
    assert redeem(api, quantity=2).status_code == 201  # both given back
    assert_error(redeem(api), 409, "reward_limit_reached", param="quantity")
    assert run_audit() == []


def test_a_hold_past_its_timeout_no_longer_counts_before_it_is_voided(api, program, member):
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=100, per_member_limit=1)
    held = redeem(api, capture=False)
    assert held.status_code == 201
    assert_error(redeem(api), 409, "reward_limit_reached", param="quantity")
    redemption = Redemption.objects.get(public_id=held.json()["id"])
    Hold.objects.filter(pk=redemption.hold_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    # Timed out: it cannot be captured any more, and the member may redeem again at once.
    assert api.post(f"/api/v1/redemptions/{held.json()['id']}/capture").status_code == 409
    again = redeem(api)
    assert again.status_code == 201, again.json()
    assert redemptions_void_expired() == 1  # the beat job then gives its points back
    assert api.get("/api/v1/members/c-1/balance").json()["available"] == 10_000 - 100
    assert run_audit() == []


@pytest.mark.parametrize("window", [
    {"active_from": dt.timedelta(hours=1)}, {"active_until": dt.timedelta(hours=-1)}, {"is_active": False},
], ids=["not yet", "over", "switched off"])
def test_a_reward_outside_its_window_is_unavailable_and_nothing_is_spent(api, program, member, window):
    now = timezone.now()
    fields = {name: now + value if isinstance(value, dt.timedelta) else value for name, value in window.items()}
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=100, stock=5, **fields)
    assert_error(redeem(api), 409, "reward_unavailable", param="reward")
    assert Reward.objects.get(code="lamp").stock == 5
    assert api.get("/api/v1/members/c-1/balance").json()["available"] == 10_000
    listed = api.get("/api/v1/rewards").json()["data"]
    assert [(reward["id"], reward["available"]) for reward in listed] == [("lamp", False)]
