"""How long inbound events are kept: each program's ``event_retention_days`` (empty: for ever)."""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone

from accounts.models import Program
from rules.models import InboundEvent

logger = logging.getLogger(__name__)

# Only events whose outcome is final go: failed ones wait for a reprocess, received ones for a worker.
_PRUNABLE = (InboundEvent.Status.PROCESSED, InboundEvent.Status.REJECTED)


def events_prune(*, now: dt.datetime | None = None, batch_size: int = 5000) -> int:
    """Beat, nightly: delete the processed and rejected events received longer ago than their
    program keeps them, a batch at a time (each its own transaction, oldest first, found through
    the ``event_recent`` index). Returns the events deleted."""
    now = now or timezone.now()
    deleted = 0
    for program_id, days in (Program.objects.filter(event_retention_days__isnull=False)
                             .values_list("id", "event_retention_days")):
        old = InboundEvent.objects.filter(program_id=program_id, received_at__lt=now - dt.timedelta(days=days),
                                          status__in=_PRUNABLE)
        while ids := list(old.order_by("received_at").values_list("id", flat=True)[:batch_size]):
            count = InboundEvent.objects.filter(id__in=ids).delete()[0]
            deleted += count
            logger.info("deleted %d events of program %d received before %s days ago", count, program_id, days)
    return deleted
