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
