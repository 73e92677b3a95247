"""Workers and beat jobs of the webhooks. Thin, and safe to run twice (or many at once)."""

from celery import shared_task

from webhooks import delivery, services


@shared_task
def deliver_due() -> int:
    """Nudged after each commit that emits events, and run by the beat every few seconds."""
    return delivery.deliveries_drain()


@shared_task(acks_late=True)
def emit_points_expiring() -> int:
    return services.points_expiring_emit()


@shared_task(acks_late=True)
def prune_events() -> int:
    return services.events_prune()
