"""Partner API: members."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Member
from accounts.services import MemberNotFound, member_create, member_update
from ledger.selectors import balance_output, balance_read, expiring_by_member, members_settle_due
from loyalty.api import schema
from loyalty.api.idempotency import IdempotentMixin
from loyalty.api.pagination import LIST_PARAMS, after_id, page, page_limit
from loyalty.api.strict import STORABLE_JSON_HELP, StrictQueryMixin, StrictSerializer, storable_json

WS = schema.WHITESPACE  # Python's \s, spelled so that the schema's (ECMA) regex means the same
# A member's external id: what /members/{external_id} can name (no '/', no white space).
EXTERNAL_ID = rf"^[^/{WS}]{{1,255}}\Z"


def EmailField(**kwargs) -> serializers.RegexField:  # noqa: N802 - a field factory
    """Lenient on purpose (``a@b.c`` is accepted): partners' systems hold all sorts of addresses."""
    return serializers.RegexField(rf"^[^@{WS}]+@[^@{WS}]+\.[^@{WS}]+\Z", **kwargs)


def member_get(request, external_id: str) -> Member:
    """A member of the caller's program; any other is 404, exactly as if it did not exist."""
    member = Member.objects.by_external_id(request.user.program_id, external_id)
    if member is None:
        raise MemberNotFound(f"No member {external_id!r}.", param="member_id")
    return member


def member_output(member: Member, *, balance: dict | None = None) -> dict:
    return {
        "external_id": member.external_id,
        "email": member.email,
        "attributes": member.attributes,
        "tier": member.tier or None,
        "status": member.status,
        "enrolled_at": serializers.DateTimeField().to_representation(member.enrolled_at),
        "balance": balance if balance is not None else balance_read(member),
    }


class MemberOut(serializers.Serializer):
    external_id = serializers.CharField()
    email = serializers.CharField(allow_blank=True)  # as given: the input check is lenient
    attributes = serializers.DictField()
    tier = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=Member.Status.choices)
    enrolled_at = serializers.DateTimeField()
    balance = schema.Balance()


class MemberListView(IdempotentMixin, StrictQueryMixin, APIView):
    class InputSerializer(StrictSerializer):
        external_id = serializers.RegexField(EXTERNAL_ID, max_length=255)
        email = EmailField(required=False, allow_blank=True, max_length=254)
        attributes = serializers.DictField(required=False, validators=[storable_json], help_text=STORABLE_JSON_HELP)

        class Meta:
            ref_name = "MemberCreate"

    @property
    def query_params_allowed(self):
        # Only POST refuses the list parameters: another method is answered 405, not 400.
        return frozenset() if self.request.method == "POST" else LIST_PARAMS

    @extend_schema(
        request=InputSerializer, responses={201: MemberOut, 400: schema.Error, 409: schema.Error},
        parameters=[schema.IDEMPOTENCY_KEY], summary="Enroll a member",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member = member_create(program=request.user.program, **data.validated_data)
        return Response(member_output(member), status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={200: schema.list_of(MemberOut), 400: schema.Error},
        parameters=schema.LIST_PARAMETERS, summary="List members, oldest first", operation_id="members_list",
    )
    def get(self, request):
        limit = page_limit(request)
        members = Member.objects.filter(program_id=request.user.program_id).order_by("id")
        members = after_id(request, members, "external_id")
        rows = list(members.select_related("balance")[: limit + 1])
        settled = members_settle_due([m.pk for m in rows[:limit]])
        if settled:
            rows = [members.select_related("balance").get(pk=m.pk) if m.pk in settled else m for m in rows]
        expiring = expiring_by_member([m.pk for m in rows[:limit]])
        return Response(page(rows, limit, lambda m: member_output(
            m, balance=balance_output(getattr(m, "balance", None), expiring[m.pk]))))


class MemberDetailView(IdempotentMixin, StrictQueryMixin, APIView):
    class UpdateSerializer(StrictSerializer):
        email = EmailField(required=False, allow_blank=True, max_length=254)
        attributes = serializers.DictField(required=False, validators=[storable_json], help_text=STORABLE_JSON_HELP)

        class Meta:
            ref_name = "MemberUpdate"

    @extend_schema(responses={200: MemberOut, 404: schema.Error}, summary="A member")
    def get(self, request, external_id: str):
        return Response(member_output(member_get(request, external_id)))

    @extend_schema(request=UpdateSerializer, responses={200: MemberOut, 400: schema.Error, 404: schema.Error},
                   summary="Update a member's email and attributes")
    def patch(self, request, external_id: str):
        member = member_get(request, external_id)
        data = self.UpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member = member_update(member=member, **data.validated_data)
        return Response(member_output(member))
