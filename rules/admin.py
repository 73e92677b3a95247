
"""Admin for earning rules, custom event types and the events inbox.

Rules and event types are saved and deleted through ``rules.services`` (which validate the
CEL and bump the program's ``rules_version``, so every process sees the change). "Try it"
runs the engine over the saved rules and posts nothing. The inbox is read-only; its one
write, "reprocess", goes through the pipeline.
"""

from __future__ import annotations

import json
import logging

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models.expressions import RawSQL
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from loyalty.admin_lists import LargeListAdmin
from rules.forms import EventTypeForm, RuleForm, TryItForm, example_event
from rules.models import EventType, InboundEvent, Rule
from rules.pipeline import event_reprocess
from rules.services import event_type_delete, event_type_save, rule_delete, rule_save
from rules.validation import BUILTIN_SCHEMAS

logger = logging.getLogger(__name__)

OUTCOMES = {
    "fired": "Fired",
    "condition_false": "Condition not met",
    "not_this_event_type": "Other event type",
    "outside_window": "Outside its window",
    "cap_reached": "Cap reached",
    "no_points": "No points",
    "beaten_by_exclusive": "Beaten by an exclusive rule",
    "error": "Error",
}


def result_html(*, awards: list[dict], trace: list[dict], highlight_rule_id: int | None = None) -> str:
    """The awards and the trace of one event, as two tables (inbox detail and "try it")."""
    rows = [
        {**step, "label": OUTCOMES.get(step.get("outcome"), step.get("outcome")),
         "highlight": highlight_rule_id is not None and step.get("rule_id") == highlight_rule_id}
        for step in trace
    ]
    return render_to_string("admin/rules/includes/result.html", {
        "awards": awards, "total": sum(award["points"] for award in awards), "trace": rows,
    })


# --- Rules ------------------------------------------------------------------------------------


def _short_label(name: str):
    """The part of a choice's label before the colon: "Spend", not "Spend: points per currency unit"."""

    @admin.display(description=name, ordering=name)
    def short(_admin, rule: Rule) -> str:
        return getattr(rule, f"get_{name}_display")().split(":")[0]

    return short


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ("name", "program", "kind_label", "event_type", "priority", "stacking_label", "is_active",
                    "window")
    list_filter = ("program", "kind", "is_active")
    list_select_related = ("program",)
    search_fields = ("name",)
    fieldsets = (
        ("Basics", {"fields": ("program", "name", "kind", "is_active", "priority", "stacking")}),
        ("When it applies", {
            "fields": ("event_type", ("active_from", "active_until"), "condition"),
            "description": "The rule fires for events of its type, inside its window, when its condition is true.",
        }),
        ("What it gives", {
            "fields": ("points_per_unit", "rounding", "min_amount", "skus", "categories", "points_per_item",
                       "item_multiplier", "points", "multiplier", "points_expression"),
            "description": "Fill in the fields of the rule's kind (each field says which kinds use it); the "
                           "others are ignored. A points expression, when set, replaces the kind's computation "
                           "(not for a multiplier, which scales the other rules' points and must be above 1).",
        }),
        ("Caps", {"fields": ("max_points_per_event", "member_cap_period", "member_cap_points",
                             "member_cap_times")}),
    )

    kind_label = _short_label("kind")
    stacking_label = _short_label("stacking")

    @admin.display(description="window")
    def window(self, rule: Rule) -> str:
        def when(moment):
            return date_format(localtime(moment), "SHORT_DATETIME_FORMAT")

        parts = [f"from {when(rule.active_from)}" if rule.active_from else "",
                 f"until {when(rule.active_until)}" if rule.active_until else ""]
        return " ".join(part for part in parts if part) or "always"

    def get_readonly_fields(self, request, obj=None):
        # Moving a rule would bump only the new program's version: the old one's cache would keep it.
        return ("program",) if obj else ()

    def save_model(self, request, obj, form, change):
        rule_save(rule=obj)

    def delete_model(self, request, obj):
        rule_delete(rule=obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for rule in queryset.order_by("pk"):
                rule_delete(rule=rule)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk:
            context["try_form"] = TryItForm(program=obj.program, auto_id="try_%s",
                                            initial={"event": example_event(obj.event_type)})
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("try/", view(self.try_view), name="rules_rule_try"),
            path("<path:object_id>/try/", view(self.try_view), name="rules_rule_try_rule"),
            *super().get_urls(),
        ]

    def try_view(self, request, object_id=None):
        """Qualify a sample event against the program's saved rules and show the trace; post nothing."""
        rule = None
        if object_id is not None:
            rule = self.get_object(request, unquote(object_id))
            if rule is None:
                return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, rule):
            raise PermissionDenied
        form = TryItForm(request.POST or None, program=rule.program if rule else None,
                         initial={"event": example_event(rule.event_type if rule else "")})
        result, notes = None, []
        if form.is_valid():
            outcome = form.result()
            notes = outcome.notes
            if rule is not None and not rule.is_active:
                notes.append(f"{rule.name!r} is not active, so it took no part.")
            result = result_html(awards=[award.as_dict() for award in outcome.awards], trace=outcome.trace,
                                 highlight_rule_id=rule.pk if rule else None)
        title = f"Try it: {rule}" if rule else "Try an event"
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": rule, "form": form,
            "title": title, "result": result, "notes": notes,
        }
        return TemplateResponse(request, "admin/rules/rule/try_it.html", context)


