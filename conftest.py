"""Root fixtures, shared by every test package."""

import itertools

import pytest

_counter = itertools.count(1)


@pytest.fixture
def make_program(db):
    from accounts.models import Program

    def make(**fields):
        n = next(_counter)
        fields.setdefault("name", f"Program {n}")
        fields.setdefault("slug", f"program-{n}")
        return Program.objects.create(**fields)

    return make


@pytest.fixture
def program(make_program):
    return make_program()


@pytest.fixture
def make_member(db):
    from accounts.services import member_create

    def make(program, **fields):
        fields.setdefault("external_id", f"m-{next(_counter)}")
        return member_create(program=program, **fields)

    return make


@pytest.fixture
def member(program, make_member):
    return make_member(program)


@pytest.fixture(scope="session", autouse=True)
def _private_celery_queue():
    """Tasks published by tests go to a queue of this session, never to a real worker's queue."""
    import os

    from loyalty.celery import app

    app.conf.task_default_queue = f"loyalty-test-{os.getpid()}"
    yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Tests move the clock years ahead: give them the monthly partitions they reach."""
    import datetime as dt

    from ledger.partitions import ensure_partitions

    with django_db_blocker.unblock():
        ensure_partitions(start=dt.date(2025, 1, 1), months_ahead=12 * 6)
