"""``loyalty.db.prepared_insert``: the row an ORM insert would write, through a prepared statement."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DataError, connection, transaction

from loyalty.db import prepared_insert
from loyalty.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=dt.UTC)


def _record(program, key: str, **fields) -> IdempotencyRecord:
    return IdempotencyRecord(program=program, key=key, request_hash="h" * 64, created_at=NOW, locked_at=NOW, **fields)


def _row(pk: int) -> dict:
    row = IdempotencyRecord.objects.filter(pk=pk).values().get()
    row.pop("id")
    row.pop("key")
    return row


def test_writes_what_the_orm_writes_and_sets_the_primary_key(program):
    body = {"id": "rdm_1", "points": 150, "nested": [1, "two", None], "text": "ação"}
    ours = _record(program, "ours", state="done", response_status=201, response_body=body)
    theirs = _record(program, "theirs", state="done", response_status=201, response_body=body)
    prepared_insert(ours)
    theirs.save(force_insert=True)
    assert ours.pk is not None and ours.pk != theirs.pk
    assert not ours._state.adding and ours._state.db == "default"
    assert _row(ours.pk) == _row(theirs.pk)
    assert _row(ours.pk)["response_body"] == body


def test_nulls_and_defaults(program):
    ours = _record(program, "defaults")
    prepared_insert(ours)
    row = _row(ours.pk)
    assert row["state"] == "in_progress" and row["response_status"] is None and row["response_body"] is None


def test_a_value_too_long_for_its_column_is_refused_not_cut(program):
    with pytest.raises(DataError), transaction.atomic():
        prepared_insert(_record(program, "k" * 256))
    assert not IdempotencyRecord.objects.filter(key__startswith="kkkk").exists()


def test_the_statement_is_prepared_once_per_connection(program):
    for n in range(4):
        prepared_insert(_record(program, f"n{n}"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       ['INSERT INTO "loyalty_idempotencyrecord"%'])
        assert cursor.fetchone()[0] == 1
