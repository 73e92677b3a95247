"""The pipeline's Prometheus metrics, read back from /metrics."""

import re

from tests.rules.test_events_smoke import purchase


def _sample(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_events_are_counted_by_program_type_and_status(api, client, program, member, spend_rule):
    before = client.get("/metrics").content.decode()
    api.post("/api/v1/events", purchase("m1", member.external_id), format="json")
    api.post("/api/v1/events", purchase("m2", member.external_id, amount="bad"), format="json")
    after = client.get("/metrics").content.decode()
    labels = {"program": program.slug, "type": "purchase"}
    for status, delta in (("received", 2), ("processed", 1), ("rejected", 1)):
        assert _sample(after, "loyalty_events_total", status=status, **labels) - _sample(
            before, "loyalty_events_total", status=status, **labels) == delta
    inline = {"path": "inline"}
    assert _sample(after, "loyalty_event_qualification_seconds_count", **inline) - _sample(
        before, "loyalty_event_qualification_seconds_count", **inline) == 1


def _counts(client, program) -> dict:
    text = client.get("/metrics").content.decode()
    return {status: _sample(text, "loyalty_events_total", program=program.slug, type="purchase", status=status)
            for status in ("received", "processed", "rejected", "failed")}


def _moved(before: dict, after: dict) -> dict:
    return {status: after[status] - before[status] for status in before if after[status] != before[status]}


def test_a_duplicate_in_a_batch_is_not_received_again(api, client, program, member, spend_rule):
    api.post("/api/v1/events", purchase("d1", member.external_id), format="json")
    before = _counts(client, program)
    body = api.post("/api/v1/events/batch", {"events": [purchase("d1", member.external_id),
                                                        purchase("d2", member.external_id)]}, format="json").json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert _moved(before, _counts(client, program)) == {"received": 1}


def test_a_batch_event_that_fails_alone_is_counted_failed(api, client, program, member, spend_rule, monkeypatch):
    from rules import pipeline
    from rules.models import InboundEvent

    result = pipeline.events_submit_batch(program=program, partner=None,
                                          payloads=[purchase("f1", member.external_id)])
    before = _counts(client, program)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "_process_set", broken)  # the batch fails, then the event alone
    monkeypatch.setattr(pipeline, "_process_inline", broken)
    assert pipeline.events_process(result.received_ids) == 0
    assert InboundEvent.objects.get(event_id="f1").status == "failed"
    assert _moved(before, _counts(client, program)) == {"failed": 1}


def test_a_reprocess_that_finds_the_event_done_counts_nothing(api, client, program, member, spend_rule):
    from rules.models import InboundEvent
    from rules.pipeline import event_reprocess

    api.post("/api/v1/events", purchase("r1", "late-member"), format="json")  # rejected: no such member
    stale = InboundEvent.objects.get(event_id="r1")
    from accounts.services import member_create

    member_create(program=program, external_id="late-member")
    assert event_reprocess(event=InboundEvent.objects.get(event_id="r1")).status == "processed"
    before = _counts(client, program)
    assert event_reprocess(event=stale).status == "processed"  # a second admin, with the page as it was
    assert _moved(before, _counts(client, program)) == {}
