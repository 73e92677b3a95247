from celery import shared_task

from campaigns.services import redemptions_void_expired


@shared_task(acks_late=True)
def void_expired_redemptions() -> int:
    return redemptions_void_expired()
