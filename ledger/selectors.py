"""Reads of the ledger used by other apps (the API, member pages)."""

from __future__ import annotations

from accounts.models import Member
from ledger.models import Balance, Lot

EXPIRING_LIMIT = 100


def balance_read(member: Member) -> dict:
    """The API's balance: figures plus the open lots by expiry, soonest first."""
    balance = Balance.objects.filter(member_id=member.pk).first() or Balance(member_id=member.pk)
    lots = (
        Lot.objects.filter(member_id=member.pk, remaining__gt=0, expired_at__isnull=True, expires_at__isnull=False)
        .by_expiry().values_list("remaining", "expires_at")[:EXPIRING_LIMIT]
    )
    return {
        "available": balance.available,
        "pending": balance.pending,
        "held": balance.held,
        "lifetime_earned": balance.lifetime_earned,
        "lifetime_redeemed": balance.lifetime_redeemed,
        "lifetime_expired": balance.lifetime_expired,
        "expiring": [{"points": points, "expires_at": expires_at} for points, expires_at in lots],
    }
