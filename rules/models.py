"""Inbound events, custom event types and earning rules."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from accounts.models import Member, Partner, Program
from rules.trace import TraceField

BUILTIN_EVENT_TYPES = ("purchase", "refund", "signup")


class EventType(models.Model):
    """A custom event type of a program, with a JSON Schema for its ``properties``."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="event_types")
    name = models.SlugField(max_length=64, help_text="The event's `type`, e.g. `review_written`.")
    description = models.CharField(max_length=255, blank=True)
    schema = models.JSONField(
        default=dict, blank=True,
        help_text="JSON Schema (draft 2020-12) that `properties` must satisfy. Empty: any object.",
    )

    class Meta:
        ordering = ["program", "name"]
        constraints = [
            models.UniqueConstraint(fields=["program", "name"], name="event_type_unique_per_program"),
        ]

    def __str__(self) -> str:
        return self.name


class Rule(models.Model):
    class Kind(models.TextChoices):
        SPEND = "spend", "Spend: points per currency unit"
        PRODUCT = "product", "Product: points or multiplier per matching item"
        EVENT = "event", "Event: fixed points for an event type"
        MULTIPLIER = "multiplier", "Multiplier: scales what other rules award"

    class Stacking(models.TextChoices):
        CUMULATIVE = "cumulative", "Cumulative: adds to other rules"
        EXCLUSIVE = "exclusive", "Exclusive: the highest-priority exclusive rule that fires wins alone"

    class Rounding(models.TextChoices):
        DOWN = "down"
        NEAREST = "nearest"
        UP = "up"

    class CapPeriod(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        LIFETIME = "lifetime"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    event_type = models.CharField(
        max_length=64, blank=True, help_text="The event type this rule applies to. Empty: every type."
    )
    is_active = models.BooleanField(default=True)
    active_from = models.DateTimeField(null=True, blank=True)
    active_until = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(default=0, help_text="Higher runs first and wins among exclusive rules.")
    stacking = models.CharField(max_length=16, choices=Stacking.choices, default=Stacking.CUMULATIVE)
    condition = models.TextField(
        blank=True,
        help_text="CEL expression over `event`, `member`, `program` and `now`; the rule fires when it is true. "
        "Example: `event.properties.channel == 'pos' && member.tier == 'gold'`.",
    )
    points_expression = models.TextField(
        blank=True,
        help_text="Advanced: a CEL expression that computes the points (overrides the kind's own computation). "
        "Example: `int(event.properties.amount) * 2`.",
    )
    # spend and product
    points_per_unit = models.DecimalField(
        max_digits=12, decimal_places=4, default=1, help_text="Points per unit of currency spent."
    )
    rounding = models.CharField(max_length=8, choices=Rounding.choices, default=Rounding.DOWN)
    min_amount = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="Spend below this earns nothing."
    )
    # product
    skus = models.JSONField(default=list, blank=True, help_text='Matching SKUs, e.g. ["LATTE", "MOCHA"].')
    categories = models.JSONField(default=list, blank=True, help_text='Matching categories, e.g. ["coffee"].')
    points_per_item = models.PositiveIntegerField(
        null=True, blank=True, help_text="Points per matching unit. Empty: spend rate x item multiplier."
    )
    item_multiplier = models.DecimalField(
        max_digits=8, decimal_places=4, null=True, blank=True,
        help_text="For matching items without fixed points: points_per_unit x this x line amount.",
    )
    # event
    points = models.PositiveIntegerField(null=True, blank=True, help_text="Fixed points for an event rule.")
    # multiplier
    multiplier = models.DecimalField(
        max_digits=8, decimal_places=4, null=True, blank=True,
        help_text="2 doubles what the other rules awarded (adds 1x as this rule's award).",
    )
    # caps
    max_points_per_event = models.PositiveIntegerField(null=True, blank=True)
    member_cap_period = models.CharField(max_length=16, choices=CapPeriod.choices, blank=True)
    member_cap_points = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most points this rule gives one member per period."
    )
    member_cap_times = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most times this rule fires for one member per period (1 + lifetime: once)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["program", "-priority", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="multiplier", stacking="exclusive"), name="rule_multiplier_not_exclusive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RuleUsage(models.Model):
    """How much a rule gave one member in one cap period (``period`` is e.g. ``2026-11``)."""

    # No database foreign keys: they would lock the member's row and the rule's (the same row for
    # every batch) in every batch that counts a capped rule (see ledger.models.Operation). Django
    # deletes a rule's usage with the rule (CASCADE), through the rule's own index. Events read
    # their members' usage through the unique index, which starts with the member: started with
    # the rule, a read of 250 members' counters scanned the counters of every member of the rule.
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="usage", db_constraint=False)
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                               db_index=False)
    period = models.CharField(max_length=16)
    points = models.BigIntegerField(default=0)
    times = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "rule", "period"], name="rule_usage_unique_by_member"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id}/{self.member_id}/{self.period}"


