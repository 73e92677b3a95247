"""Member pages: a member signs in and sees only their own points."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from ledger.models import Entry
from ledger.selectors import balance_read


@login_required
def my_points(request):
    member = getattr(request.user, "member", None)
    if member is None:
        return render(request, "accounts/no_membership.html", status=404)
    from campaigns.models import Reward

    context = {
        "member": member,
        "program": member.program,
        "balance": balance_read(member),
        "entries": Entry.objects.filter(member_id=member.pk).order_by("-created_at", "-id")[:25],
        "rewards": Reward.objects.filter(program_id=member.program_id, is_active=True).order_by("cost"),
    }
    return render(request, "accounts/my_points.html", context)
