"""Database helpers shared by the apps."""

from __future__ import annotations

import re

from django.db import DEFAULT_DB_ALIAS, DatabaseError, DataError, InterfaceError, OperationalError, connections
from django.db.models.base import ModelState

from loyalty.prepared import prepared_cursor

# SQLSTATE of a number beyond its column's type (points balances are 32-bit integers).
_NUMERIC_VALUE_OUT_OF_RANGE = "22003"


def out_of_range(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a number too large for its column: nothing was
    written, and the request, not the server, is at fault."""
    return isinstance(exc, DataError) and getattr(exc.__cause__, "sqlstate", None) == _NUMERIC_VALUE_OUT_OF_RANGE

# SQLSTATE classes and codes of errors that say nothing about the request: the connection
# (08), a rollback the server chose (40: serialization failure, deadlock), the server shutting down
# or not yet up (57P01-57P03), too few resources (53), a lock wait given up (55P03).
_TRANSIENT_CLASSES = ("08", "40", "53")
_TRANSIENT_CODES = ("57P01", "57P02", "57P03", "55P03")


def transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the database failing a request that may succeed if sent again: a lost
    connection, a server restarting, a deadlock or serialization failure, a lock wait given up."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate is None:  # the connection itself: closed, broken, or never made
        return True
    return sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate in _TRANSIENT_CODES


def pg_int_array(values) -> str:
    """A PostgreSQL array literal of integers (``'{1,2,3}'``, for ``%s::bigint[]``): one text
    parameter, where psycopg would write a list element by element in Python
    (``bench/row_params.py``)."""
    return "{" + ",".join(map(str, values)) + "}"


_statements: dict[tuple, tuple[str, list]] = {}


def _statement(kind: str, model, build, *extra) -> tuple[str, list]:
    """The SQL of a prepared helper's statement for ``model`` and the fields it writes or reads,
    built once per process by ``build(model, quote, connection, *extra)``."""
    key = (kind, model, *extra)
    if key not in _statements:
        db = connections[DEFAULT_DB_ALIAS]
        _statements[key] = build(model, db.ops.quote_name, db, *extra)
    return _statements[key]


def _columns(model, db) -> tuple[list, list[str]]:
    """The model's columns but its primary key, and each one's parameter with its cast."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    return fields, [f"%s::{_unsized(field.cast_db_type(db))}" for field in fields]


def _insert_sql(model, quote, db) -> tuple[str, list]:
    fields, params = _columns(model, db)
    return (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
            f"VALUES ({', '.join(params)}) RETURNING {quote(model._meta.pk.column)}", fields)


def _update_sql(model, quote, db) -> tuple[str, list]:
    fields, params = _columns(model, db)
    pk = model._meta.pk
    assignments = ", ".join(f"{quote(field.column)} = {param}" for field, param in zip(fields, params, strict=True))
    return (f"UPDATE {quote(model._meta.db_table)} SET {assignments} "
            f"WHERE {quote(pk.column)} = %s::{_unsized(pk.cast_db_type(db))}", fields)


def _select_sql(model, quote, db, where: str) -> tuple[str, list]:
    fields = list(model._meta.concrete_fields)
    return (f"SELECT {', '.join(quote(field.column) for field in fields)} FROM {quote(model._meta.db_table)} "
            f"WHERE {where}", fields)


def prepared_insert(instance) -> None:
    """``instance.save(force_insert=True)`` for a new row of a model with an automatic primary key,
    as a prepared statement with nothing to compile: for rows written on a hot path. It sends no
    ``pre_save`` / ``post_save`` signals, so it is only for models that nothing listens to."""
    db = connections[DEFAULT_DB_ALIAS]
    sql, fields = _statement("insert", type(instance), _insert_sql)
    values = [field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(sql, values)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding, instance._state.db = False, db.alias


def prepared_update(instance) -> None:
    """``instance.save()`` of a row that exists (every column but the primary key), as a prepared
    statement with nothing to compile; ``DatabaseError`` if no row has its primary key, as for
    ``save(update_fields=...)``. No signals, as for ``prepared_insert``."""
    db = connections[DEFAULT_DB_ALIAS]
    model = type(instance)
    sql, fields = _statement("update", model, _update_sql)
    values = [field.get_db_prep_save(field.pre_save(instance, False), db) for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(sql, [*values, instance.pk])
        if cursor.rowcount != 1:
            raise DatabaseError(f"No {model.__name__} row with primary key {instance.pk!r} to update.")


def prepared_get(model, where: str, params: list):
    """The row of ``model`` that ``where`` finds (its parameters typed: ``code = %s::text``), as the
    ORM loads it, or None: a prepared statement with nothing to compile, for rows read on a hot path
    (a queryset compiles its SQL at every query)."""
    sql, _fields = _statement("get", model, _select_sql, where)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return model_from_row(model, row) if row is not None else None


def model_from_row(model, row):
    """An instance of ``model`` from its columns in ``concrete_fields`` order, as the ORM's compiler
    makes it: each field's own conversion (JSON text to a dict)."""
    db = connections[DEFAULT_DB_ALIAS]
    fields = model._meta.concrete_fields
    values = [field.from_db_value(value, None, db) if hasattr(field, "from_db_value") else value
              for field, value in zip(fields, row, strict=True)]
    return model.from_db(db.alias, [field.attname for field in fields], values)


def model_copy(instance):
    """A new instance with ``instance``'s field values, as loading the same row again would give,
    for the price of copying its attributes (``Model.from_db`` runs ``__init__`` and its signals,
    several times dearer). Related objects cached on ``instance`` are not carried over."""
    copy = object.__new__(type(instance))
    copy.__dict__.update(instance.__dict__)
    copy.__dict__.pop("_prefetched_objects_cache", None)
    copy._state = ModelState()
    copy._state.adding, copy._state.db = instance._state.adding, instance._state.db
    return copy


def _unsized(db_type: str) -> str:
    """``varchar(40)`` -> ``varchar``: an explicit cast to a sized type would cut a value that is too
    long; to the plain type, the column refuses it as an ORM insert would."""
    return re.sub(r"\(.*\)$", "", db_type)

