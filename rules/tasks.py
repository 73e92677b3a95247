"""Workers of the pipeline. Thin: take ids, call the pipeline; safe to run twice."""

from celery import shared_task

from rules import pipeline, retention


@shared_task(acks_late=True, reject_on_worker_lost=True)
def process_events(event_ids: list[int]) -> int:
    return pipeline.events_process(event_ids)


@shared_task
def sweep_events() -> int:
    return pipeline.events_sweep()


@shared_task
def prune_events() -> int:
    return retention.events_prune()
