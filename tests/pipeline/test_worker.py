"""The batch pipeline end to end, with a real Celery worker process.

events_submit_batch -> on commit, rules.tasks.process_events on the broker -> a prefork
worker -> events_process. Then what goes wrong in production: a worker SIGKILLed in the
middle of a batch, a message that never reaches a worker; the sweeper (events_sweep, the
beat job) must bring every event to ``processed`` exactly once.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from collections import Counter, defaultdict

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from .worker import wait_until

pytestmark = pytest.mark.slow


# --- helpers ---------------------------------------------------------------------------


def amount_for(i: int) -> int:
    return 1 + (i * 7) % 50


def purchases(tag: str, members, count: int, start: int = 0) -> list[dict]:
    occurred = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    return [
        {"event_id": f"{tag}-{i}", "type": "purchase", "member_id": members[i % len(members)].external_id,
         "occurred_at": occurred,
         "properties": {"order_id": f"o-{tag}-{i}", "amount": str(amount_for(i)), "currency": "USD"}}
        for i in range(start, start + count)
    ]


def statuses(program) -> Counter:
    from rules.models import InboundEvent

    return Counter(dict(InboundEvent.objects.filter(program=program).values_list("status")
                        .annotate(n=Count("id")).values_list("status", "n")))


def processed(program) -> int:
    return statuses(program)["processed"]


def queue_size(queue: str) -> int:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return sum(client.llen(key) for key in (queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))))
    finally:
        client.close()


def queue_purge(queue: str) -> int:
    """Drop the messages waiting in this queue only (app.control.purge() would purge every
    queue the app knows, the development queue included)."""
    from loyalty.celery import app

    with app.connection_for_write() as conn:
        return conn.default_channel.queue_purge(queue)


def other_backends() -> list[tuple]:
    """Connections to the test database other than the test process's own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, state, application_name FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchall()


def worker_idle(worker, queue: str) -> bool:
    """Nothing waits in the queue and every task the worker received has finished."""
    log = worker.log()
    finished = len(re.findall(r"Task rules\.tasks\.process_events\[[^\]]+\] (succeeded|raised|failed)", log))
    return queue_size(queue) == 0 and finished == worker.tasks_received()


def wait_processed(program, expected: int, worker, timeout: float = 90) -> None:
    wait_until(lambda: processed(program) >= expected, timeout=timeout, interval=0.2,
               message=lambda: f"statuses {dict(statuses(program))}, expected {expected} processed\n"
                               f"{worker.log_tail()}")


def assert_exactly_once(program, members, valid: list[dict]) -> None:
    """Every valid event processed once: one earn per event, balances = sums, audit clean."""
    from ledger.audit import run_audit
    from ledger.models import Balance, Entry, Operation
    from rules.models import InboundEvent

    counts = statuses(program)
    assert counts["processed"] == len(valid), dict(counts)
    assert counts["received"] == 0 and counts["failed"] == 0, dict(counts)

    earns = (Entry.objects.filter(program=program, source_type="event", kind="earn")
             .values("source_id").annotate(n=Count("id")))
    per_event = {row["source_id"]: row["n"] for row in earns}
    duplicates = {k: n for k, n in per_event.items() if n != 1}
    assert not duplicates, f"events earned more than once: {dict(list(duplicates.items())[:10])}"
    assert set(per_event) == {p["event_id"] for p in valid}
    assert Operation.objects.filter(program=program, kind="earn").count() == len(valid)

    expected: dict[str, int] = defaultdict(int)
    for p in valid:
        expected[p["member_id"]] += int(p["properties"]["amount"])  # 1 point per unit, whole amounts
    balances = {b.member.external_id: b for b in Balance.objects.filter(program=program).select_related("member")}
    event_points = dict(InboundEvent.objects.filter(program=program, status="processed")
                        .values_list("member_external_id").annotate(s=Sum("points")))
    for m in members:
        b = balances[m.external_id]
        want = expected.get(m.external_id, 0)
        assert (b.available, b.pending, b.lifetime_earned) == (want, 0, want), m.external_id
        assert event_points.get(m.external_id, 0) == want, m.external_id
    assert run_audit() == []


# --- tests -----------------------------------------------------------------------------


def test_worker_processes_a_batch_and_keeps_the_invalid_event(celery_workers, pipeline_program,
                                                                route_to_test_queue):
    from rules.models import InboundEvent
    from rules.pipeline import events_submit_batch

    program, members = pipeline_program
    worker = celery_workers()
    payloads = purchases("b1", members, 1000)
    bad = 537
    payloads[bad]["properties"]["amount"] = "not-a-number"

    result = events_submit_batch(program=program, partner=None, payloads=payloads)

    assert (result.accepted, result.duplicates) == (999, 0)
    assert len(result.rejected) == 1
    rejected = result.rejected[0]
    assert (rejected["index"], rejected["event_id"]) == (bad, "b1-537")
    assert rejected["error"]["param"] == "properties.amount"
    assert rejected["error"]["type"] == "invalid_request_error" and rejected["error"]["message"]

    wait_processed(program, 999, worker, timeout=60)
    wait_until(lambda: worker_idle(worker, route_to_test_queue), timeout=30,
               message=lambda: worker.log_tail())

    stored = InboundEvent.objects.get(program=program, event_id="b1-537")
    assert stored.status == "rejected" and stored.error == rejected["error"]
    assert stored.points == 0 and stored.processed_at is not None
    assert statuses(program) == Counter(processed=999, rejected=1)
    assert_exactly_once(program, members, [p for i, p in enumerate(payloads) if i != bad])
    # The worker, not something else, did it: it received the 4 chunks (999 ids / 250).
    assert worker.tasks_received() == 4, worker.log_tail()


