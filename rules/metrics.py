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
    """Count outcomes; observe the latency of processed ones (received -> committed). Counted by
    (type, outcome) and latencies by arrival: a batch's events share both, so a worker's 250
    events cost a few label lookups, not two each."""
    committed = dt.datetime.now(dt.UTC)
    counts: Tally = Tally()
    latencies: Tally = Tally()
    for event in events:
        event_type = event.type or "unknown"
        if event.received_at == started:  # came in through this very request
            counts[(event_type, "received")] += 1
        counts[(event_type, event.status)] += 1
        if event.status == "processed" and event.received_at is not None:
            latencies[event.received_at] += 1
    for (event_type, status), n in counts.items():
        EVENTS.labels(program.slug, event_type, status).inc(n)
    for received_at, n in latencies.items():
        histogram = QUALIFICATION_SECONDS.labels("inline" if received_at == started else "batch")
        seconds = (committed - received_at).total_seconds()
        for _ in range(n):
            histogram.observe(seconds)
