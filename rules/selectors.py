"""Reads of the inbound events used by other apps (the admin's program health)."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count

from rules.models import InboundEvent


def events_by_status(program_id: int, since: dt.datetime) -> dict[str, int]:
    """How many of the program's events arrived since ``since``, by status (every status, 0 included)."""
    counts = dict(InboundEvent.objects.filter(program_id=program_id, received_at__gte=since)
                  .values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in InboundEvent.Status.values}
