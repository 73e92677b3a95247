"""``campaigns.services.redemption_create`` below the API: what it sends to PostgreSQL when it refuses."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from campaigns.models import Redemption, Reward
from campaigns.services import RedemptionState, redemption_capture, redemption_create, redemptions_void_expired
from ledger import upkeep
from ledger.audit import run_audit
from ledger.errors import IdempotencyKeyReused, InsufficientPoints
from ledger.models import Balance, Operation
from ledger.services import points_adjust, points_earn
from tests.api.fixtures import Statements


@pytest.fixture
def member(program, make_member):
    member = make_member(program, external_id="r-1")
    points_earn(member=member, points=100, key="seed")
    return member


@pytest.mark.parametrize("what", ["points", "reward"])
def test_too_few_points_is_refused_before_anything_is_spent(program, member, what):
    reward = Reward.objects.create(program=program, code="lamp", name="Lamp", cost=60, stock=5)
    asked = {"points": 101} if what == "points" else {"reward": reward, "quantity": 2}
    statements = Statements()
    with connection.execute_wrapper(statements), pytest.raises(InsufficientPoints) as refused:
        redemption_create(member=member, key="too-many", **asked)
    assert statements and statements.spends() == []
    assert refused.value.message == f"{101 if what == 'points' else 120} points requested, 100 available."
    assert Balance.objects.get(member=member).available == 100
    assert Reward.objects.get(pk=reward.pk).stock == 5
    assert not Redemption.objects.exists() and not Operation.objects.filter(key="too-many").exists()


def test_a_key_used_by_another_operation_is_still_refused_as_reused(member):
    points_adjust(member=member, points=5, key="taken", reason="goodwill")
    with pytest.raises(IdempotencyKeyReused):
        redemption_create(member=member, key="taken", points=10**6)
    assert Balance.objects.get(member=member).available == 105


def test_a_hold_the_ledgers_sweep_timed_out_first_is_refused_as_expired(program, member):
    # Two beat jobs void timed-out holds; when the ledger's runs before this app's, the redemption
    # still says held: its capture is refused as any capture past the deadline is.
    reward = Reward.objects.create(program=program, code="mug", name="Mug", cost=60, stock=5)
    held = redemption_create(member=member, key="h", reward=reward, capture=False)
    deadline = held.hold.expires_at
    assert upkeep.holds_void_expired(now=deadline) == 1
    assert Balance.objects.get(member=member).available == 100
    with pytest.raises(RedemptionState) as refused:
        redemption_capture(redemption=held, now=deadline + dt.timedelta(seconds=1))
    assert refused.value.code == "hold_expired"
    assert redemptions_void_expired(now=deadline + dt.timedelta(seconds=2)) == 1
    assert Redemption.objects.get(pk=held.pk).status == "voided"
    assert Reward.objects.get(pk=reward.pk).stock == 5
    assert Balance.objects.get(member=member).available == 100
    assert run_audit() == []
