"""The beat entries name real tasks, and the tasks run (thin wrappers, safe to run twice)."""

from __future__ import annotations

import pytest

from loyalty.celery import app
from webhooks import tasks


def test_beat_entries_name_registered_tasks():
    entries = {name: entry for name, entry in app.conf.beat_schedule.items() if name.startswith("webhooks-")}
    assert {entry["task"] for entry in entries.values()} == {
        "webhooks.tasks.deliver_due", "webhooks.tasks.emit_points_expiring", "webhooks.tasks.prune_events"}
    for entry in entries.values():
        assert entry["task"] in app.tasks
    assert entries["webhooks-deliver-due"]["schedule"] <= 10


@pytest.mark.django_db
def test_tasks_run_with_nothing_to_do():
    assert tasks.deliver_due() == 0
    assert tasks.emit_points_expiring() == 0
    assert tasks.prune_events() == 0
    assert tasks.deliver_due() == 0
