"""Inbound events are kept for the program's event_retention_days, then deleted nightly."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError
from django.utils import timezone

from accounts.models import Program
from loyalty.celery import app
from rules import tasks
from rules.models import InboundEvent
from rules.retention import events_prune
from tests.rules.fixtures_rules import purchase

pytestmark = pytest.mark.django_db


def _event(program, name, status, days_ago, now):
    return InboundEvent.objects.create(program=program, event_id=name, payload={"event_id": name}, status=status,
                                       received_at=now - dt.timedelta(days=days_ago))


def test_final_events_older_than_the_programs_retention_go_and_nothing_else(make_program):
    now = timezone.now()
    kept_30, kept_100, for_ever = (make_program(event_retention_days=30), make_program(event_retention_days=100),
                                   make_program())
    for program in (kept_30, kept_100, for_ever):
        for status in ("processed", "rejected", "failed", "received"):
            _event(program, f"{status}-old", status, 31, now)
            _event(program, f"{status}-new", status, 29, now)
    assert events_prune(now=now, batch_size=1) == 2  # one at a time, as many batches as it takes
    left = {(event.program_id, event.event_id) for event in InboundEvent.objects.all()}
    gone = {(kept_30.pk, "processed-old"), (kept_30.pk, "rejected-old")}
    assert not gone & left
    assert len(left) == 3 * 8 - 2
    assert events_prune(now=now) == 0


def test_an_event_id_sent_again_after_its_event_is_gone_is_a_new_event(api, program, member, spend_rule):
    first = api.post("/api/v1/events", purchase("pos-1", member.external_id, amount="10.00"), format="json")
    assert first.status_code == 201
    Program.objects.filter(pk=program.pk).update(event_retention_days=1)
    assert events_prune(now=timezone.now() + dt.timedelta(days=2)) == 1
    gone = api.get("/api/v1/events/pos-1")
    assert gone.status_code == 404, gone.json()
    assert (gone.json()["error"]["type"], gone.json()["error"]["code"]) == ("not_found", "resource_missing")
    again = api.post("/api/v1/events", purchase("pos-1", member.external_id, amount="10.00"), format="json")
    assert again.status_code == 201  # not 200 with the first result: that is gone
    assert again.json()["balance"]["available"] == 20


def test_retention_is_a_positive_number_of_days(program):
    with pytest.raises(IntegrityError):
        Program.objects.filter(pk=program.pk).update(event_retention_days=0)


def test_beat_prunes_nightly():
    entry = app.conf.beat_schedule["rules-prune-events"]
    assert entry["task"] == "rules.tasks.prune_events" and entry["task"] in app.tasks
    assert tasks.prune_events() == 0


def test_the_command_counts_then_deletes(make_program):
    from io import StringIO

    from django.core.management import call_command

    def run(*args) -> str:
        out = StringIO()
        call_command("events_prune", *args, stdout=out)
        return out.getvalue()

    assert run("--dry-run") == "No program sets event_retention_days: every event is kept.\n"
    now = timezone.now()
    program = make_program(slug="kept-week", event_retention_days=7)
    make_program(slug="kept-year", event_retention_days=365)
    for n, days_ago in enumerate((8, 9, 1)):
        _event(program, f"e-{n}", "processed", days_ago, now)
    assert run("--dry-run") == ("kept-week: kept 7 days; 2 events older\nkept-year: kept 365 days; 0 events older\n"
                                "2 events would be deleted (dry run)\n")
    assert InboundEvent.objects.count() == 3
    assert run().endswith("2 events deleted\n")
    assert list(InboundEvent.objects.values_list("event_id", flat=True)) == ["e-2"]


def test_a_refund_processed_after_its_purchase_arrived_goes_no_earlier_than_the_purchase(api, program, member,
                                                                                       spend_rule):
    """A refund received before its purchase, reprocessed once the purchase came: pruned by when
    it was received, it would go first, and a second full refund of the order would then find no
    earlier refund and take the points back again."""
    from rules.pipeline import event_reprocess
    from tests.rules.fixtures_rules import refund

    start = timezone.now()
    early = api.post("/api/v1/events", refund("r-1", member.external_id, "o-p-1", amount="10.00"), format="json")
    assert early.json()["error"]["code"] == "purchase_not_found"
    InboundEvent.objects.filter(event_id="r-1").update(received_at=start - dt.timedelta(days=5))
    assert api.post("/api/v1/events", purchase("p-1", member.external_id, amount="10.00"),
                    format="json").status_code == 201
    assert event_reprocess(event=InboundEvent.objects.get(event_id="r-1")).status == "processed"
    assert api.get(f"/api/v1/members/{member.external_id}/balance").json()["available"] == 0
    Program.objects.filter(pk=program.pk).update(event_retention_days=30)
    assert events_prune(now=start + dt.timedelta(days=27)) == 0  # the refund was received 32 days before
    assert events_prune(now=start + dt.timedelta(days=31)) == 2  # with its purchase
    again = api.post("/api/v1/events", refund("r-2", member.external_id, "o-p-1", amount="10.00"), format="json")
    assert again.json()["error"]["code"] == "purchase_not_found"
    assert api.get(f"/api/v1/members/{member.external_id}/balance").json()["available"] == 0
