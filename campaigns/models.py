"""Rewards catalog, voucher codes and redemptions."""

from __future__ import annotations

import datetime as dt
import secrets

from django.db import models
from django.db.models import Q

from accounts.models import Member, Program
from ledger.models import Hold, Operation


def new_redemption_id() -> str:
    return f"rdm_{secrets.token_hex(10)}"


class Reward(models.Model):
    class Vouchers(models.TextChoices):
        NONE = "none", "No voucher"
        GENERATED = "generated", "Generated codes (unique, unguessable)"
        POOL = "pool", "Uploaded pool (each code given out once)"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="rewards")
    code = models.SlugField(max_length=64, help_text="The reward's id in the API, e.g. `free-coffee`.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    cost = models.PositiveIntegerField(help_text="Points per unit.")
    stock = models.PositiveIntegerField(null=True, blank=True, help_text="Units left. Empty: unlimited.")
    per_member_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most units one member may hold or have redeemed. Empty: no limit."
    )
    is_active = models.BooleanField(default=True)
    active_from = models.DateTimeField(null=True, blank=True)
    active_until = models.DateTimeField(null=True, blank=True)
    vouchers = models.CharField(max_length=16, choices=Vouchers.choices, default=Vouchers.NONE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["program", "cost", "code"]
        constraints = [
            models.UniqueConstraint(fields=["program", "code"], name="reward_code_unique_per_program"),
            models.CheckConstraint(condition=Q(cost__gt=0), name="reward_cost_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def in_window(self, now: dt.datetime) -> bool:
        """Whether ``now`` falls in the reward's active window (either end may be open)."""
        return (self.active_from is None or self.active_from <= now) and (
            self.active_until is None or now < self.active_until)


class VoucherCode(models.Model):
    reward = models.ForeignKey(Reward, on_delete=models.CASCADE, related_name="codes")
    code = models.CharField(max_length=64)
    redemption = models.ForeignKey(
        "Redemption", null=True, blank=True, on_delete=models.PROTECT, related_name="voucher_codes"
    )
    given_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reward", "code"], name="voucher_code_unique_per_reward"),
        ]
        indexes = [models.Index(fields=["reward", "id"], name="voucher_free", condition=Q(redemption__isnull=True))]

    def __str__(self) -> str:
        return self.code


class Redemption(models.Model):
    class Status(models.TextChoices):
        HELD = "held"
        CAPTURED = "captured"
        VOIDED = "voided"
        CANCELLED = "cancelled"

    public_id = models.CharField(max_length=40, unique=True, default=new_redemption_id, editable=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="redemptions")
    reward = models.ForeignKey(Reward, null=True, blank=True, on_delete=models.PROTECT, related_name="redemptions")
    quantity = models.PositiveIntegerField(default=1)
    points = models.PositiveIntegerField()
    description = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    operation = models.OneToOneField(Operation, on_delete=models.PROTECT, related_name="redemption")
    hold = models.OneToOneField(Hold, null=True, blank=True, on_delete=models.PROTECT, related_name="redemption")
    # Its codes, comma-separated: one per unit (a quantity of up to 1,000, codes of up to 64 characters).
    voucher_code = models.TextField(blank=True)
    stock_returned = models.BooleanField(
        default=False, help_text="Its units went back to the reward's stock: voided, cancelled, or a hold past "
        "its timeout whose units (and pool codes) another redemption took back.",
    )
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["member", "reward", "status"], name="redemption_member_reward"),
            # Holds whose units a redemption may take back once they time out (campaigns.services).
            models.Index(fields=["reward"], name="redemption_held_units",
                         condition=Q(status="held", stock_returned=False)),
        ]

    def __str__(self) -> str:
        return self.public_id
