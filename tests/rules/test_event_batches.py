"""How the sweeper finds waiting events without an index on their status: each batch request
records the ids it stored as ``received`` (``EventBatch``, in the same transaction), and marking
an event processed is a HOT update that touches no index (``InboundEvent.Meta``)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from rules import pipeline
from rules.models import EventBatch, InboundEvent
from tests.rules.fixtures_rules import purchase


@pytest.mark.django_db
def test_a_batch_records_the_events_it_stored_as_received(program, member, spend_rule):
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        purchase("b-1", member.external_id), purchase("b-2", "nobody"), purchase("b-3", member.external_id),
    ])
    assert len(result.received_ids) == 2 and len(result.rejected) == 1
    (batch,) = EventBatch.objects.all()
    assert batch.event_ids == result.received_ids
    assert batch.created_at == InboundEvent.objects.get(pk=result.received_ids[0]).received_at

    rejected_only = pipeline.events_submit_batch(program=program, partner=None,
                                                 payloads=[purchase("b-4", "nobody")])
    assert rejected_only.received_ids == [] and EventBatch.objects.count() == 1


@pytest.mark.django_db
def test_the_sweeper_forgets_a_batch_once_none_of_its_events_waits(program, member, spend_rule):
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        purchase(f"s-{n}", member.external_id) for n in range(3)])
    assert pipeline.events_sweep(older_than=dt.timedelta(hours=1)) == 0  # too recent to be looked at
    assert EventBatch.objects.count() == 1
    assert pipeline.events_process(result.received_ids) == 3
    assert pipeline.events_sweep(older_than=dt.timedelta(seconds=0)) == 0  # nothing to enqueue again
    assert not EventBatch.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_marking_a_batch_processed_updates_its_rows_in_place(program, member, spend_rule):
    def hot_updates() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, at its next commit
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                           "WHERE relid = 'rules_inboundevent'::regclass")
            return cursor.fetchone()

    result = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        purchase(f"h-{n}", member.external_id) for n in range(20)])
    before = hot_updates()
    assert pipeline.events_process(result.received_ids) == 20
    after = hot_updates()
    assert InboundEvent.objects.filter(status="processed").count() == 20
    assert (after[0] - before[0], after[1] - before[1]) == (20, 20)


@pytest.mark.django_db
def test_the_sweeper_reads_many_batches_a_page_at_a_time(program, member, spend_rule):
    ids = []
    for n in range(pipeline._SWEEP_PAGE + 50):  # more than one page
        ids += pipeline.events_submit_batch(program=program, partner=None,
                                            payloads=[purchase(f"p-{n}", member.external_id)]).received_ids
    assert EventBatch.objects.count() == pipeline._SWEEP_PAGE + 50
    assert pipeline.events_process(ids) == len(ids)
    assert pipeline.events_sweep(older_than=dt.timedelta(seconds=0)) == 0
    assert not EventBatch.objects.exists()
