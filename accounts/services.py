"""Writes for programs, members and partners."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Member, Partner, PartnerAPIKey, Program
from loyalty.errors import Conflict, DomainError, NotFound


class MemberExists(Conflict):
    code = "member_exists"


class MemberNotFound(NotFound):
    code = "member_not_found"


class MemberInactive(DomainError):
    """A suspended or closed member neither earns nor redeems (refunds, adjustments and what was
    redeemed before, captures, voids and cancellations, still go through)."""

    code = "member_inactive"


def member_inactive_message(member: Member) -> str:
    return f"Member {member.external_id!r} is {member.status}: it neither earns nor redeems points."


def member_create(
    *, program: Program, external_id: str, email: str = "", attributes: dict | None = None,
    enrolled_at: dt.datetime | None = None, user=None,
) -> Member:
    """Enroll a member; the balance row (the member's lock for every movement) comes with it."""
    from ledger.models import Balance

    try:
        with transaction.atomic():
            member = Member.objects.create(
                program=program, external_id=external_id, email=email, attributes=attributes or {},
                enrolled_at=enrolled_at or timezone.now(), user=user,
            )
            Balance.objects.create(member=member, program=program)
    except IntegrityError as exc:
        if Member.objects.filter(program=program, external_id=external_id).exists():
            raise MemberExists(f"A member with external_id {external_id!r} already exists.",
                               param="external_id") from exc
        raise
    return member


def partner_key_create(*, partner: Partner, name: str = "") -> tuple[PartnerAPIKey, str]:
    """A new API key for ``partner``. The key itself is returned once and never stored."""
    max_length = PartnerAPIKey._meta.get_field("name").max_length
    return PartnerAPIKey.objects.create_key(partner=partner, name=(name or f"{partner.name} key")[:max_length])


def partner_create(*, program: Program, name: str) -> tuple[Partner, str]:
    with transaction.atomic():
        partner = Partner.objects.create(program=program, name=name)
        _api_key, key = partner_key_create(partner=partner)
    return partner, key


def member_update(*, member: Member, email: str | None = None, attributes: dict | None = None) -> Member:
    fields = []
    if email is not None:
        member.email, fields = email, [*fields, "email"]
    if attributes is not None:
        member.attributes, fields = attributes, [*fields, "attributes"]
    if fields:
        member.save(update_fields=fields)
    return member
