"""Strict input: unknown body fields and unknown query parameters are refused, never ignored."""

from __future__ import annotations

import copy

from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError

from loyalty.jsontext import MESSAGES, unstorable

STORABLE_JSON_HELP = "Any JSON object, without a NUL character (\\u0000) or a lone surrogate anywhere in it."


def storable_json(value) -> None:
    """A validator: refuse, 400, what PostgreSQL could not store, rather than fail on it, 500."""
    reason = unstorable(value)
    if reason:
        raise serializers.ValidationError(MESSAGES[reason], code=reason)


class StrictIntegerField(serializers.IntegerField):
    """An integer as JSON writes one: ``"100"``, ``100.0`` and ``true`` are refused, not converted
    (API.md: points are integers)."""

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``; not ``"no"``, ``0`` or ``"1"``."""

    def to_internal_value(self, data):
        if type(data) is not bool:
            self.fail("invalid")
        return data


def _field_copy(field: serializers.Field) -> serializers.Field:
    """A copy of a declared field for one serializer instance. A flat field is not changed once
    constructed but by ``bind``, which sets the copy's own attributes, so a copy of its attributes
    will do; a field holding other fields (a child, a nested serializer) is deep-copied as DRF does."""
    if hasattr(field, "child") or isinstance(field, serializers.BaseSerializer):
        return copy.deepcopy(field)
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


class StrictSerializer(serializers.Serializer):
    def get_fields(self):
        # DRF deep-copies every declared field for every serializer instance, and a field's deep
        # copy runs its constructor again: about half of a request body's validation (docs/architecture.md).
        return {name: _field_copy(field) for name, field in self._declared_fields.items()}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise ValidationError({unknown[0]: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]})
            # Text is JSON's own string: DRF would turn 123 into "123" (a redemption from member "123"),
            # where POST /events refuses it.
            for name, field in self.fields.items():
                value = data.get(name)
                if value is not None and isinstance(field, serializers.CharField) and not isinstance(value, str):
                    raise ValidationError({name: [serializers.ErrorDetail("Not a string.", code="invalid")]})
        return super().to_internal_value(data)


class StrictQueryMixin:
    """Views list the query parameters they take in ``query_params_allowed``.

    A NUL or a lone surrogate in the path is 404: no stored object can have that name."""

    query_params_allowed: frozenset[str] = frozenset()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        unknown = sorted(set(request.query_params) - set(self.query_params_allowed))
        if unknown:
            raise ValidationError(
                {unknown[0]: [serializers.ErrorDetail("Unknown query parameter.", code="unknown_parameter")]}
            )
        if unstorable(list(map(str, kwargs.values()))):
            raise NotFound("No such resource.")
