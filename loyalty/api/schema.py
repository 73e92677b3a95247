"""Shared pieces of the OpenAPI schema (output shapes used by several apps), and the rules that
keep the schema true to what the API does (checked by tests/schema with Schemathesis)."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from loyalty.api.strict import StrictQueryMixin, StrictSerializer


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
    "Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 255}, OpenApiParameter.HEADER, required=False,
    description="1-255 characters. The same key and body replays the first response.",
)
LIST_PARAMETERS = [
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="1 to 100, default 20."),
    OpenApiParameter("starting_after", OpenApiTypes.STR, description="The id of the last object of the previous page."),
]


def list_of(item_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The ``{"data": [...], "has_more": bool}`` envelope of a list."""
    return type(f"{item_class.__name__}List", (serializers.Serializer,), {
        "data": item_class(many=True), "has_more": serializers.BooleanField(),
    })


# Python's whitespace (``str.isspace()``, what ``str.strip()`` and Python's ``\s`` mean) as the inside of
# a regex class that reads the same in Python and ECMA; ECMA's ``\s`` differs (\x1c-\x1f, \x85, \ufeff).
WHITESPACE = r"\t\n\v\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{WHITESPACE}]"


class PartnerAutoSchema(AutoSchema):
    """Declares what the shared plumbing of every partner API view can answer, besides the
    view's own responses: 401 (no or bad key), 429 (rate limit), 400 for an unknown query
    parameter (StrictQueryMixin) or a body that is not JSON, 415 for a body of another type,
    and on idempotent POSTs 400/409/422 for a bad, busy or reused ``Idempotency-Key``.
    Request text fields that DRF trims and refuses blank are declared non-blank."""

    def _is_partner_api(self) -> bool:
        from loyalty.api.authentication import PartnerKeyAuthentication

        return any(isinstance(auth, PartnerKeyAuthentication) for auth in self.view.get_authenticators())

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if not self._is_partner_api():
            return responses
        from loyalty.api.idempotency import IdempotentMixin

        extra = [401, 429]
        if isinstance(self.view, StrictQueryMixin):
            extra.append(400)
        if self.method in ("POST", "PUT", "PATCH"):
            extra += [400, 415]
        if self.method == "POST" and isinstance(self.view, IdempotentMixin):
            extra += [400, 409, 422]
        for code in map(str, extra):
            if code not in responses:
                responses[code] = self._get_response_for_code(Error, code, direction=direction)
        return responses

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        for name, field in serializer.fields.items():
            prop = schema.get("properties", {}).get(name)
            if isinstance(field, serializers.ListField) and isinstance(prop, dict):
                field, prop = field.child, prop.get("items")
            if isinstance(field, serializers.CharField) and isinstance(prop, dict):
                _describe_text_input(field, prop)
        return schema


def _describe_text_input(field: serializers.CharField, prop: dict) -> None:
    """What DRF checks of a text field beyond its declared constraints: no NUL character
    (ProhibitNullCharactersValidator), and not blank once trimmed, unless blank is allowed."""
    if "$ref" in prop:
        return
    prop["not"] = {"pattern": "\\u0000"}
    if prop.get("type") != "string" or {"pattern", "format", "enum"} & set(prop) or field.allow_blank:
        return
    prop["minLength"] = max(prop.get("minLength", 0), 1)
    if field.trim_whitespace:
        prop["pattern"] = NOT_BLANK


class StrictSerializerScheme(OpenApiSerializerExtension):
    """Strict input refuses unknown fields: say so (``additionalProperties: false``). A serializer
    may add what its ``validate()`` checks across fields in ``openapi_extra`` (e.g. a ``oneOf``)."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        schema.update(getattr(self.target, "openapi_extra", {}))
        return schema
