"""Fixtures for tests against a real Celery worker process.

Every test session gets its own queue name; during each test the test process publishes
to it (``app.conf.task_default_queue``) and the workers started here consume only it
(``-Q`` and ``CELERY_QUEUE``), so no other worker on the same Redis takes these tasks and
these workers take no one else's. Workers run against the pytest test database, so the
tests use ``transactional_db``: what the worker is to see must be committed.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from .worker import BASE_DIR, CeleryWorker, redis_cleanup, same_server_and_database, worker_database_url

_programs = itertools.count(1)


@pytest.fixture(scope="session")
def pipeline_queue():
    from django.conf import settings

    name = f"loyalty-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    redis_cleanup(settings.REDIS_URL, name)


@pytest.fixture
def route_to_test_queue(pipeline_queue):
    """The test process publishes its tasks to the session's queue, for this test only."""
    from loyalty.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = pipeline_queue
    try:
        yield pipeline_queue
    finally:
        app.conf.task_default_queue = previous


@pytest.fixture
def celery_workers(transactional_db, route_to_test_queue, tmp_path):
    """A factory: ``celery_workers()`` starts a worker (prefork, 2 processes) and waits until
    it is ready. Every worker started is killed, with its children, at teardown."""
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_NAME",)}
    if not env.get("SECRET_KEY"):
        env["DEBUG"] = env.get("DEBUG") or "1"
    database_url = worker_database_url()
    ours, theirs = same_server_and_database(database_url)
    assert ours == theirs, f"{database_url} reaches {theirs}, the tests use {ours}"
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_QUEUE=route_to_test_queue,
        DJANGO_SETTINGS_MODULE="loyalty.settings",
        PYTHONPATH=os.pathsep.join(p for p in (str(BASE_DIR), env.get("PYTHONPATH", "")) if p),
    )
    workers: list[CeleryWorker] = []
    counter = itertools.count(1)

    def start(concurrency: int = 2, **extra_env: str) -> CeleryWorker:
        n = next(counter)
        worker = CeleryWorker(queue=route_to_test_queue, name=f"pipeline-test-{os.getpid()}-{n}",
                              log_path=tmp_path / f"worker-{n}.log", env={**env, **extra_env},
                              concurrency=concurrency)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def pipeline_program(transactional_db):
    """A program with a spend rule (1 point per currency unit, rounded down) and 40 members."""
    from accounts.models import Program
    from accounts.services import member_create
    from rules.models import Rule
    from rules.services import rule_save

    n = next(_programs)
    program = Program.objects.create(name=f"Pipeline {n}", slug=f"pipeline-{os.getpid()}-{n}")
    rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))
    members = [member_create(program=program, external_id=f"m-{i}") for i in range(40)]
    return program, members
