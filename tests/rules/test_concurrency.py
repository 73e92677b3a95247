"""The pipeline under concurrency: threads, each with its own database connection."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from accounts.models import Member, Program
from ledger.audit import run_audit
from ledger.models import Balance, Entry, Operation
from rules import pipeline
from rules.models import InboundEvent, Rule, RuleUsage
from rules.services import rule_save
from tests.rules.fixtures_rules import purchase

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def in_threads(n: int, work) -> list:
    """Run ``work(i)`` in ``n`` threads released together; each closes its own connection."""
    barrier = threading.Barrier(n, timeout=30)

    def run(i):
        try:
            barrier.wait()
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return [future.result(timeout=120) for future in [pool.submit(run, i) for i in range(n)]]


def _rules(program):
    rule_save(rule=Rule(program=program, name="spend", kind="spend", event_type="purchase"))
    rule_save(rule=Rule(program=program, name="first purchase", kind="event", event_type="purchase", points=50,
                        member_cap_period="lifetime", member_cap_times=1))


def test_one_event_id_sent_16_times_at_once_is_awarded_once(program, member):
    _rules(program)
    payload = purchase("pos-1", member.external_id, amount="42.50")

    def submit(_i):
        submission = pipeline.event_submit(program=Program.objects.get(pk=program.pk), partner=None,
                                           payload=payload)
        event = submission.event
        return submission.created, event.pk, event.status, event.awards, event.points

    results = in_threads(16, submit)

    assert sum(created for created, *_ in results) == 1
    assert {(pk, status, points) for _c, pk, status, _a, points in results} == {
        (InboundEvent.objects.get(event_id="pos-1").pk, "processed", 92)
    }
    assert all(awards == results[0][3] for *_x, awards, _p in results)
    assert [a["points"] for a in results[0][3]] == [42, 50]
    assert InboundEvent.objects.filter(event_id="pos-1").count() == 1
    assert Entry.objects.filter(member=member, kind="earn").count() == 1
    assert Operation.objects.filter(member=member, kind="earn").count() == 1
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.lifetime_earned) == (92, 92)
    assert RuleUsage.objects.get(member=member).times == 1
    assert run_audit() == []


def test_different_events_for_one_member_at_once_each_award_once(program, member):
    _rules(program)

    def submit(i):
        event = pipeline.event_submit(program=Program.objects.get(pk=program.pk), partner=None,
                                      payload=purchase(f"pos-{i}", member.external_id, amount="10.00")).event
        return event.status, event.points

    results = in_threads(12, submit)
    assert all(status == "processed" for status, _p in results)
    assert sorted(points for _s, points in results) == [10] * 11 + [60]  # the lifetime bonus once
    balance = Balance.objects.get(member=member)
    assert balance.available == 12 * 10 + 50
    assert RuleUsage.objects.get(member=member).times == 1
    assert run_audit() == []


def test_first_events_of_an_unknown_member_at_once_enroll_them_once(make_program):
    program = make_program(enroll_on_first_event=True)
    rule_save(rule=Rule(program=program, name="spend", kind="spend"))

    def submit(i):
        event = pipeline.event_submit(program=Program.objects.get(pk=program.pk), partner=None,
                                      payload=purchase(f"new-{i}", "walk-in", amount="5.00")).event
        return event.status, event.error

    results = in_threads(8, submit)
    assert results == [("processed", None)] * 8
    member = Member.objects.get(program=program, external_id="walk-in")
    assert Balance.objects.get(member=member).available == 40
    assert run_audit() == []


def test_two_workers_processing_the_same_batch_process_each_event_once(program, make_member, monkeypatch):
    _rules(program)
    members = [make_member(program) for _ in range(5)]
    handed_over = []
    # the broker hand-off happens on commit; keep the ids here instead of queueing them for a worker
    monkeypatch.setattr(pipeline, "enqueue", handed_over.extend)
    payloads = [purchase(f"b-{i}", members[i % 5].external_id, amount=f"{i + 1}.00") for i in range(60)]
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=payloads)
    assert (result.accepted, result.rejected) == (60, [])
    ids = list(handed_over)
    assert sorted(ids) == sorted(result.received_ids)

    def work(i):
        # every worker is handed every id, in chunks, half of them from the other end
        order = ids if i % 2 == 0 else list(reversed(ids))
        return sum(pipeline.events_process(order[start:start + 15]) for start in range(0, len(order), 15))

    processed = in_threads(4, work)

    assert sum(processed) == 60
    events = InboundEvent.objects.filter(pk__in=ids)
    assert set(events.values_list("status", flat=True)) == {"processed"}
    for event in events:
        assert Operation.objects.filter(key=pipeline.earn_key(event)).count() == 1
    assert Entry.objects.filter(program_id=program.pk, kind="earn").count() == 60
    for n, member in enumerate(members):
        spent = sum(i + 1 for i in range(60) if i % 5 == n)
        balance = Balance.objects.get(member=member)
        assert balance.available == spent + 50, member.external_id  # the lifetime bonus exactly once
        assert RuleUsage.objects.get(member=member).times == 1
    assert run_audit() == []


def test_a_batch_does_not_wait_for_a_member_whose_balance_another_transaction_holds(program, make_member,
                                                                                     monkeypatch):
    _rules(program)
    held, free = make_member(program), make_member(program)
    monkeypatch.setattr(pipeline, "enqueue", lambda ids: None)  # processed here, not by a worker
    payloads = [purchase("h-1", held.external_id, amount="10.00"), purchase("f-1", free.external_id, amount="20.00"),
                purchase("f-2", free.external_id, amount="30.00"), purchase("h-2", held.external_id, amount="5.00")]
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=payloads)
    assert result.accepted == 4
    locked, release = threading.Event(), threading.Event()

    def hold_the_balance():  # as another worker's batch with an event of the same member would
        try:
            with connection.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT 1 FROM ledger_balance WHERE member_id = %s FOR UPDATE", [held.pk])
                locked.set()
                release.wait(60)
                cursor.execute("COMMIT")
        finally:
            connection.close()

    def statuses():
        return dict(InboundEvent.objects.filter(pk__in=result.received_ids).values_list("event_id", "status"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        holder = pool.submit(hold_the_balance)
        assert locked.wait(30)
        worker = pool.submit(lambda: (pipeline.events_process(result.received_ids), connection.close())[0])
        try:
            # The free member's events are committed while the other member's balance is still held.
            for _ in range(300):
                if statuses()["f-1"] == "processed":
                    break
                threading.Event().wait(0.1)
            assert statuses() == {"h-1": "received", "f-1": "processed", "f-2": "processed", "h-2": "received"}
            assert not worker.done()  # its second pass waits for the held balance
        finally:
            release.set()
        holder.result(timeout=30)
        assert worker.result(timeout=60) == 4
    assert set(statuses().values()) == {"processed"}
    assert Balance.objects.get(member=held).available == 15 + 50
    assert Balance.objects.get(member=free).available == 50 + 50
    assert run_audit() == []


def test_16_events_of_one_member_at_once_each_answer_the_balance_it_left(program, member):
    """The balance an inline event answers with is read under the member's lock, so each of 16
    concurrent purchases shows the balance right after its own points, never a later event's."""
    rule_save(rule=Rule(program=program, name="spend", kind="spend", event_type="purchase"))

    def submit(i):
        submission = pipeline.event_submit(program=Program.objects.get(pk=program.pk), partner=None,
                                           payload=purchase(f"one-member-{i}", member.external_id, amount="10.00"))
        return submission.balance["available"]

    answered = sorted(in_threads(16, submit))
    assert answered == list(range(10, 170, 10))
    assert Balance.objects.get(member=member).available == 160
    assert run_audit() == []
