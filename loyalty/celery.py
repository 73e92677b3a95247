import gc
import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_postrun, task_prerun, worker_process_init

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


# A young generation this large is collected a tenth as often; the older ones are then scanned
# after that many young collections, as by default. (``bench/INGEST.md``: the garbage collector.)
WORKER_GC_THRESHOLD = (7000, 20, 20)


@worker_process_init.connect
def _garbage_collector_for_batches(**kwargs) -> None:
    """Each pool process, once it has loaded Django and the tasks: what it holds for good
    (modules, models, settings: some 170,000 objects) leaves the collector's view, so that its
    full collections scan what the tasks make, not all that again. A batch of 250 events makes
    enough objects to run several; they had cost about a fifth of the worker's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)


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
