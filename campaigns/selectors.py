"""Reads of the rewards catalog shared by the partner API and the member pages."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q, QuerySet, Sum

from campaigns.models import Redemption, Reward


def rewards_with_free_codes(program_id: int) -> QuerySet[Reward]:
    """The program's rewards, each with ``free_codes``: its pool codes not given out yet."""
    return Reward.objects.filter(program_id=program_id).annotate(
        free_codes=Count("codes", filter=Q(codes__redemption__isnull=True)))


def reward_stock(reward: Reward) -> int | None:
    """Units left (None: unlimited); a pool reward's are its free codes (``rewards_with_free_codes``)."""
    return reward.free_codes if reward.vouchers == Reward.Vouchers.POOL else reward.stock


def reward_available(reward: Reward, now: dt.datetime) -> bool:
    """Whether the reward can be redeemed now: active, in its window and in stock."""
    stock = reward_stock(reward)
    return reward.is_active and reward.in_window(now) and (stock is None or stock > 0)


def redemption_voucher(redemption: Redemption) -> str | None:
    """The voucher code to show for a redemption: a held one's reserved code only once captured."""
    if redemption.status == Redemption.Status.HELD:
        return None
    return redemption.voucher_code or None


def member_redemptions(member_id: int, limit: int) -> list[Redemption]:
    """A member's latest redemptions, newest first, with their rewards."""
    return list(Redemption.objects.filter(member_id=member_id).select_related("reward")
                .order_by("-created_at", "-id")[:limit])


def member_units_taken(member_id: int, now: dt.datetime, reward_ids=None) -> dict[int, int]:
    """Units of each reward the member has taken, as a reward's per-member limit counts them: captured
    redemptions, and holds still in time (a hold past its timeout can no longer be captured, and no
    longer counts, before the beat job voids it). By reward id; ``reward_ids`` narrows the count."""
    taken = Redemption.objects.filter(member_id=member_id).filter(
        Q(status=Redemption.Status.CAPTURED) | Q(status=Redemption.Status.HELD, hold__expires_at__gt=now))
    if reward_ids is not None:
        taken = taken.filter(reward_id__in=reward_ids)
    return dict(taken.exclude(reward=None).values_list("reward_id").annotate(n=Sum("quantity")).order_by())
