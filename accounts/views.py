"""Member pages: a member signs in and sees only their own points."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from campaigns.selectors import (
    member_redemptions,
    redemption_voucher,
    reward_available,
    reward_in_window,
    rewards_with_free_codes,
)
from ledger.models import Entry
from ledger.selectors import balance_read, member_entries

HISTORY_PAGE = 25
REDEMPTIONS_SHOWN = 10


@login_required
def my_points(request):
    member = getattr(request.user, "member", None)
    if member is None:
        return render(request, "accounts/no_membership.html", status=404)
    now = timezone.now()
    balance = balance_read(member)
    entries, older = _history_page(member.pk, request.GET.get("before"))
    rewards = [
        {"reward": reward, "available": reward_available(reward, now),
         "needed": max(reward.cost - balance["available"], 0)}
        for reward in rewards_with_free_codes(member.program_id).filter(is_active=True).order_by("cost", "code")
        if reward_in_window(reward, now)
    ]
    redemptions = [{"redemption": redemption, "voucher": redemption_voucher(redemption)}
                   for redemption in member_redemptions(member.pk, REDEMPTIONS_SHOWN)]
    context = {
        "member": member,
        "program": member.program,
        "balance": balance,
        "entries": entries,
        "older": older,
        "paged": request.GET.get("before") is not None,
        "rewards": rewards,
        "redemptions": redemptions,
    }
    return render(request, "accounts/my_points.html", context)


def _history_page(member_id: int, before: str | None) -> tuple[list[Entry], int | None]:
    """A page of the member's entries, newest first, older than the entry ``before`` (one of
    theirs); and the id to ask for the next page with, None on the last page."""
    entries = member_entries(member_id, before)
    if entries is None:
        raise Http404("No such page of your history.")
    page = list(entries[: HISTORY_PAGE + 1])
    return page[:HISTORY_PAGE], (page[HISTORY_PAGE - 1].pk if len(page) > HISTORY_PAGE else None)
