import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")

app = Celery("loyalty")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_as_around_a_request(**kwargs) -> None:
    """A worker keeps its database connection from task to task as a web process does from
    request to request: closed when broken or older than DB_CONN_MAX_AGE, health-checked before
    reuse. (Celery's own Django fixup would close it around every task; CELERY_DB_REUSE_MAX in the
    settings stops that, and this takes its place.)"""
    from django.db import close_old_connections

    close_old_connections()

app.conf.beat_schedule = {
    "ledger-mature-lots": {"task": "ledger.tasks.mature_lots", "schedule": 60.0},
    "ledger-void-expired-holds": {"task": "ledger.tasks.void_expired_holds", "schedule": 60.0},
    "ledger-expire-lots": {"task": "ledger.tasks.expire_lots", "schedule": crontab(hour=0, minute=15)},
    "ledger-partitions-ahead": {"task": "ledger.tasks.ensure_entry_partitions", "schedule": crontab(hour=0, minute=5)},
    "campaigns-void-expired-redemptions": {"task": "campaigns.tasks.void_expired_redemptions", "schedule": 30.0},
    "api-clean-idempotency-records": {"task": "loyalty.tasks.clean_idempotency_records", "schedule": 3600.0},
    "rules-sweep-events": {"task": "rules.tasks.sweep_events", "schedule": 30.0},
    "rules-prune-events": {"task": "rules.tasks.prune_events", "schedule": crontab(hour=3, minute=30)},
    "ledger-audit": {"task": "ledger.tasks.audit", "schedule": crontab(hour=2, minute=0)},
    "webhooks-deliver-due": {"task": "webhooks.tasks.deliver_due", "schedule": 10.0, "options": {"expires": 10}},
    "webhooks-points-expiring": {"task": "webhooks.tasks.emit_points_expiring", "schedule": crontab(hour=0, minute=30)},
    "webhooks-prune-events": {"task": "webhooks.tasks.prune_events", "schedule": crontab(hour=3, minute=0)},
}
