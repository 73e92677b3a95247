"""Beat tasks of the ledger: thin wrappers around services, safe to run twice."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from ledger import upkeep
from ledger.audit import run_audit
from ledger.partitions import ensure_partitions

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def mature_lots() -> int:
    return upkeep.lots_mature()


@shared_task(acks_late=True)
def expire_lots() -> int:
    return upkeep.lots_expire()


@shared_task(acks_late=True)
def void_expired_holds() -> int:
    return upkeep.holds_void_expired()


@shared_task(acks_late=True)
def ensure_entry_partitions() -> list[str]:
    created = ensure_partitions(
        start=timezone.now().date() - dt.timedelta(days=1),
        months_ahead=settings.LEDGER_PARTITION_MONTHS_AHEAD,
    )
    if created:
        logger.info("ledger partitions created: %s", ", ".join(created))
    return created


@shared_task
def audit() -> int:
    found = run_audit()
    if found:
        logger.error("ledger audit: %d discrepancies\n%s", len(found), "\n".join(map(str, found)))
    else:
        logger.info("ledger audit: every invariant holds")
    return len(found)
