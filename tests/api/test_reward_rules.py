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


def _time_out(held) -> Redemption:
    redemption = Redemption.objects.get(public_id=held.json()["id"])
    Hold.objects.filter(pk=redemption.hold_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    return redemption


def test_a_timed_out_hold_gives_its_stock_to_the_next_redemption_before_it_is_voided(api, program, member,
                                                                                     make_member):
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=100, stock=1)
    points_earn(member=make_member(program, external_id="c-2"), points=10_000, key="seed-2")
    held = redeem(api, capture=False)
    assert held.status_code == 201
    assert_error(redeem(api, member_id="c-2"), 409, "out_of_stock", param="reward")  # the hold is still in time
    redemption = _time_out(held)
    assert Reward.objects.get(code="lamp").stock == 0
    taken = redeem(api, member_id="c-2")
    assert taken.status_code == 201, taken.json()
    redemption.refresh_from_db()
    assert (redemption.status, redemption.stock_returned) == ("held", True)
    assert Reward.objects.get(code="lamp").stock == 0
    assert_error(api.post(f"/api/v1/redemptions/{held.json()['id']}/capture"), 409, "hold_expired")
    assert redemptions_void_expired() == 1  # its points come back; its unit went to c-2 and stays there
    assert Reward.objects.get(code="lamp").stock == 0
    assert api.get(f"/api/v1/redemptions/{held.json()['id']}").json()["status"] == "voided"
    assert api.get("/api/v1/members/c-1/balance").json()["available"] == 10_000
    assert_error(redeem(api), 409, "out_of_stock", param="reward")
    assert run_audit() == []


def test_a_timed_out_hold_gives_its_pool_codes_to_the_next_redemption(api, program, member, make_member):
    from campaigns.models import VoucherCode
    from campaigns.services import voucher_codes_upload

    reward = Reward.objects.create(program=program, code="film", name="Film", cost=100, vouchers="pool")
    voucher_codes_upload(reward=reward, codes=["CODE-1"])
    points_earn(member=make_member(program, external_id="c-2"), points=10_000, key="seed-2")
    held = redeem(api, reward="film", capture=False)
    assert held.status_code == 201
    assert_error(redeem(api, reward="film", member_id="c-2"), 409, "out_of_stock", param="reward")
    _time_out(held)
    taken = redeem(api, reward="film", member_id="c-2")
    assert (taken.status_code, taken.json()["voucher_code"]) == (201, "CODE-1")
    assert redemptions_void_expired() == 1
    code = VoucherCode.objects.get(code="CODE-1")
    assert code.redemption.public_id == taken.json()["id"]
    assert Redemption.objects.get(public_id=held.json()["id"]).voucher_code == ""
    assert run_audit() == []


def test_a_capture_is_refused_once_another_redemption_took_the_holds_stock_back(program, member, make_member):
    """Even from a process whose clock says the hold is still in time."""
    from campaigns.services import RedemptionState, redemption_capture, redemption_create

    reward = Reward.objects.create(program=program, code="lamp", name="Lamp", cost=100, stock=1)
    other = make_member(program, external_id="c-2")
    points_earn(member=other, points=10_000, key="seed-2")
    now = timezone.now()
    held = redemption_create(member=member, reward=reward, key="hold", capture=False, now=now)
    timeout = held.hold.expires_at - now
    redemption_create(member=other, reward=reward, key="after", now=now + timeout + dt.timedelta(seconds=1))
    with pytest.raises(RedemptionState) as refused:
        redemption_capture(redemption=held, now=now + timeout / 2)
    assert refused.value.code == "hold_expired"
    held.refresh_from_db()
    assert (held.status, Reward.objects.get(pk=reward.pk).stock) == ("held", 0)
    assert Hold.objects.get(pk=held.hold_id).status == "open"
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


def test_too_few_points_is_answered_before_no_stock_and_takes_none(api, program, member):
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=6_000, stock=1)
    assert_error(redeem(api, quantity=2), 422, "insufficient_points", param="points")  # 12,000 > 10,000
    assert Reward.objects.get(program=program, code="lamp").stock == 1
    assert redeem(api).status_code == 201
    assert_error(redeem(api), 422, "insufficient_points", param="points")  # 4,000 left, and no stock either
    Reward.objects.filter(program=program, code="lamp").update(cost=10)
    assert_error(redeem(api), 409, "out_of_stock", param="reward")
    assert Reward.objects.get(program=program, code="lamp").stock == 0
    assert run_audit() == []


def test_many_units_get_all_their_codes_captured_at_once_or_after_a_hold(api, program, member):
    """A redemption keeps one code a unit: 50 generated codes of 19 characters each."""
    Reward.objects.create(program=program, code="lamp", name="Lamp", cost=10, vouchers="generated")
    captured = redeem(api, quantity=50)
    assert captured.status_code == 201, captured.json()
    codes = captured.json()["voucher_code"].split(",")
    assert len(codes) == len(set(codes)) == 50 and all(len(code) == 19 for code in codes)
    held = redeem(api, quantity=4, capture=False)
    assert held.status_code == 201 and held.json()["voucher_code"] is None
    done = api.post(f"/api/v1/redemptions/{held.json()['id']}/capture")
    assert done.status_code == 200, done.json()
    assert len(done.json()["voucher_code"].split(",")) == 4
    assert run_audit() == []
