from celery import shared_task

from loyalty.api.idempotency import idempotency_records_clean


@shared_task
def clean_idempotency_records() -> int:
    return idempotency_records_clean()
