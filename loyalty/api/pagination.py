"""Cursor pagination: ``?limit=`` (1..100, default 20) and ``?starting_after=<id>``;
the body is ``{"data": [...], "has_more": bool}``."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from loyalty.jsontext import unstorable

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
LIST_PARAMS = frozenset({"limit", "starting_after"})


def page_limit(request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT or not raw.isdigit():
        raise ValidationError({"limit": [serializers.ErrorDetail(
            f"limit must be an integer from 1 to {MAX_LIMIT}.", code="invalid_limit")]})
    return limit


def page(items_plus_one: list, limit: int, render) -> dict:
    """``items_plus_one``: up to ``limit + 1`` rows in order; the extra one only says there is more."""
    return {"data": [render(item) for item in items_plus_one[:limit]], "has_more": len(items_plus_one) > limit}


def bad_cursor(value: str):
    return ValidationError({"starting_after": [serializers.ErrorDetail(
        f"No object {value!r} to start after.", code="invalid_cursor")]})


def after_id(request, queryset, field: str):
    """``queryset`` (ordered by ``id``) past the object whose ``field`` is ``?starting_after``."""
    after = request.query_params.get("starting_after")
    if after is None:
        return queryset
    # A NUL or a lone surrogate cannot be in any stored name: no such object.
    cursor = None if unstorable(after) else queryset.filter(**{field: after}).values_list("id", flat=True).first()
    if cursor is None:
        raise bad_cursor(after)
    return queryset.filter(id__gt=cursor)
