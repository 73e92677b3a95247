"""Partner API: events."""

from __future__ import annotations

import orjson
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import EXTERNAL_ID
from ledger.selectors import balance_read
from loyalty.api import schema
from loyalty.api.errors import envelope
from loyalty.api.idempotency import IdempotentMixin
from loyalty.api.strict import StrictQueryMixin, StrictSerializer
from rules.models import InboundEvent
from rules.pipeline import event_submit, events_submit_batch

MAX_BATCH = 1000

AwardSerializer = inline_serializer("Award", {
    "points": serializers.IntegerField(), "rule": serializers.CharField(),
    "campaign": serializers.CharField(allow_null=True),
}, many=True)


class EventInput(StrictSerializer):
    """For the schema: the pipeline itself checks the event (rules.validation.event_clean), so
    that even invalid ones are kept. Unknown fields are refused."""

    event_id = serializers.RegexField(r"^[A-Za-z0-9._:\-]{1,255}\Z", max_length=255)
    type = serializers.RegexField(
        r"^[a-z][a-z0-9_]{0,63}\Z", max_length=64,
        help_text="A built-in type (purchase, refund, signup) or one the program declares.")
    member_id = serializers.RegexField(EXTERNAL_ID, max_length=255,
                                       help_text="No '/' and no white space, as a member's external_id.")
    occurred_at = serializers.DateTimeField(required=False, help_text="With a time zone; not in the future.")
    properties = serializers.DictField(
        required=False,
        help_text="Checked against the type's JSON Schema. No NUL character (\\u0000) or lone surrogate anywhere.")


EventProcessed = inline_serializer("EventProcessed", {
    "event_id": serializers.CharField(), "status": serializers.CharField(),
    "awards": AwardSerializer, "balance": schema.Balance(required=False)})


def _event_output(event: InboundEvent) -> dict:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "status": event.status,
        "awards": [{k: a.get(k) for k in ("points", "rule", "campaign")} for a in event.awards],
        "error": event.error,
        "trace": event.trace,
    }


class EventCreateView(IdempotentMixin, StrictQueryMixin, APIView):
    @extend_schema(
        request=EventInput,
        responses={
            201: EventProcessed,
            200: OpenApiResponse(EventProcessed, description="The same event_id again: the first result."),
            400: schema.Error, 404: schema.Error, 409: schema.Error,
            422: OpenApiResponse(schema.Error, description="member_inactive (the event is kept as rejected), "
                                                          "value_out_of_range (kept as failed), "
                                                          "or idempotency_key_reused."),
        },
        parameters=[schema.IDEMPOTENCY_KEY],
        summary="Send one event; it is qualified in real time",
    )
    def post(self, request):
        partner = request.user
        submission = event_submit(program=partner.program, partner=partner, payload=request.data)
        event = submission.event
        if event.status == InboundEvent.Status.REJECTED:
            error = event.error or {}
            code_status = (404 if error.get("type") == "not_found"
                           else 422 if error.get("code") == "member_inactive" else 400)
            return Response({"error": error}, status=code_status)
        body = {"event_id": event.event_id, "status": event.status,
                "awards": _event_output(event)["awards"]}
        if submission.balance is not None:
            body["balance"] = submission.balance
        elif event.balance_after is not None:  # the same event_id again: the first result
            body["balance"] = orjson.loads(event.balance_after)
        elif event.member_id:  # an event of a batch, or one that was not processed
            body["balance"] = balance_read(event.member)
        return Response(body, status=status.HTTP_201_CREATED if submission.created else status.HTTP_200_OK)


class EventBatchInput(StrictSerializer):
    """For the schema: each event is checked on its own, so the batch takes any items."""

    events = serializers.ListField(
        child=serializers.JSONField(), min_length=1, max_length=MAX_BATCH,
        help_text="Events as POST /api/v1/events takes them. One that is not a valid event is listed in "
                  "`rejected` (and kept); it never fails the batch.")

    class Meta:
        ref_name = "EventBatch"


class EventBatchView(IdempotentMixin, StrictQueryMixin, APIView):
    def dispatch(self, request, *args, **kwargs):
        if request.method in ("GET", "HEAD"):  # GET /api/v1/events/{event_id} of the event whose id is "batch"
            return _event_detail(request, event_id="batch")
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        request=EventBatchInput,
        responses={202: inline_serializer("EventBatchAccepted", {
            "accepted": serializers.IntegerField(), "duplicates": serializers.IntegerField(),
            "rejected": inline_serializer("EventRejected", {
                "index": serializers.IntegerField(), "event_id": serializers.CharField(allow_null=True),
                "error": schema.ErrorBody()}, many=True),
        }), 400: schema.Error, 409: schema.Error, 413: schema.Error, 422: schema.Error},
        parameters=[schema.IDEMPOTENCY_KEY],
        summary="Send up to 1,000 events; workers process them within seconds",
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, dict):
            raise ValidationError("The body must be an object with an `events` list.")
        unknown = sorted(set(data) - {"events"})
        if unknown:
            return Response(envelope("invalid_request_error", "unknown_field", f"Unknown field: {unknown[0]}.",
                                     unknown[0]), status=400)
        events = data.get("events")
        if not isinstance(events, list) or not events:
            return Response(envelope("invalid_request_error", "missing_field",
                                     "events must be a non-empty list.", "events"), status=400)
        if len(events) > MAX_BATCH:
            return Response(envelope("invalid_request_error", "batch_too_large",
                                     f"At most {MAX_BATCH} events per batch; got {len(events)}.", "events"), status=400)
        partner = request.user
        result = events_submit_batch(program=partner.program, partner=partner, payloads=events)
        return Response({"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected},
                        status=status.HTTP_202_ACCEPTED)


class EventDetailView(StrictQueryMixin, APIView):
    @extend_schema(
        responses={200: inline_serializer("Event", {
            "event_id": serializers.CharField(), "type": serializers.CharField(), "status": serializers.CharField(),
            "awards": AwardSerializer, "error": schema.ErrorBody(allow_null=True), "trace": serializers.ListField()}),
            404: schema.Error},
        summary="An event's status, awards, error and explanation trace",
    )
    def get(self, request, event_id: str):
        event = InboundEvent.objects.filter(program_id=request.user.program_id, event_id=event_id).first()
        if event is None:
            raise NotFound(f"No event {event_id!r}.")
        return Response(_event_output(event))


_event_detail = EventDetailView.as_view()
