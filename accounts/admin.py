"""Admin for programs, members and partners.

Writes that matter go through the services: a member added here is enrolled by
``member_create`` (so its balance row exists), points move only by ``points_adjust``,
a partner added here gets its first key from ``partner_create``. The ledger is shown
read-only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.forms.models import BaseInlineFormSet
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from accounts.models import Member, Partner, PartnerAPIKey, Program
from accounts.services import member_create, partner_create
from ledger import health
from ledger.models import Balance, Entry, Lot
from ledger.services import points_adjust
from loyalty.admin_lists import LargeListAdmin
from loyalty.errors import DomainError
from rules.selectors import events_by_status

# Keys here belong to a partner; the library's own partner-less APIKey would only confuse.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


PROGRAM_IDENTITY = ("name", "slug", "points_name")
HEALTH_DAYS = 30  # the program health page's earn and burn, day by day
# Every other editable field is policy, so a new policy field shows up without an edit here.
PROGRAM_POLICY = tuple(
    field.name for field in Program._meta.concrete_fields
    if field.editable and not field.primary_key and field.name not in PROGRAM_IDENTITY
)


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "points_name", "expiry_days", "pending_days", "allow_negative_balance",
                    "hold_timeout_minutes", "created_at")
    search_fields = ("name", "slug")
    fieldsets = (
        (None, {"fields": (*PROGRAM_IDENTITY, "rules_version", "created_at")}),
        ("Policy", {"fields": PROGRAM_POLICY}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The slug names the program to partners and commands: fixed once created.
        return ("rules_version", "created_at", "slug") if obj else ("rules_version", "created_at")

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else {"slug": ("name",)}

    def get_urls(self):
        health = path("<path:object_id>/health/", self.admin_site.admin_view(self.health_view),
                      name="accounts_program_health")
        return [health, *super().get_urls()]

    def health_view(self, request, object_id):
        """The program's health: liability, lifetime breakage and burn, earn and burn by day, and
        the events of the last 24 hours by status (``ledger.health``)."""
        program = self.get_object(request, unquote(object_id))
        if program is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, program):
            raise PermissionDenied
        now = timezone.now()
        liability, lifetime = health.program_liability_and_lifetime(program.pk, now)
        days = health.program_days(program.pk, now, days=HEALTH_DAYS)
        inbox = reverse("admin:rules_inboundevent_changelist")
        since = now - dt.timedelta(hours=24)
        # Each count links to the events it counts: the inbox's date filter takes the same bound.
        bound = urlencode({"received_at__gte": since.isoformat()})
        events = [{"status": status, "count": count,
                   "url": f"{inbox}?program__id__exact={program.pk}&status__exact={status}&{bound}"}
                  for status, count in events_by_status(program.pk, since).items()]
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": program,
            "title": f"Health: {program}", "now": now, "liability": liability, "lifetime": lifetime,
            "days": days, "period": {field: sum(getattr(day, field) for day in days)
                                     for field in ("earned", "redeemed", "expired", "reversed", "adjusted")},
            "events": events,
        }
        return TemplateResponse(request, "admin/accounts/program/health.html", context)


# --- Member ----------------------------------------------------------------------------------


class ViewOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LatestFormSet(BaseInlineFormSet):
    """Only the first ``limit`` rows of the (ordered) inline queryset."""

    limit = 50

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[: self.limit]
        return self._latest


class BalanceInline(ViewOnlyInline):
    model = Balance
    fields = ("available", "pending", "held", "debt", "lifetime_earned", "lifetime_redeemed", "lifetime_expired")
    show_change_link = False


class LotInline(ViewOnlyInline):
    model = Lot
    formset = LatestFormSet
    verbose_name_plural = f"lots (latest {LatestFormSet.limit})"
    fields = ("created_at", "remaining", "points", "available_at", "matured", "expires_at", "expired_at")
    ordering = ("-created_at", "-id")


class EntryInline(ViewOnlyInline):
    model = Entry
    formset = LatestFormSet
    verbose_name_plural = f"ledger entries (latest {LatestFormSet.limit})"
    fields = ("created_at", "kind", "points", "description", "source")
    ordering = ("-created_at", "-id")  # the ledger_entry_member_created index

    @admin.display(description="source")
    def source(self, entry: Entry) -> str:
        return f"{entry.source_type}: {entry.source_id}" if entry.source_type else ""


def _balance_figure(name: str):
    @admin.display(description=name, ordering=f"balance__{name}")
    def figure(model_admin, member: Member):
        try:
            return getattr(member.balance, name)
        except Balance.DoesNotExist:
            return None

    return figure


@admin.register(Member)
class MemberAdmin(LargeListAdmin):
    list_display = ("external_id", "program", "email", "status", "tier", "available", "pending", "held", "enrolled_at")
    list_filter = ("program", "status")
    list_select_related = ("program", "balance")
    search_fields = ("external_id", "email")
    autocomplete_fields = ("user",)
    inlines = (BalanceInline, LotInline, EntryInline)

    available = _balance_figure("available")
    pending = _balance_figure("pending")
    held = _balance_figure("held")

    def get_fields(self, request, obj=None):
        if obj is None:  # a new member starts active, enrolled now
            return ("program", "external_id", "email", "attributes", "user")
        return ("program", "external_id", "email", "attributes", "status", "tier", "user", "enrolled_at")

    def get_readonly_fields(self, request, obj=None):
        return ("program", "external_id", "tier", "enrolled_at") if obj else ()

    def get_inlines(self, request, obj):
        return self.inlines if obj else ()

    def has_delete_permission(self, request, obj=None):
        return False  # members keep their ledger; close them instead

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        member = member_create(program=obj.program, external_id=obj.external_id, email=obj.email,
                               attributes=obj.attributes, user=obj.user)
        obj.pk, obj.status, obj.enrolled_at = member.pk, member.status, member.enrolled_at
        obj._state.adding, obj._state.db = False, member._state.db

    def get_urls(self):
        adjust = path("<path:object_id>/adjust/", self.admin_site.admin_view(self.adjust_view),
                      name="accounts_member_adjust")
        return [adjust, *super().get_urls()]

    def adjust_view(self, request, object_id):
        member = self.get_object(request, unquote(object_id))
        if member is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, member):
            raise PermissionDenied
        form = AdjustPointsForm(request.POST or None)
        if form.is_valid():
            done = self._adjust(request, member, **form.cleaned_data)
            if done:
                return redirect(reverse("admin:accounts_member_change", args=[member.pk]))
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": member, "form": form,
            "title": f"Adjust points: {member}", "balance": Balance.objects.filter(member=member).first(),
        }
        return TemplateResponse(request, "admin/accounts/member/adjust_points.html", context)

    def _adjust(self, request, member: Member, *, points: int, reason: str, key: str) -> bool:
        try:
            operation = points_adjust(member=member, points=points, key=key, reason=reason)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        if operation.replayed:
            self.message_user(request, "This adjustment was already made; nothing changed.", messages.WARNING)
        else:
            self.log_change(request, member, f"Adjusted points by {points:+d}: {reason}")
            self.message_user(request, f"Adjusted {member} by {points:+d} points.", messages.SUCCESS)
        return True


class AdjustPointsForm(forms.Form):
    points = forms.IntegerField(min_value=-(10**9), max_value=10**9,
                                help_text="Positive to credit, negative to debit. A debit cannot overdraw.")
    reason = forms.CharField(max_length=255, help_text="Recorded on the ledger entry, where the member sees it.")
    # Made when the form is shown, so a form sent twice adjusts once.
    key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].initial = f"admin-adjust:{uuid.uuid4()}"

    def clean_points(self) -> int:
        if self.cleaned_data["points"] == 0:
            raise forms.ValidationError("Zero changes nothing.")
        return self.cleaned_data["points"]

    def clean_key(self) -> str:
        prefix, _, rest = self.cleaned_data["key"].partition(":")
        try:
            uuid.UUID(rest)
        except ValueError:
            prefix = ""
        if prefix != "admin-adjust":
            raise forms.ValidationError("The form is broken; reload the page.")
        return self.cleaned_data["key"]


# --- Partners and their keys ------------------------------------------------------------------


class PartnerAPIKeyInline(ViewOnlyInline):
    model = PartnerAPIKey
    fields = ("prefix", "name", "created", "expiry_date", "revoked", "last_used_at")


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "program", "is_active", "created_at")
    list_filter = ("program", "is_active")
    list_select_related = ("program",)
    search_fields = ("name",)
    inlines = (PartnerAPIKeyInline,)

    def get_fields(self, request, obj=None):
        return ("program", "name", "is_active", "created_at") if obj else ("program", "name")

    def get_readonly_fields(self, request, obj=None):
        return ("program", "created_at") if obj else ()

    def get_inlines(self, request, obj):
        return self.inlines if obj else ()

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        partner, key = partner_create(program=obj.program, name=obj.name)
        obj.pk, obj.is_active, obj.created_at = partner.pk, partner.is_active, partner.created_at
        obj._state.adding, obj._state.db = False, partner._state.db
        self.message_user(request, f"The API key of {partner.name} is: {key} . Store it now: it will not be "
                                   "shown again.", messages.WARNING)


@admin.register(PartnerAPIKey)
class PartnerAPIKeyAdmin(APIKeyModelAdmin):
    list_display = ("prefix", "name", "partner", "created", "expiry_date", "_has_expired", "revoked", "last_used_at")
    list_filter = ("partner__program", "revoked", "created")
    list_select_related = ("partner__program",)
    search_fields = ("prefix", "name", "partner__name")
    autocomplete_fields = ("partner",)
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("partner", "name", "expiry_date")
        return ("partner", "name", "expiry_date", "revoked", "prefix", "created", "last_used_at")

    def get_readonly_fields(self, request, obj=None):
        fields = (*super().get_readonly_fields(request, obj), "created", "last_used_at")
        return (*fields, "partner") if obj else fields

    @admin.action(description="Revoke the selected keys (cannot be undone)", permissions=["change"])
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked=False))
        for key in keys:
            key.revoked = True
            key.save(update_fields=["revoked"])  # saved one by one: post_save tells the API's key cache
            self.log_change(request, key, "Revoked")
        self.message_user(request, f"{len(keys)} key(s) revoked.", messages.SUCCESS)
