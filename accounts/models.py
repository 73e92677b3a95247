"""The tenant (Program), its members and its partners."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import connections, models
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from loyalty.jsontext import MESSAGES, unstorable

# A hundred years: an expiry or pending date past year 9999 cannot be stored, and would make every
# earn of the program fail. "Never" is an empty expiry.
MAX_POLICY_DAYS = 36_500


def attributes_valid(value) -> None:
    """A member's attributes as the partner API takes them (API.md): a JSON object PostgreSQL can store.
    Rules read them as ``member.attributes.<name>``: anything else would fail every such rule."""
    if not isinstance(value, dict):
        raise ValidationError("Attributes are a JSON object: {\"name\": value, ...}.", code="not_an_object")
    reason = unstorable(value)
    if reason:
        raise ValidationError(MESSAGES[reason], code=reason)


class Program(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    points_name = models.CharField(
        max_length=40, default="points", help_text="What points are called in this program."
    )
    expiry_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=365,
        validators=[MaxValueValidator(MAX_POLICY_DAYS)],
        help_text=f"Points expire this many days after they are earned (at most {MAX_POLICY_DAYS:,}). Empty: never.",
    )
    pending_days = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(MAX_POLICY_DAYS)],
        help_text=f"Earned points stay pending this many days before they can be spent (at most {MAX_POLICY_DAYS:,}).",
    )
    allow_negative_balance = models.BooleanField(
        default=False,
        help_text="Reversals (refunds of points already spent) may push a balance below zero.",
    )
    hold_timeout_minutes = models.PositiveIntegerField(
        default=30, help_text="A hold not captured within this time is voided."
    )
    redemption_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Most redemptions one member may make per minute (say 5 during a seasonal peak). Empty: off.",
    )
    enroll_on_first_event = models.BooleanField(
        default=False, help_text="An event for an unknown member enrolls them instead of being refused."
    )
    event_max_age_days = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Events that happened longer ago than this many days (by their occurred_at) are rejected, "
                  "event_too_old, and kept: a late event cannot earn in a period already closed, nor use a "
                  "past day's caps. Empty: any age (to import history, say).",
    )
    event_retention_days = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Processed and rejected events are deleted this many days after they were received (nightly; "
                  "failed ones and those still waiting are kept). Past that, the same event id sent again is "
                  "processed as a new event, and a refund of a purchase deleted by then is rejected as unknown: "
                  "keep events longer than partners may resend them and than refunds are accepted. "
                  "Empty: kept for ever.",
    )
    rules_version = models.PositiveIntegerField(
        default=0, editable=False, help_text="Bumped by every change to the earning rules; caches follow it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expiry_days__isnull=True) | models.Q(expiry_days__gt=0),
                name="program_expiry_days_positive",
            ),
            models.CheckConstraint(
                condition=(models.Q(expiry_days__isnull=True) | models.Q(expiry_days__lte=MAX_POLICY_DAYS))
                & models.Q(pending_days__lte=MAX_POLICY_DAYS),
                name="program_policy_days_within_a_century",
            ),
            models.CheckConstraint(
                condition=models.Q(event_max_age_days__isnull=True) | models.Q(event_max_age_days__gt=0),
                name="program_event_max_age_days_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(event_retention_days__isnull=True) | models.Q(event_retention_days__gt=0),
                name="program_event_retention_days_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MemberManager(models.Manager):
    def by_external_id(self, program_id: int, external_id: str) -> Member | None:
        """The program's member with this external id, or None: a prepared statement with
        nothing to compile, for the partner API looks a member up on nearly every request."""
        from loyalty.db import prepared_get

        return prepared_get(self.model, "program_id = %s::bigint AND external_id = %s::text", [program_id, external_id])

    def ids_by_external_id(self, program_id: int, external_ids: Iterable[str]) -> dict[str, int]:
        """``{external id: member id}`` for those of ``external_ids`` that are the program's
        members: one array parameter, where an ``__in`` lookup costs the ORM more than the
        query for a batch of a thousand."""
        with connections[self.db].cursor() as cursor:
            cursor.execute(
                f"SELECT external_id, id FROM {self.model._meta.db_table} "
                "WHERE program_id = %s AND external_id = ANY(%s::text[])",
                [program_id, list(external_ids)],
            )
            return dict(cursor.fetchall())


class Member(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"
        CLOSED = "closed"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="members")
    external_id = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    attributes = models.JSONField(default=dict, blank=True, validators=[attributes_valid])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    tier = models.CharField(max_length=64, blank=True)
    enrolled_at = models.DateTimeField()
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="member",
        help_text="The login that sees this member's pages.",
    )

    objects = MemberManager()

    class Meta:
        ordering = ["program", "external_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["program", "external_id"], name="member_external_id_unique_per_program"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.program.slug})"


class Partner(models.Model):
    # An authenticated API principal (request.user in the partner API).
    is_authenticated = True

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="partners")
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["program", "name"]
        constraints = [
            models.UniqueConstraint(fields=["program", "name"], name="partner_name_unique_per_program"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.program.slug})"


class PartnerAPIKeyManager(APIKeyManager):
    def get_usable_keys(self):
        return super().get_usable_keys().select_related("partner__program")

    def _joined(self) -> tuple:
        return (self.model, Partner, Program)

    def row_by_prefix(self, prefix: str) -> tuple | None:
        """The key with this prefix (revoked or not) with its partner's and program's columns:
        what ``select_related`` reads, in one query with nothing to compile, for it runs on
        every API request. ``from_row`` makes the instances."""
        if not hasattr(self, "_by_prefix_sql"):
            columns = ", ".join(f"{alias}.{field.column}" for model, alias in zip(self._joined(), "kpr", strict=True)
                                for field in model._meta.concrete_fields)
            self._by_prefix_sql = (
                f"SELECT {columns} FROM {self.model._meta.db_table} k "
                f"JOIN {Partner._meta.db_table} p ON p.id = k.partner_id "
                f"JOIN {Program._meta.db_table} r ON r.id = p.program_id WHERE k.prefix = %s"
            )
        with connections[self.db].cursor() as cursor:
            cursor.execute(self._by_prefix_sql, [prefix])
            return cursor.fetchone()

    def from_row(self, row: tuple) -> PartnerAPIKey:
        """New instances of the key, its partner and its program (attached) from ``row_by_prefix``."""
        instances, start = [], 0
        for model in self._joined():
            fields = model._meta.concrete_fields
            instances.append(model.from_db(self.db, [f.attname for f in fields], row[start:start + len(fields)]))
            start += len(fields)
        key, partner, program = instances
        partner.program, key.partner = program, partner
        return key


class PartnerAPIKey(AbstractAPIKey):
    """A partner's API key: only a prefix and a hash are stored; the key is shown once."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = PartnerAPIKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "partner API key"
        verbose_name_plural = "partner API keys"
