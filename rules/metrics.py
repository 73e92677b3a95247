"""Prometheus metrics of the pipeline (exported at /metrics by django-prometheus)."""

from __future__ import annotations

import datetime as dt
from collections import Counter as Tally

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "loyalty_events_total", "Events by program, type and outcome (received, processed, rejected, failed).",
    ["program", "type", "status"],
)
QUALIFICATION_SECONDS = Histogram(
    "loyalty_event_qualification_seconds", "From an event's arrival to its awards being committed.",
    ["path"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def count_received(program, rows: list[dict]) -> None:
    tally = Tally((row.get("type") or "unknown", row["status"]) for row in rows)
    for (event_type, status), n in tally.items():
        EVENTS.labels(program.slug, event_type, "received").inc(n)
        if status == "rejected":
            EVENTS.labels(program.slug, event_type, "rejected").inc(n)


def observe(program, events, started: dt.datetime) -> None:
    """Count outcomes; observe the latency of processed ones (received -> committed)."""
    committed = dt.datetime.now(dt.UTC)
    for event in events:
        event_type = event.type or "unknown"
        if event.received_at == started:  # came in through this very request
            EVENTS.labels(program.slug, event_type, "received").inc()
        EVENTS.labels(program.slug, event_type, event.status).inc()
        if event.status == "processed" and event.received_at is not None:
            path = "inline" if event.received_at == started else "batch"
            QUALIFICATION_SECONDS.labels(path).observe((committed - event.received_at).total_seconds())
