"""The points ledger.

* ``Operation``: one call of a ledger service, unique per (program, key). It is the
  idempotency record and lives in an unpartitioned table so the constraint can hold.
* ``Entry``: the immutable journal, range-partitioned by month on ``created_at``
  (the table is created by SQL in the migration; UPDATE and DELETE are refused by a trigger).
* ``Lot``: points earned together; ``remaining`` is what is neither spent, held nor expired.
* ``Balance``: one row per member; its row lock is the member's lock for every movement.
* ``Hold`` and ``Allocation``: which lots a hold or redemption took its points from, so
  a void or a cancel gives them back to the same lots.

Bookkeeping: the sum of a member's entries equals ``available + pending``; a ``hold`` entry
moves points out of ``available`` into ``held`` (so ``held`` is the sum of open holds),
capturing a hold writes no entry, voiding it writes a ``release``.
"""

from __future__ import annotations

import pgtrigger
from django.db import models
from django.db.models import Q

from accounts.models import Member, Program


class EntryKind(models.TextChoices):
    EARN = "earn"
    REDEEM = "redeem"
    EXPIRE = "expire"
    REVERSE = "reverse"
    ADJUST = "adjust"
    HOLD = "hold"
    RELEASE = "release"


class Operation(models.Model):
    # The rows every earn writes (operations, lots, entries) refer to members and programs
    # without a database foreign key: each such check locks the member's row (FOR KEY SHARE: a
    # WAL record, often a full-page image, per member per transaction), and with the program's
    # row one hot row for every transaction. They cost a batch earn a third of its time and a
    # batch of events a fifth. The services write the references in the statement that writes
    # the row, members and programs are never deleted (PROTECT still refuses it in Django), and
    # ``ledger_audit`` checks every reference nightly (``ledger.audit``: *_references).
    # Indexed by operation_key_unique_per_program and operation_member_created, not on their own.
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                db_index=False)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="operations", db_constraint=False,
                               db_index=False)
    key = models.CharField(max_length=255)
    kind = models.CharField(max_length=16)
    request_hash = models.CharField(max_length=64)
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["program", "key"], name="operation_key_unique_per_program"),
        ]
        indexes = [models.Index(fields=["member", "created_at"], name="operation_member_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


class LotQuerySet(models.QuerySet):
    def open_for(self, member: Member) -> LotQuerySet:
        return self.filter(member=member, remaining__gt=0)

    def spendable(self) -> LotQuerySet:
        return self.filter(matured=True, remaining__gt=0, expired_at__isnull=True)

    def by_expiry(self) -> LotQuerySet:
        return self.order_by(models.F("expires_at").asc(nulls_last=True), "id")


class Lot(models.Model):
    # program and member are those of the operation, copied for queries and for sharding by
    # member; no database foreign keys (see Operation), not even to the operation, written in
    # the same statement or transaction: its check, a plan each connection keeps, went on
    # scanning the whole table in a connection that had planned it while the table was small.
    # No index of its own on program: a handful of values, and every earn would pay for it.
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                db_index=False)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="lots", db_constraint=False)
    operation = models.ForeignKey(Operation, on_delete=models.PROTECT, related_name="lots", db_constraint=False)
    points = models.PositiveIntegerField()
    remaining = models.IntegerField()
    available_at = models.DateTimeField()
    matured = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    source_type = models.CharField(max_length=32, blank=True)
    source_id = models.CharField(max_length=255, blank=True)

    objects = LotQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("points")),
                name="lot_remaining_within_points",
            ),
            models.CheckConstraint(condition=Q(points__gt=0), name="lot_points_positive"),
        ]
        indexes = [
            models.Index(
                fields=["member", "expires_at", "id"],
                name="lot_member_spend_order",
                condition=Q(remaining__gt=0),
            ),
            models.Index(
                fields=["expires_at"],
                name="lot_expiry_due",
                condition=Q(remaining__gt=0, expired_at__isnull=True),
            ),
            models.Index(fields=["available_at"], name="lot_maturing_due", condition=Q(matured=False)),
        ]

    def __str__(self) -> str:
        return f"lot {self.pk}: {self.remaining}/{self.points}"


class Balance(models.Model):
    member = models.OneToOneField(Member, on_delete=models.PROTECT, primary_key=True, related_name="balance")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    available = models.IntegerField(default=0)
    pending = models.IntegerField(default=0)
    held = models.IntegerField(default=0)
    debt = models.IntegerField(
        default=0,
        help_text="Points reversed after they were spent, settled from the next points the member gets "
                  "(earned, credited or given back).",
    )
    lifetime_earned = models.BigIntegerField(default=0)
    lifetime_redeemed = models.BigIntegerField(default=0)
    lifetime_expired = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(pending__gte=0) & Q(held__gte=0) & Q(debt__gte=0),
                name="balance_parts_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.available}"


class Entry(models.Model):
    # In the database the primary key is (id, created_at), as partitioning requires;
    # ids come from one identity sequence, so ``id`` alone is unique.
    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    # No database foreign keys (see Operation): entries are written by the ledger services only,
    # next to their lot or operation, and the audit checks every reference.
    program = models.ForeignKey(Program, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    member = models.ForeignKey(Member, on_delete=models.DO_NOTHING, related_name="entries", db_constraint=False)
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    points = models.IntegerField()
    lot = models.ForeignKey(Lot, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="entries",
                            db_constraint=False, db_index=False)  # nothing looks entries up by lot
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="entries", db_constraint=False
    )
    description = models.CharField(max_length=255, blank=True)
    source_type = models.CharField(max_length=32, blank=True)
    source_id = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name_plural = "entries"
        triggers = [
            pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+d}"


class Hold(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CAPTURED = "captured"
        VOIDED = "voided"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="holds")
    operation = models.OneToOneField(Operation, on_delete=models.PROTECT, related_name="hold")
    points = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    description = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], name="hold_open_due", condition=Q(status="open")),
        ]

    def __str__(self) -> str:
        return f"hold {self.pk}: {self.points} ({self.status})"


class Allocation(models.Model):
    """Points a redemption or a hold took from one lot, and how many were given back.

    ``claimed``: of these points, how many a reversal that could not collect them claimed
    (``ledger.services.points_reverse``): when they are given back they pay that reversal
    instead of going back to the lot.
    """

    operation = models.ForeignKey(Operation, on_delete=models.PROTECT, related_name="allocations")
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="allocations")
    points = models.PositiveIntegerField()
    returned = models.PositiveIntegerField(default=0)
    claimed = models.PositiveIntegerField(db_default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(returned__lte=models.F("points")), name="allocation_returned_le_points"),
            models.CheckConstraint(condition=Q(claimed__lte=models.F("points")), name="allocation_claimed_le_points"),
        ]

    def __str__(self) -> str:
        return f"{self.points} from lot {self.lot_id}"
