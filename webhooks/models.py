"""Webhook endpoints, the outbox of events, and one delivery row per (event, endpoint).

* ``WebhookEndpoint``: where a program's events go, signed with the endpoint's secret.
* ``WebhookEvent``: the outbox. Written in the same transaction as its cause; its public id
  is stable, so receivers deduplicate by it (delivery is at least once).
* ``WebhookDelivery``: the state of one event's delivery to one endpoint, and the delivery log.
"""

from __future__ import annotations

import json
import secrets

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from accounts.models import Partner, Program

WEBHOOK_EVENT_TYPES = ("points.earned", "points.expiring", "points.expired", "reward.redeemed", "redemption.voided")


def new_endpoint_id() -> str:
    return f"we_{secrets.token_hex(12)}"


def new_endpoint_secret() -> str:
    return f"whsec_{secrets.token_hex(24)}"


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


class WebhookEndpoint(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=new_endpoint_id, editable=False)
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="webhook_endpoints")
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_endpoints",
        help_text="The partner that registered it through the API; empty when added in the admin.",
    )
    url = models.URLField(max_length=2048)
    event_types = models.JSONField(
        default=list, blank=True, help_text="The event types sent to this endpoint. Empty: all of them."
    )
    secret = models.CharField(max_length=64, default=new_endpoint_secret, editable=False)
    is_active = models.BooleanField(default=True, help_text="Inactive endpoints get no new events.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookEvent(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=new_event_id, editable=False)
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=64, choices=[(t, t) for t in WEBHOOK_EVENT_TYPES])
    data = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "webhook event"
        indexes = [models.Index(fields=["created_at"], name="webhook_event_created")]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"

    def body(self) -> bytes:
        """What is POSTed: canonical JSON (sorted keys, no spaces), so every attempt sends
        the same bytes as long as the row is the same."""
        document = {"id": self.public_id, "type": self.type, "created": int(self.created_at.timestamp()),
                    "data": self.data}
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          cls=DjangoJSONEncoder).encode()


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    # No index of their own: the unique (event, endpoint) and the (endpoint, -id) indexes below start
    # with them.
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        help_text="When a worker may next take it; while a worker sends it, the end of that worker's lease."
    )
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once_per_endpoint"),
            models.CheckConstraint(condition=Q(status__in=["pending", "succeeded", "failed"]),
                                   name="webhook_delivery_status_valid"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=Q(status="pending")),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk}: {self.status}"
