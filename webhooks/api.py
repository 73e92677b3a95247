"""Partner API: webhook endpoints."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from loyalty.api import schema
from loyalty.api.idempotency import IdempotentMixin
from loyalty.api.pagination import LIST_PARAMS, after_id, page, page_limit
from loyalty.api.strict import StrictQueryMixin, StrictSerializer
from loyalty.errors import NotFound
from webhooks.models import WEBHOOK_EVENT_TYPES, WebhookEndpoint
from webhooks.services import endpoint_create, endpoint_delete


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


def endpoint_get(request, endpoint_id: str) -> WebhookEndpoint:
    """An endpoint of the caller's program; any other is 404, exactly as if it did not exist."""
    endpoint = WebhookEndpoint.objects.filter(program_id=request.user.program_id, public_id=endpoint_id).first()
    if endpoint is None:
        raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id!r}.", param="id")
    return endpoint


def endpoint_output(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict:
    body = {
        "id": endpoint.public_id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "is_active": endpoint.is_active,
        "created_at": serializers.DateTimeField().to_representation(endpoint.created_at),
    }
    if with_secret:
        body["secret"] = endpoint.secret
    return body


class WebhookEndpointOut(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.URLField()
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_TYPES), help_text="Empty: every event type."
    )
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "WebhookEndpoint"


class WebhookEndpointCreatedOut(WebhookEndpointOut):
    secret = serializers.CharField(help_text="Signs every delivery. Shown only here, once: keep it.")

    class Meta:
        ref_name = "WebhookEndpointCreated"


@extend_schema_field({"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)})
class EventTypeField(serializers.CharField):
    """A webhook event type; endpoint_create refuses others with ``invalid_event_type``."""

    def __init__(self, **kwargs):
        super().__init__(max_length=64, **kwargs)


class WebhookEndpointListView(IdempotentMixin, StrictQueryMixin, APIView):
    """Endpoints receive the program's events as signed POSTs; see docs/webhooks.md."""

    class InputSerializer(StrictSerializer):
        url = serializers.URLField(max_length=2048, help_text="https:// (http:// too in development).")
        event_types = serializers.ListField(
            child=EventTypeField(), required=False, max_length=len(WEBHOOK_EVENT_TYPES) * 2,
            help_text=f"Any of {', '.join(WEBHOOK_EVENT_TYPES)}. Empty or absent: every type.",
        )

        class Meta:
            ref_name = "WebhookEndpointCreate"

    @property
    def query_params_allowed(self):
        # Only POST refuses the list parameters: another method is answered 405, not 400.
        return frozenset() if self.request.method == "POST" else LIST_PARAMS

    @extend_schema(
        request=InputSerializer, parameters=[schema.IDEMPOTENCY_KEY],
        responses={201: WebhookEndpointCreatedOut, 400: schema.Error, 422: schema.Error},
        summary="Register a webhook endpoint; the response carries its signing secret, once",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = endpoint_create(program=request.user.program, partner=request.user, **data.validated_data)
        return Response(endpoint_output(endpoint, with_secret=True), status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={200: schema.list_of(WebhookEndpointOut), 400: schema.Error},
        parameters=schema.LIST_PARAMETERS, summary="List webhook endpoints, oldest first",
        operation_id="webhook_endpoints_list",
    )
    def get(self, request):
        limit = page_limit(request)
        endpoints = WebhookEndpoint.objects.filter(program_id=request.user.program_id).order_by("id")
        endpoints = after_id(request, endpoints, "public_id")
        return Response(page(list(endpoints[: limit + 1]), limit, endpoint_output))


class WebhookEndpointDetailView(StrictQueryMixin, APIView):
    """An endpoint of the caller's program; any other is 404."""

    @extend_schema(responses={200: WebhookEndpointOut, 404: schema.Error}, summary="A webhook endpoint")
    def get(self, request, endpoint_id: str):
        return Response(endpoint_output(endpoint_get(request, endpoint_id)))

    @extend_schema(
        responses={204: OpenApiResponse(description="Deleted, with its pending deliveries."), 404: schema.Error},
        summary="Delete a webhook endpoint",
    )
    def delete(self, request, endpoint_id: str):
        endpoint_delete(endpoint=endpoint_get(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
