"""Member pages: a member signs in, sees only their own points, and redeems rewards."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from campaigns.models import Reward
from campaigns.selectors import (
    member_redemptions,
    member_units_taken,
    redemption_voucher,
    reward_available,
    rewards_with_free_codes,
)
from campaigns.services import redemption_create
from ledger.models import Entry, Operation
from ledger.selectors import balance_read, member_entries
from loyalty.api.ratelimit import member_redemption_limit_hit
from loyalty.errors import DomainError

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
    shown = [reward for reward in rewards_with_free_codes(member.program_id).filter(is_active=True)
             .order_by("cost", "code") if reward.in_window(now)]
    limited = [reward.pk for reward in shown if reward.per_member_limit is not None]
    taken = member_units_taken(member.pk, now, limited) if limited else {}
    rewards = [
        {"reward": reward, "available": reward_available(reward, now),
         "needed": max(reward.cost - balance["available"], 0),
         "limit_reached": reward.per_member_limit is not None and taken.get(reward.pk, 0) >= reward.per_member_limit}
        for reward in shown
    ]
    redemptions = [{"redemption": redemption, "voucher": redemption_voucher(redemption)}
                   for redemption in member_redemptions(member.pk, REDEMPTIONS_SHOWN)]
    context = {
        "member": member,
        "active": member.status == member.Status.ACTIVE,
        "program": member.program,
        "balance": balance,
        "entries": entries,
        "older": older,
        "paged": request.GET.get("before") is not None,
        "rewards": rewards,
        "redemptions": redemptions,
        # One per page shown: the redemption's idempotency key, so that a form sent twice (a double
        # click, a resent POST) redeems once.
        "redeem_token": uuid.uuid4().hex,
    }
    return render(request, "accounts/my_points.html", context)


@login_required
@require_POST
def redeem(request):
    """Redeem one unit of a reward of the member's program, captured at once (its voucher code, if
    it has codes, is shown); the result, or why not, as a message on the points page."""
    member = getattr(request.user, "member", None)
    if member is None:
        return render(request, "accounts/no_membership.html", status=404)
    token = request.POST.get("token", "")
    code = request.POST.get("reward", "")
    code_field = Reward._meta.get_field("code")
    if not (len(token) == 32 and token.isascii() and token.isalnum()) or not 0 < len(code) <= code_field.max_length:
        messages.error(request, "That form is out of date: reload the page and try again.")
        return redirect("my-points")
    # One key per button of the page: the same button sent twice (a double click, a resent form) redeems
    # once and answers as the first time; another button of the same page is another redemption.
    key = f"web-redeem:{member.pk}:{token}:{code}"
    if (member.program.redemption_limit_per_minute  # a replay is not counted: looked up only when it would be
            and not Operation.objects.filter(program_id=member.program_id, key=key).exists()
            and member_redemption_limit_hit(member.program, member.external_id) is not None):
        messages.error(request, "Too many redemptions in a short time: try again in a minute.")
        return redirect("my-points")
    try:
        redemption = redemption_create(member=member, reward_code=code, key=key)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("my-points")
    name = redemption.reward.name if redemption.reward else code
    voucher = redemption_voucher(redemption)
    messages.success(request, f"You redeemed {name} for {redemption.points} {member.program.points_name}."
                     + (f" Your voucher code: {voucher}" if voucher else ""))
    return redirect("my-points")


def _history_page(member_id: int, before: str | None) -> tuple[list[Entry], int | None]:
    """A page of the member's entries, newest first, older than the entry ``before`` (one of
    theirs); and the id to ask for the next page with, None on the last page."""
    entries = member_entries(member_id, before)
    if entries is None:
        raise Http404("No such page of your history.")
    page = list(entries[: HISTORY_PAGE + 1])
    return page[:HISTORY_PAGE], (page[HISTORY_PAGE - 1].pk if len(page) > HISTORY_PAGE else None)
