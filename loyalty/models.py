"""Models of the shared API plumbing."""

from django.db import models

from accounts.models import Partner, Program


class IdempotencyRecord(models.Model):
    """A POST made with an ``Idempotency-Key``: its request hash and, once done, its response."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        DONE = "done"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    # A key belongs to the partner that sent it: two partners of one program may use the same key.
    # Null only for records made before keys were kept per partner (they are never matched again).
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="+", null=True,
                                db_constraint=False, db_index=False)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True)
    # The body's text as it was sent, a JSON string (``loyalty.api.idempotency``); records stored
    # before the text was kept hold the body as a JSON value.
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField()
    locked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "key"], name="idempotency_key_unique_per_partner"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return self.key
