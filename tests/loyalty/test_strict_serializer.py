"""``StrictSerializer`` copies its declared fields without running their constructors again
(``loyalty.api.strict._field_copy``): it must validate exactly as DRF's deep copies do, and no
two serializers may share a bound field."""

from __future__ import annotations

import copy

import pytest
from rest_framework import serializers

from accounts.api import MemberDetailView, MemberListView
from campaigns.api import RedemptionCreateView
from ledger.api import AdjustmentView
from rules.api import EventBatchInput, EventInput
from webhooks.api import WebhookEndpointListView

INPUTS = [
    RedemptionCreateView.InputSerializer, AdjustmentView.InputSerializer, MemberListView.InputSerializer,
    MemberDetailView.UpdateSerializer, EventInput, EventBatchInput, WebhookEndpointListView.InputSerializer,
]

BODIES = [
    {}, None, [], "text",
    {"member_id": "m-1", "points": 25}, {"member_id": "m-1", "points": "25"}, {"member_id": "m-1", "points": 0},
    {"member_id": "", "reward": "coffee", "quantity": 2, "capture": False}, {"member_id": "m" * 300, "points": 5},
    {"member_id": "m-1", "reward": "coffee", "quantity": 1001}, {"member_id": "m-1", "points": 5, "quantity": 1},
    {"member_id": "m-1", "points": -40, "reason": "goodwill"}, {"member_id": "m-1", "points": 10**10, "reason": ""},
    {"external_id": "m-1", "email": "a@example.com", "attributes": {"city": "Lisbon"}},
    {"external_id": "m 1", "email": "not an email", "attributes": []}, {"email": "", "attributes": {"a": "\u0000"}},
    {"event_id": "e-1", "type": "purchase", "member_id": "m-1", "occurred_at": "2026-11-01T10:00:00Z",
     "properties": {"amount": "12.50", "currency": "EUR"}},
    {"event_id": "", "type": 5, "member_id": None, "properties": "x"},
    {"events": [{"event_id": "e-1"}, 3]}, {"events": []}, {"events": "no"},
    {"url": "https://example.com/hook", "event_types": ["points.earned"]}, {"url": "ftp://x", "event_types": ["nope"]},
    {"member_id": "m-1", "points": 5, "unknown": 1},
]


def deep_copying(serializer_class):
    """The same serializer with DRF's own field copies."""
    return type(serializer_class.__name__, (serializer_class,), {
        "get_fields": lambda self: copy.deepcopy(self._declared_fields), "__module__": __name__})


def outcome(serializer_class, body):
    serializer = serializer_class(data=body)
    valid = serializer.is_valid()
    codes = serializers.ValidationError(serializer.errors).get_codes() if not valid else None
    return valid, (serializer.validated_data if valid else None), serializer.errors, codes


@pytest.mark.parametrize("serializer_class", INPUTS, ids=lambda cls: cls.__qualname__)
def test_validates_as_drfs_deep_copies_do(serializer_class):
    twin = deep_copying(serializer_class)
    for body in BODIES:
        assert outcome(serializer_class, body) == outcome(twin, body), body


@pytest.mark.parametrize("serializer_class", INPUTS, ids=lambda cls: cls.__qualname__)
def test_no_two_serializers_share_a_field(serializer_class):
    first, second = serializer_class(data={}), serializer_class(data={})
    for name, field in first.fields.items():
        other = second.fields[name]
        assert field is not other and field.parent is first and other.parent is second
        assert field is not serializer_class._declared_fields[name]
        if hasattr(field, "child"):  # a field holding another is deep-copied: its child too
            assert field.child is not other.child and field.child.parent is field
    # Binding one serializer's fields left the declared ones unbound.
    assert all(getattr(field, "parent", None) is None for field in serializer_class._declared_fields.values())
