"""The Celery pool processes' garbage collector (``loyalty.celery``)."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init

from loyalty import celery


def test_a_pool_process_freezes_what_it_loaded_and_collects_less_often():
    assert any(receiver() is celery._garbage_collector_for_batches
               for _key, receiver in worker_process_init.receivers)
    threshold = gc.get_threshold()
    try:
        celery._garbage_collector_for_batches()
        assert gc.get_freeze_count() > 10_000  # Django, the apps, the tasks
        assert gc.get_threshold() == celery.WORKER_GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
