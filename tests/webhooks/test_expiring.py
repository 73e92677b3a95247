"""The nightly points.expiring (once per member and day) and the pruning of old events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction

from ledger.services import points_earn
from webhooks.models import WebhookDelivery, WebhookEvent
from webhooks.services import events_prune, points_expiring_emit, webhook_emit

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2027, 3, 1, 0, 30, tzinfo=dt.UTC)
DAY = dt.date(2027, 3, 31)  # NOW + 30 days


def earn_expiring_at(member, points: int, expires_at: dt.datetime, key: str) -> None:
    points_earn(member=member, points=points, key=key,
                now=expires_at - dt.timedelta(days=member.program.expiry_days))


@pytest.fixture
def expiring(make_program, make_member, make_endpoint):
    program = make_program(expiry_days=60)
    make_endpoint(program, event_types=["points.expiring"])
    alice, bob, carol = make_member(program), make_member(program), make_member(program)
    at = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)
    earn_expiring_at(alice, 100, at + dt.timedelta(hours=8), "a1")
    earn_expiring_at(alice, 50, at + dt.timedelta(hours=23, minutes=59), "a2")
    earn_expiring_at(alice, 7, at + dt.timedelta(days=1), "a3")  # the next day
    earn_expiring_at(bob, 20, at - dt.timedelta(minutes=1), "b1")  # the day before
    earn_expiring_at(carol, 30, at + dt.timedelta(hours=1), "c1")
    return program, alice, bob, carol


def test_one_event_per_member_with_the_total_and_the_day(expiring):
    program, alice, _bob, carol = expiring
    assert points_expiring_emit(now=NOW) == 2
    sent = {e.data["member_id"]: e.data for e in WebhookEvent.objects.filter(type="points.expiring")}
    assert sent == {
        alice.external_id: {"member_id": alice.external_id, "points": 150, "expires_on": "2027-03-31"},
        carol.external_id: {"member_id": carol.external_id, "points": 30, "expires_on": "2027-03-31"},
    }
    assert WebhookDelivery.objects.count() == 2


def test_not_emitted_twice_for_the_same_member_and_day(expiring):
    assert points_expiring_emit(now=NOW) == 2
    assert points_expiring_emit(now=NOW + dt.timedelta(hours=5)) == 0  # a second run, the same day
    assert WebhookEvent.objects.count() == 2
    program, alice, _bob, _carol = expiring
    assert points_expiring_emit(now=NOW + dt.timedelta(days=1)) == 1  # the next night: the 7 points
    latest = WebhookEvent.objects.order_by("id").last()
    assert latest.data == {"member_id": alice.external_id, "points": 7, "expires_on": "2027-04-01"}


def test_batches_cover_every_member(expiring):
    assert points_expiring_emit(now=NOW, batch_size=1) == 2


def test_programs_without_a_subscriber_are_skipped(make_program, make_member, make_endpoint,
                                                   django_assert_num_queries):
    program = make_program(expiry_days=60)
    make_endpoint(program, event_types=["points.earned"])
    earn_expiring_at(make_member(program), 10, dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.UTC), "x")
    with django_assert_num_queries(1):
        assert points_expiring_emit(now=NOW) == 0


def test_prune_forgets_old_events_with_nothing_left_to_send(program, make_endpoint):
    make_endpoint(program)
    now = dt.datetime.now(dt.UTC)
    with transaction.atomic():
        done = webhook_emit(program_id=program.pk, type="points.expired", data={"member_id": "m", "points": 1},
                            now=now - dt.timedelta(days=40))
        webhook_emit(program_id=program.pk, type="points.expired", data={"member_id": "m", "points": 2},
                     now=now - dt.timedelta(days=40))  # still pending: kept
        webhook_emit(program_id=program.pk, type="points.expired", data={"member_id": "m", "points": 3},
                     now=now - dt.timedelta(days=5))
    WebhookDelivery.objects.filter(event_id=done.pk).update(status="succeeded")
    assert events_prune(now=now) == 1
    assert not WebhookEvent.objects.filter(pk=done.pk).exists()
    assert WebhookEvent.objects.count() == 2 and WebhookDelivery.objects.count() == 2
