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


def _past_retention(now: dt.datetime):
    """(program, days kept, its events past them) for each program that keeps events for a time.

    A processed refund is also kept for that long after it was processed: the refunds of an order
    that later refunds count are its processed ones, so none may go before its purchase does. A
    refund received before its purchase and reprocessed once the purchase came is processed after
    the purchase was received, and so goes after it."""
    for program in Program.objects.filter(event_retention_days__isnull=False).order_by("slug"):
        days = program.event_retention_days
        cutoff = now - dt.timedelta(days=days)
        yield program, days, InboundEvent.objects.filter(
            program_id=program.pk, received_at__lt=cutoff, status__in=_PRUNABLE,
        ).exclude(type="refund", status=InboundEvent.Status.PROCESSED, processed_at__gte=cutoff)


def events_prunable(*, now: dt.datetime | None = None) -> list[tuple[Program, int, int]]:
    """(program, days kept, events the next prune deletes) for each program that keeps events for a time."""
    return [(program, days, old.count()) for program, days, old in _past_retention(now or timezone.now())]


def events_prune(*, now: dt.datetime | None = None, batch_size: int = 5000) -> int:
    """Beat, nightly: delete the processed and rejected events received longer ago than their
    program keeps them, a batch at a time (each its own transaction, oldest first, found through
    the ``event_recent`` index). Returns the events deleted."""
    deleted = 0
    for program, days, old in _past_retention(now or timezone.now()):
        program_id = program.pk
        while ids := list(old.order_by("received_at").values_list("id", flat=True)[:batch_size]):
            count = InboundEvent.objects.filter(id__in=ids).delete()[0]
            deleted += count
            logger.info("deleted %d events of program %d received before %s days ago", count, program_id, days)
    return deleted