# --- Event types ------------------------------------------------------------------------------


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    form = EventTypeForm
    list_display = ("name", "program", "description")
    list_filter = ("program",)
    list_select_related = ("program",)
    search_fields = ("name", "description")

    def save_model(self, request, obj, form, change):
        event_type_save(event_type=obj)

    def delete_model(self, request, obj):
        event_type_delete(event_type=obj)

    def delete_queryset(self, request, queryset):
        for event_type in queryset:
            event_type_delete(event_type=event_type)


# --- The events inbox -------------------------------------------------------------------------


class EventTypeFilter(admin.SimpleListFilter):
    """The known types, not a DISTINCT over the whole inbox."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        names = sorted({*BUILTIN_SCHEMAS, *EventType.objects.values_list("name", flat=True)})
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class StatusFilter(admin.SimpleListFilter):
    """By status, without reading through the processed events (no index names the status:
    ``InboundEvent.Meta``). Rejected and failed events are those with an error, found through the
    partial index event_problem; waiting ones are among the ids of the batches the sweeper has not
    yet forgotten (``EventBatch``: a committed event is ``received`` only there)."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return InboundEvent.Status.choices

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        queryset = queryset.filter(status=value)
        if value in (InboundEvent.Status.REJECTED, InboundEvent.Status.FAILED):
            queryset = queryset.filter(error__isnull=False)
        elif value == InboundEvent.Status.RECEIVED:
            queryset = queryset.filter(pk__in=RawSQL("SELECT unnest(event_ids) FROM rules_eventbatch", []))
        return queryset


class InboxChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The list shows none of the (possibly large) JSON columns.
        return super().get_queryset(request, exclude_parameters).defer("payload", "error", "awards", "trace")


@admin.register(InboundEvent)
class InboundEventAdmin(LargeListAdmin):
    list_display = ("received_at", "event_id", "type", "member_external_id", "status", "points")
    list_filter = (StatusFilter, EventTypeFilter, "program", ("received_at", admin.DateFieldListFilter))
    search_fields = ("=event_id", "=member_external_id", "=order_id")
    search_help_text = "An exact event id, member external id or order id."
    ordering = ("-received_at", "-id")
    actions = ("reprocess",)
    fieldsets = (
        (None, {"fields": ("status", "program", "partner", "event_id", "type", "member_external_id", "member",
                           "order_id", "occurred_at", "received_at", "processed_at", "points")}),
        ("Error", {"fields": ("error_display",)}),
        ("Awards and trace", {"fields": ("result_display",)}),
        ("Payload", {"fields": ("payload_display",)}),
    )
    readonly_fields = ("error_display", "result_display", "payload_display")

    def get_changelist(self, request, **kwargs):
        return InboxChangeList

    def get_ordering(self, request):
        # Newest first. Within a program, by arrival (event_recent: program, received_at). Across all
        # programs no index starts with received_at, and sorting a large table for one page took
        # seconds (4 s for 2 million events); the primary key, given in arrival order, serves it. An
        # event stored again after a rejection keeps its first place there.
        if "program__id__exact" in request.GET:
            return self.ordering
        return ("-id",)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is not None and obj.error else [fs for fs in fieldsets if fs[0] != "Error"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # events are what partners sent: never edited

    def has_delete_permission(self, request, obj=None):
        return False

    def has_reprocess_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.display(description="error")
    def error_display(self, event: InboundEvent) -> str:
        error = event.error or {}
        where = f" (field {error['param']})" if error.get("param") else ""
        return format_html("{}<br><small>{}{}</small>", error.get("message", ""), error.get("code", ""), where)

    @admin.display(description="awards and trace")
    def result_display(self, event: InboundEvent) -> str:
        return result_html(awards=event.awards or [], trace=event.trace or [])

    @admin.display(description="payload")
    def payload_display(self, event: InboundEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, ensure_ascii=False))

    @admin.action(description="Reprocess the selected rejected or failed events", permissions=["reprocess"])
    def reprocess(self, request, queryset):
        retryable = (InboundEvent.Status.REJECTED, InboundEvent.Status.FAILED)
        processed = still_refused = broken = skipped = without_id = 0
        for event in queryset.order_by("pk"):
            if event.status not in retryable:
                skipped += 1
                continue
            if event.event_id is None:
                without_id += 1
                continue
            try:
                event = event_reprocess(event=event)
            except Exception:  # one bad event must not stop the others; the log says why
                logger.exception("reprocessing event %s failed", event.pk)
                broken += 1
                continue
            self.log_change(request, event, f"Reprocessed: {event.status}")
            if event.status == InboundEvent.Status.PROCESSED:
                processed += 1
            else:
                still_refused += 1
        self.message_user(request, f"{processed} event(s) processed.",
                          messages.SUCCESS if processed else messages.INFO)
        if still_refused:
            self.message_user(request, f"{still_refused} event(s) were refused again: see their error.",
                              messages.WARNING)
        if broken:
            self.message_user(request, f"{broken} event(s) could not be reprocessed (an internal error; it is "
                                       "logged).", messages.ERROR)
        if skipped:
            self.message_user(request, f"{skipped} event(s) skipped: only rejected or failed events can be "
                                       "reprocessed.", messages.WARNING)
        if without_id:
            self.message_user(request, f"{without_id} event(s) skipped: kept without an event_id (none was sent, "
                                       "or it belongs to another event), they can only be sent again by the "
                                       "partner.", messages.WARNING)
