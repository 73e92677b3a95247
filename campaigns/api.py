"""Partner API: rewards and redemptions."""

from __future__ import annotations

import uuid

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ErrorDetail, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns import services
from campaigns.models import Redemption, Reward
from campaigns.selectors import redemption_voucher, reward_available, reward_stock, rewards_with_free_codes
from ledger.selectors import balance_read
from loyalty.api import schema
from loyalty.api.idempotency import IdempotentMixin
from loyalty.api.pagination import LIST_PARAMS, after_id, page, page_limit
from loyalty.api.ratelimit import member_redemption_limit_hit
from loyalty.api.strict import StrictBooleanField, StrictIntegerField, StrictQueryMixin, StrictSerializer
from loyalty.errors import DomainError


class RewardOut(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    cost = serializers.IntegerField()
    stock = serializers.IntegerField(allow_null=True)
    available = serializers.BooleanField()


def reward_output(reward: Reward, now) -> dict:
    """``stock`` of a pool reward is its free codes; ``available`` says whether it can be redeemed now."""
    return {"id": reward.code, "name": reward.name, "cost": reward.cost, "stock": reward_stock(reward),
            "available": reward_available(reward, now)}


class RedemptionOut(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=Redemption.Status.choices)
    points = serializers.IntegerField()
    reward = serializers.CharField(allow_null=True)
    quantity = serializers.IntegerField()
    voucher_code = serializers.CharField(allow_null=True)
    member_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    balance = schema.Balance()


def redemption_output(redemption: Redemption) -> dict:
    return {
        "id": redemption.public_id,
        "status": redemption.status,
        "points": redemption.points,
        "reward": redemption.reward.code if redemption.reward_id else None,
        "quantity": redemption.quantity,
        "voucher_code": redemption_voucher(redemption),
        "member_id": redemption.member.external_id,
        "created_at": serializers.DateTimeField().to_representation(redemption.created_at),
        "balance": getattr(redemption, "balance_after", None) or balance_read(redemption.member),
    }


class RewardListView(StrictQueryMixin, APIView):
    query_params_allowed = LIST_PARAMS

    @extend_schema(responses={200: schema.list_of(RewardOut), 400: schema.Error}, parameters=schema.LIST_PARAMETERS,
                   summary="The rewards catalog")
    def get(self, request):
        limit = page_limit(request)
        rewards = rewards_with_free_codes(request.user.program_id).order_by("id")
        rewards = after_id(request, rewards, "code")
        now = timezone.now()
        return Response(page(list(rewards[: limit + 1]), limit, lambda r: reward_output(r, now)))


def _redemption_get(request, redemption_id: str) -> Redemption:
    redemption = (Redemption.objects.select_related("reward", "member", "hold")
                  .filter(program_id=request.user.program_id, public_id=redemption_id).first())
    if redemption is None:
        raise services.NotFound(f"No redemption {redemption_id!r}.", param="id", code="redemption_not_found")
    return redemption


class RedemptionCreateView(IdempotentMixin, StrictQueryMixin, APIView):
    class InputSerializer(StrictSerializer):
        member_id = serializers.CharField(max_length=255)
        reward = serializers.CharField(max_length=64, required=False)
        quantity = StrictIntegerField(min_value=1, max_value=1000, required=False, default=1)
        points = StrictIntegerField(min_value=1, max_value=10**9, required=False)
        description = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
        capture = StrictBooleanField(required=False, default=True)

        class Meta:
            ref_name = "RedemptionCreate"

        # What validate() checks, for the schema: exactly one of reward and points, and quantity
        # only with a reward.
        openapi_extra = {"oneOf": [{"required": ["reward"], "not": {"required": ["points"]}},
                                   {"required": ["points"], "not": {"anyOf": [{"required": ["reward"]},
                                                                              {"required": ["quantity"]}]}}]}

        def validate(self, attrs):
            if ("reward" in attrs) == ("points" in attrs):
                raise serializers.ValidationError(
                    {"reward": [serializers.ErrorDetail("Give either reward or points.", code="invalid_redemption")]})
            if "points" in attrs and "quantity" in self.initial_data:
                raise serializers.ValidationError({"quantity": [serializers.ErrorDetail(
                    "quantity goes with reward; a redemption of points gives only points.",
                    code="invalid_redemption")]})
            return attrs

    @extend_schema(request=InputSerializer, parameters=[schema.IDEMPOTENCY_KEY],
                   responses={201: RedemptionOut, 400: schema.Error, 404: schema.Error, 409: schema.Error,
                              422: schema.Error, 429: schema.Error},
                   summary="Redeem a reward or points (captured, or held with capture=false)")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        program = request.user.program
        wait = member_redemption_limit_hit(program, values["member_id"])
        if wait is not None:
            raise Throttled(wait=wait, detail="Too many redemptions for this member; try again shortly.")
        # The member and the reward are found under the member's lock, by the statements that
        # lock and read them (404 for either, the member first).
        answered: list[Response] = []  # the answer, made and stored in the redemption's transaction

        def answer(outcome):
            response = (self.handle_exception(outcome) if isinstance(outcome, Exception)
                        else Response(redemption_output(outcome), status=status.HTTP_201_CREATED))
            answered.append(self.respond_in_transaction(request, response))

        try:
            services.redemption_create(
                program=program, member_external_id=values["member_id"], reward_code=values.get("reward"),
                quantity=values["quantity"], points=values.get("points"), description=values["description"],
                capture=values["capture"], key=self.operation_key(request) or f"api-redeem:{uuid.uuid4()}",
                before_commit=answer,
            )
        except DomainError:
            if not answered:  # refused after something was written: rolled back, answered as any error
                raise
        return answered[0]


class RedemptionDetailView(StrictQueryMixin, APIView):
    @extend_schema(responses={200: RedemptionOut, 404: schema.Error}, summary="A redemption")
    def get(self, request, redemption_id: str):
        return Response(redemption_output(_redemption_get(request, redemption_id)))


def _action_view(action, summary: str):
    class ActionView(IdempotentMixin, StrictQueryMixin, APIView):
        @extend_schema(request=None, parameters=[schema.IDEMPOTENCY_KEY], summary=summary,
                       responses={200: RedemptionOut, 404: schema.Error, 409: schema.Error})
        def post(self, request, redemption_id: str):
            if request.data:  # an unknown field, as a strict serializer says it
                name = sorted(request.data)[0] if isinstance(request.data, dict) else None
                raise ValidationError({name: [ErrorDetail("Unknown field: this endpoint takes no body.",
                                                          code="unknown_field")]} if name else
                                      [ErrorDetail("This endpoint takes no body.", code="unknown_field")])
            redemption = action(redemption=_redemption_get(request, redemption_id))
            return Response(redemption_output(redemption))

    ActionView.__name__ = f"Redemption{action.__name__.split('_')[-1].title()}View"
    return ActionView


RedemptionCaptureView = _action_view(services.redemption_capture, "Capture a held redemption")
RedemptionVoidView = _action_view(services.redemption_void, "Void a held redemption: its points come back")
RedemptionCancelView = _action_view(
    services.redemption_cancel, "Cancel a captured redemption: its points return to the lots they came from")

