"""Shared pieces of the OpenAPI schema (output shapes used by several apps)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers


class ErrorBody(serializers.Serializer):
    type = serializers.ChoiceField(choices=[
        "invalid_request_error", "authentication_error", "permission_error", "not_found", "conflict",
        "rate_limit_error", "api_error"])
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)


class Error(serializers.Serializer):
    error = ErrorBody()


class ExpiringPoints(serializers.Serializer):
    points = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class Balance(serializers.Serializer):
    available = serializers.IntegerField()
    pending = serializers.IntegerField()
    held = serializers.IntegerField()
    lifetime_earned = serializers.IntegerField()
    lifetime_redeemed = serializers.IntegerField()
    lifetime_expired = serializers.IntegerField()
    expiring = ExpiringPoints(many=True)


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="1-255 characters. The same key and body replays the first response.",
)
LIST_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 100, default 20."),
    OpenApiParameter("starting_after", OpenApiTypes.STR, description="The id of the last object of the previous page."),
]


def list_of(item_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The ``{"data": [...], "has_more": bool}`` envelope of a list."""
    return type(f"{item_class.__name__}List", (serializers.Serializer,), {
        "data": item_class(many=True), "has_more": serializers.BooleanField(),
    })
