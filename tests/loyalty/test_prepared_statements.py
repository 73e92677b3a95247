"""``loyalty.db.prepared_insert``, ``prepared_update`` and ``prepared_get``: the row an ORM insert
or save would write, and the instance a query would load, through prepared statements."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, DataError, connection, transaction

from accounts.models import Program
from loyalty.db import model_copy, prepared_get, prepared_insert, prepared_update
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


def test_update_writes_what_the_orm_save_writes(program):
    ours, theirs = _record(program, "u-ours"), _record(program, "u-theirs")
    prepared_insert(ours)
    prepared_insert(theirs)
    later = NOW.replace(hour=9)
    for record in (ours, theirs):
        record.state, record.response_status, record.locked_at = "done", 422, later
        record.response_body = {"error": {"code": "insufficient_points", "n": [1, None, "ação"]}}
    prepared_update(ours)
    theirs.save()
    assert _row(ours.pk) == _row(theirs.pk)
    assert _row(ours.pk)["response_body"]["error"]["n"] == [1, None, "ação"]
    assert _row(ours.pk)["locked_at"] == later


def test_update_sets_a_column_back_to_null(program):
    ours = _record(program, "u-null", state="done", response_status=201, response_body={"a": 1})
    prepared_insert(ours)
    ours.response_status = ours.response_body = None
    prepared_update(ours)
    row = _row(ours.pk)
    assert row["response_status"] is None and row["response_body"] is None


def test_update_of_a_row_that_is_not_there_is_an_error(program):
    ours = _record(program, "u-gone")
    prepared_insert(ours)
    IdempotencyRecord.objects.filter(pk=ours.pk).delete()
    with pytest.raises(DatabaseError, match="No IdempotencyRecord row"):
        prepared_update(ours)


def test_update_of_a_value_too_long_is_refused_and_changes_nothing(program):
    ours = _record(program, "u-long")
    prepared_insert(ours)
    ours.key = "k" * 256
    with pytest.raises(DataError), transaction.atomic():
        prepared_update(ours)
    assert IdempotencyRecord.objects.get(pk=ours.pk).key == "u-long"


def test_the_update_is_prepared_once_per_connection(program):
    records = [_record(program, f"u{n}") for n in range(4)]
    for record in records:
        prepared_insert(record)
        record.state = "done"
        prepared_update(record)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       ['UPDATE "loyalty_idempotencyrecord"%'])
        assert cursor.fetchone()[0] == 1


def test_get_loads_what_the_orm_loads(program):
    body = {"id": "rdm_2", "nested": {"a": [1, 2.5, None, "ação"]}}
    ours = _record(program, "g-1", state="done", response_status=201, response_body=body)
    prepared_insert(ours)
    found = prepared_get(IdempotencyRecord, "program_id = %s::bigint AND key = %s::text", [program.pk, "g-1"])
    orm = IdempotencyRecord.objects.get(program=program, key="g-1")
    fields = [field.attname for field in IdempotencyRecord._meta.concrete_fields]
    assert [getattr(found, name) for name in fields] == [getattr(orm, name) for name in fields]
    assert found.response_body == body and found.created_at == NOW
    assert not found._state.adding and found._state.db == "default"


def test_get_of_nothing_is_none(program):
    assert prepared_get(IdempotencyRecord, "program_id = %s::bigint AND key = %s::text", [program.pk, "none"]) is None


def test_model_copy_is_an_instance_of_its_own_as_loading_the_row_again_gives(program):
    loaded = Program.objects.get(pk=program.pk)
    copy = model_copy(loaded)
    again = Program.objects.get(pk=program.pk)
    assert copy is not loaded and copy._state is not loaded._state
    assert {f.attname: getattr(copy, f.attname) for f in Program._meta.concrete_fields} == \
        {f.attname: getattr(again, f.attname) for f in Program._meta.concrete_fields}
    assert (copy._state.adding, copy._state.db) == (False, "default")
    copy.name = "Renamed"
    copy.save(update_fields=["name"])
    assert loaded.name == again.name != "Renamed"
    assert Program.objects.get(pk=program.pk).name == "Renamed"
