"""Partner API: balances, transactions and adjustments."""

from __future__ import annotations

import uuid

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import member_get
from ledger.models import Entry
from ledger.selectors import balance_by_external_id, balance_read, member_entries
from ledger.services import points_adjust
from loyalty.api import schema
from loyalty.api.fastpath import json_ok, plain_get_key
from loyalty.api.idempotency import IdempotentMixin
from loyalty.api.pagination import LIST_PARAMS, bad_cursor, page, page_limit
from loyalty.api.strict import StrictIntegerField, StrictQueryMixin, StrictSerializer


class SourceOut(serializers.Serializer):
    type = serializers.CharField(allow_null=True)
    id = serializers.CharField(allow_null=True)


class TransactionOut(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.ChoiceField(choices=["earn", "redeem", "expire", "reverse", "adjust", "hold", "release"])
    points = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    description = serializers.CharField(allow_blank=True)
    source = SourceOut()


def transaction_output(entry: Entry) -> dict:
    return {
        "id": str(entry.pk),
        "kind": entry.kind,
        "points": entry.points,
        "created_at": serializers.DateTimeField().to_representation(entry.created_at),
        "description": entry.description,
        "source": {"type": entry.source_type or None, "id": entry.source_id or None},
    }


class BalanceView(StrictQueryMixin, APIView):
    def dispatch(self, request, *args, **kwargs):
        # The API's hottest read: a plain request is answered around DRF (``loyalty.api.fastpath``).
        key = plain_get_key(request, [kwargs["external_id"]])
        if key is not None:
            balance = balance_by_external_id(key.partner.program_id, kwargs["external_id"])
            if balance is not None:
                return json_ok(balance, self)
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(responses={200: schema.Balance, 404: schema.Error}, summary="A member's balance")
    def get(self, request, external_id: str):
        balance = balance_by_external_id(request.user.program_id, external_id)
        if balance is None:
            member_get(request, external_id)  # the 404 of every member endpoint
        return Response(balance)


class TransactionListView(StrictQueryMixin, APIView):
    query_params_allowed = LIST_PARAMS

    @extend_schema(responses={200: schema.list_of(TransactionOut), 400: schema.Error, 404: schema.Error},
                   parameters=schema.LIST_PARAMETERS, summary="A member's ledger entries, newest first")
    def get(self, request, external_id: str):
        member = member_get(request, external_id)
        limit = page_limit(request)
        after = request.query_params.get("starting_after")
        entries = member_entries(member.pk, after)
        if entries is None:
            raise bad_cursor(after)
        return Response(page(list(entries[: limit + 1]), limit, transaction_output))


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": -10**9, "maximum": -1},
                                 {"type": "integer", "minimum": 1, "maximum": 10**9}],
                       "description": "Positive to add, negative to deduct; never 0."})
class NonZeroPoints(StrictIntegerField):
    pass


class AdjustmentView(IdempotentMixin, StrictQueryMixin, APIView):
    class InputSerializer(StrictSerializer):
        member_id = serializers.CharField(max_length=255)
        points = NonZeroPoints(min_value=-10**9, max_value=10**9)
        reason = serializers.CharField(max_length=255)

        def validate_points(self, value):
            if value == 0:
                raise serializers.ValidationError("points must not be 0.", code="invalid_points")
            return value

        class Meta:
            ref_name = "AdjustmentCreate"

    class OutputSerializer(serializers.Serializer):
        entry = TransactionOut()
        balance = schema.Balance()

        class Meta:
            ref_name = "Adjustment"

    @extend_schema(request=InputSerializer, parameters=[schema.IDEMPOTENCY_KEY],
                   responses={201: OutputSerializer, 400: schema.Error, 404: schema.Error, 422: schema.Error},
                   summary="Add or deduct points by hand")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member = member_get(request, data.validated_data["member_id"])
        key = self.operation_key(request) or f"api-adjust:{uuid.uuid4()}"
        with transaction.atomic(durable=True):
            operation = points_adjust(member=member, points=data.validated_data["points"], key=key,
                                      reason=data.validated_data["reason"])
        entry = operation.entries.order_by("id").first()
        return Response({"entry": transaction_output(entry), "balance": balance_read(member)},
                        status=status.HTTP_201_CREATED)