class InboundEvent(models.Model):
    """Everything a partner sent, valid or not: the durable queue of the pipeline."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        REJECTED = "rejected"
        FAILED = "failed"

    # No database foreign keys (see ledger.models.Operation): each event's row would otherwise lock
    # its program's, partner's and member's rows (FOR KEY SHARE) at every commit that writes it,
    # and the program's and partner's are the same hot row for every batch. The pipeline writes
    # the references from rows it has just read; Django still applies on_delete.
    # No index of its own on program: event_id_unique_per_program and event_recent lead with it.
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                db_index=False)
    partner = models.ForeignKey(Partner, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                db_constraint=False)
    event_id = models.CharField(max_length=255, null=True, blank=True, help_text="Empty when the payload had none.")
    type = models.CharField(max_length=64, blank=True)
    member_external_id = models.CharField(max_length=255, blank=True)
    # No index on the member's id: nothing looks events up by it (members are never deleted); the
    # inbox looks them up by the external id the partner sent (event_member).
    member = models.ForeignKey(Member, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                               db_constraint=False, db_index=False)
    occurred_at = models.DateTimeField(null=True, blank=True)
    order_id = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(help_text="The event exactly as it was received.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.JSONField(null=True, blank=True)
    awards = models.JSONField(default=list, blank=True)
    trace = TraceField(default=list, blank=True)  # stored compact (rules.trace)
    points = models.IntegerField(default=0)
    # The member's balance as ``POST /api/v1/events`` answered it first: the text the API wrote (a
    # JSON string), so that the same event_id again answers the first result; null for batch events.
    balance_after = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["program", "event_id"], name="event_id_unique_per_program"),
        ]
        # No index may name ``status`` or a column the worker's update changes, not even in its
        # condition: marking an event processed then rewrites the row in place (a HOT update, with
        # the free space fillfactor leaves on its page, migration 0005) instead of adding an entry
        # to every index. Waiting events are found through EventBatch; the inbox's rare statuses
        # (rejected, failed: those with an error) through event_problem.
        indexes = [
            models.Index(fields=["program", "order_id"], name="event_order", condition=~Q(order_id="")),
            models.Index(fields=["program", "-received_at"], name="event_recent"),
            models.Index(fields=["program", "-received_at"], name="event_problem", condition=Q(error__isnull=False)),
            models.Index(fields=["program", "member_external_id"], name="event_member"),
        ]

    def __str__(self) -> str:
        return self.event_id or f"event #{self.pk}"


class EventBatch(models.Model):
    """The ids of the events a batch request stored as ``received``, written in the same
    transaction. The sweeper reads the batches older than its delay, re-enqueues their events
    still ``received`` (a lost message, a killed worker) and forgets a batch once none is: one
    row per batch instead of an index entry per event."""

    event_ids = ArrayField(models.BigIntegerField())
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="eventbatch_created")]

    def __str__(self) -> str:
        return f"batch #{self.pk} ({len(self.event_ids)} events)"
