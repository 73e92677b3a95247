"""Reads of the ledger used by other apps (the API, member pages)."""

from __future__ import annotations

from accounts.models import Member
from ledger.models import Balance, Lot

EXPIRING_LIMIT = 100


def expiring_by_member(member_ids: list[int]) -> dict[int, list[dict]]:
    """Each member's open lots that expire, soonest first (at most EXPIRING_LIMIT each)."""
    expiring: dict[int, list[dict]] = {member_id: [] for member_id in member_ids}
    lots = (
        Lot.objects.filter(member_id__in=member_ids, remaining__gt=0, expired_at__isnull=True, expires_at__isnull=False)
        .by_expiry().values_list("member_id", "remaining", "expires_at")
    )
    for member_id, remaining, expires_at in lots:
        if len(expiring[member_id]) < EXPIRING_LIMIT:
            expiring[member_id].append({"points": remaining, "expires_at": expires_at})
    return expiring


def balance_output(balance: Balance | None, expiring: list[dict]) -> dict:
    figures = ("available", "pending", "held", "lifetime_earned", "lifetime_redeemed", "lifetime_expired")
    return {**{name: getattr(balance, name, 0) for name in figures}, "expiring": expiring}


def balance_read(member: Member) -> dict:
    """The API's balance: figures plus the open lots by expiry, soonest first."""
    balance = Balance.objects.filter(member_id=member.pk).first()
    return balance_output(balance, expiring_by_member([member.pk])[member.pk])
