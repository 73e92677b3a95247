"""The outbox: what webhook_emit writes, when it writes nothing, and that it commits with its cause."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.db.transaction import TransactionManagementError

from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import WEBHOOK_EVENT_TYPES, endpoint_update, webhook_emit, webhook_emit_many

pytestmark = pytest.mark.django_db

EARNED = {"member_id": "m-1", "points": 120}


class Boom(Exception):
    pass


def test_event_types():
    assert WEBHOOK_EVENT_TYPES == (
        "points.earned", "points.expiring", "points.expired", "reward.redeemed", "redemption.voided")


def test_no_subscribed_endpoint_writes_nothing_in_one_query(program, make_program, make_endpoint,
                                                            django_assert_num_queries):
    make_endpoint(program, event_types=["reward.redeemed"])
    endpoint_update(endpoint=make_endpoint(program), is_active=False)
    make_endpoint(make_program())  # another program's endpoint, subscribed to all
    with transaction.atomic(), django_assert_num_queries(1):
        assert webhook_emit(program_id=program.pk, type="points.earned", data=EARNED) is None
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_one_event_one_delivery_per_subscribed_endpoint(program, make_endpoint, django_assert_num_queries):
    all_types = make_endpoint(program)
    earned_only = make_endpoint(program, event_types=["points.earned"])
    make_endpoint(program, event_types=["points.expired"])
    with transaction.atomic(), django_assert_num_queries(3):
        event = webhook_emit(program_id=program.pk, type="points.earned", data=EARNED)

    stored = WebhookEvent.objects.get()
    assert event.public_id == stored.public_id and stored.public_id.startswith("evt_")
    assert (stored.program_id, stored.type, stored.data) == (program.pk, "points.earned", EARNED)
    deliveries = WebhookDelivery.objects.filter(event=stored)
    assert {d.endpoint_id for d in deliveries} == {all_types.pk, earned_only.pk}
    assert {(d.status, d.attempts) for d in deliveries} == {("pending", 0)}
    assert all(d.next_attempt_at == stored.created_at for d in deliveries)


def test_emit_rolled_back_with_its_transaction_writes_nothing(program, make_endpoint):
    make_endpoint(program)
    with pytest.raises(Boom), transaction.atomic():
        assert webhook_emit(program_id=program.pk, type="points.earned", data=EARNED) is not None
        assert WebhookEvent.objects.count() == 1
        raise Boom
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_delivery_is_nudged_once_per_transaction_after_commit(program, make_endpoint,
                                                              django_capture_on_commit_callbacks):
    make_endpoint(program)
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            for n in range(3):
                webhook_emit(program_id=program.pk, type="points.earned", data={**EARNED, "points": n + 1})
            webhook_emit_many(program_id=program.pk, type="points.expired",
                              items=[{"member_id": "m-2", "points": 5}])
    assert len(callbacks) == 1
    assert WebhookEvent.objects.count() == 4


def test_nothing_is_nudged_when_nothing_is_written(program, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        webhook_emit(program_id=program.pk, type="points.earned", data=EARNED)
    assert callbacks == []


def test_a_key_makes_a_second_emit_a_no_op(program, make_endpoint):
    make_endpoint(program)
    with transaction.atomic():
        first = webhook_emit(program_id=program.pk, type="points.earned", data=EARNED, key="op-1")
        again = webhook_emit(program_id=program.pk, type="points.earned", data=EARNED, key="op-1")
        other_type = webhook_emit(program_id=program.pk, type="points.expired", data=EARNED, key="op-1")
    assert first is not None and again is None and other_type is not None
    assert first.public_id != other_type.public_id
    assert WebhookEvent.objects.count() == 2 and WebhookDelivery.objects.count() == 2


def test_emit_many_writes_one_event_per_item(program, make_endpoint, django_assert_num_queries):
    make_endpoint(program)
    make_endpoint(program, event_types=["points.expired"])
    items = [{"member_id": f"m-{n}", "points": n} for n in range(1, 51)]
    with transaction.atomic(), django_assert_num_queries(3):
        assert webhook_emit_many(program_id=program.pk, type="points.expired", items=items,
                                 keys=[f"k{n}" for n in range(50)]) == 50
    assert WebhookEvent.objects.count() == 50 and WebhookDelivery.objects.count() == 100
    with transaction.atomic():
        assert webhook_emit_many(program_id=program.pk, type="points.expired", items=items,
                                 keys=[f"k{n}" for n in range(50)]) == 0
    assert WebhookEvent.objects.count() == 50


@pytest.mark.parametrize(("type_", "data"), [
    ("points.spent", EARNED),
    ("points.earned", {"member_id": "m-1"}),
    ("reward.redeemed", {"member_id": "m-1", "points": 5}),
    ("points.earned", ["not", "a", "dict"]),
])
def test_unknown_types_and_incomplete_data_are_refused(program, type_, data):
    with transaction.atomic(), pytest.raises(ValueError):
        webhook_emit(program_id=program.pk, type=type_, data=data)


@pytest.mark.django_db(transaction=True)
def test_emit_outside_a_transaction_is_refused(program):
    with pytest.raises(TransactionManagementError):
        webhook_emit(program_id=program.pk, type="points.earned", data=EARNED)


@pytest.mark.django_db(transaction=True)
def test_after_commit_the_event_is_delivered(program, endpoint, receiver, eager_celery):
    with transaction.atomic():
        event = webhook_emit(program_id=program.pk, type="points.earned", data=EARNED)
        assert receiver.requests == []  # nothing leaves before commit
    assert [r.body for r in receiver.requests] == [WebhookEvent.objects.get().body()]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.event.public_id) == ("succeeded", 1, event.public_id)


# --- every point credited or expired is announced ----------------------------------------------


def _announced(type_: str, member) -> int:
    return sum(data["points"] for data in WebhookEvent.objects.filter(type=type_).values_list("data", flat=True)
               if data["member_id"] == member.external_id)


@pytest.mark.parametrize("late", ["cancel", "void"])
def test_points_given_back_to_an_expired_lot_are_announced_expired(program, member, make_endpoint, late):
    # The 100 a redemption took come back to a lot past its expiry: they expire at once.
    import datetime as dt

    from campaigns import services as campaigns
    from campaigns.models import Reward
    from ledger import services as ledger
    from ledger.models import Balance
    from ledger.upkeep import lots_expire

    make_endpoint(program)
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    ledger.points_earn(member=member, points=300, key="e1", now=now)
    if late == "cancel":
        reward = Reward.objects.create(program=program, code="mug", name="Mug", cost=100)
        redemption = campaigns.redemption_create(member=member, reward=reward, key="r1", now=now)
    else:
        redemption = campaigns.redemption_create(member=member, points=100, key="r1", capture=False, now=now)
    later = now + dt.timedelta(days=400)
    lots_expire(now=later)
    if late == "cancel":
        campaigns.redemption_cancel(redemption=redemption, now=later)
    else:
        campaigns.redemption_void(redemption=redemption, now=later)
    assert Balance.objects.get(member=member).lifetime_expired == 300
    assert _announced("points.expired", member) == 300


def test_a_credit_adjustment_is_announced_earned_and_a_debit_is_not(program, member, make_endpoint):
    from ledger import services as ledger

    make_endpoint(program)
    ledger.points_adjust(member=member, points=250, key="adj-1", reason="goodwill")
    ledger.points_adjust(member=member, points=250, key="adj-1", reason="goodwill")  # a replay
    ledger.points_adjust(member=member, points=-50, key="adj-2", reason="correction")
    [earned] = WebhookEvent.objects.filter(type="points.earned").values_list("data", flat=True)
    assert (earned["member_id"], earned["points"], earned["source"]) == (
        member.external_id, 250, {"type": "adjustment", "id": "adj-1"})