def test_worker_killed_mid_batch_then_sweeper_finishes_exactly_once(celery_workers, pipeline_program,
                                                                     route_to_test_queue):
    from rules.pipeline import events_submit_batch, events_sweep

    program, members = pipeline_program
    first = celery_workers()
    payloads: list[dict] = []
    for b in range(4):
        batch = purchases("k", members, 1000, start=b * 1000)
        payloads += batch
        result = events_submit_batch(program=program, partner=None, payloads=batch)
        assert (result.accepted, result.rejected) == (1000, [])

    wait_until(lambda: processed(program) > 0, timeout=60, interval=0.02,
               message=lambda: f"nothing processed\n{first.log_tail()}")
    first.kill(signal.SIGKILL)
    # The server rolls back what the dead processes had open and lets their rows go.
    wait_until(lambda: not other_backends(), timeout=30, message=lambda: f"backends left: {other_backends()}")

    at_kill = statuses(program)
    assert 0 < at_kill["processed"] < 4000, f"not killed mid-batch: {dict(at_kill)}"
    assert at_kill["processed"] + at_kill["received"] == 4000, dict(at_kill)
    assert first.tasks_received() >= 1

    # Swept before the second worker starts: it would otherwise take the messages still queued
    # and process some of those events before the sweeper counted them.
    swept = events_sweep(older_than=dt.timedelta(seconds=0))
    assert swept == at_kill["received"]
    second = celery_workers()
    print(f"killed with {dict(at_kill)}; first worker had received {first.tasks_received()} tasks; swept {swept}")

    wait_processed(program, 4000, second, timeout=90)
    # Messages still queued from before the kill run too, after or alongside the sweep's:
    # let every one of them finish before judging.
    wait_until(lambda: worker_idle(second, route_to_test_queue), timeout=60, message=lambda: second.log_tail())
    print(f"second worker ran {second.tasks_received()} tasks: {second.task_results()}")
    assert_exactly_once(program, members, payloads)


def test_lost_message_is_recovered_by_the_sweeper(celery_workers, pipeline_program, route_to_test_queue):
    from rules.models import EventBatch
    from rules.pipeline import events_submit_batch, events_sweep

    program, members = pipeline_program
    payloads = purchases("lost", members, 600)

    result = events_submit_batch(program=program, partner=None, payloads=payloads)  # no worker is running
    assert result.accepted == 600

    # The enqueue really went to this session's queue (3 chunks of at most 250)...
    assert queue_size(route_to_test_queue) == 3
    # ... and is lost.
    assert queue_purge(route_to_test_queue) == 3
    assert queue_size(route_to_test_queue) == 0

    worker = celery_workers()
    assert statuses(program) == Counter(received=600)
    assert events_sweep(older_than=dt.timedelta(seconds=0)) == 600

    wait_processed(program, 600, worker, timeout=60)
    wait_until(lambda: worker_idle(worker, route_to_test_queue), timeout=30, message=lambda: worker.log_tail())
    assert worker.tasks_received() == 3, worker.log_tail()
    assert_exactly_once(program, members, payloads)
    # Nothing waits any more: the next sweep enqueues nothing and forgets the batch.
    assert events_sweep(older_than=dt.timedelta(seconds=0)) == 0
    assert not EventBatch.objects.exists()


def _worker_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        return cursor.fetchone()[0]


@pytest.mark.parametrize("reuse, kept", [("0", range(0, 1)), ("1000000", range(1, 3))])
def test_database_connections_between_tasks(celery_workers, pipeline_program, route_to_test_queue, reuse, kept):
    """With CELERY_DB_REUSE_MAX (the default, 1000) the worker's processes keep their connections
    between tasks, as web processes do between requests; with 0, Celery closes it after each task."""
    from rules.pipeline import events_submit_batch

    program, members = pipeline_program
    worker = celery_workers(CELERY_DB_REUSE_MAX=reuse)
    result = events_submit_batch(program=program, partner=None, payloads=purchases("k", members, 300))
    assert result.accepted == 300
    wait_processed(program, 300, worker, timeout=60)
    wait_until(lambda: worker_idle(worker, route_to_test_queue), timeout=30, message=lambda: worker.log_tail())
    assert _worker_connections() in kept, worker.log_tail()
