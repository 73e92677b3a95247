"""Admin for webhooks: endpoints (through the services), and the outbox and delivery log, read-only,
with "Redeliver" (``delivery_retry``)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from loyalty.admin_lists import LargeListAdmin
from loyalty.errors import DomainError
from webhooks.models import WEBHOOK_EVENT_TYPES, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import (
    delivery_retry,
    endpoint_capacity_check,
    endpoint_create,
    endpoint_delete,
    endpoint_event_types_check,
    endpoint_update,
    endpoint_url_check,
)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in WEBHOOK_EVENT_TYPES], widget=forms.CheckboxSelectMultiple, required=False,
        help_text="None checked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("program", "url", "event_types", "is_active")

    def _checked(self, check, value):
        try:
            return check(value)
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_url(self) -> str:
        return self._checked(endpoint_url_check, self.cleaned_data["url"])

    def clean_event_types(self) -> list[str]:
        return self._checked(endpoint_event_types_check, self.cleaned_data["event_types"])

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and cleaned.get("program"):
            self._checked(lambda program: endpoint_capacity_check(program=program), cleaned["program"])
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "program", "types", "is_active", "partner", "public_id", "created_at")
    list_filter = ("program", "is_active")
    list_select_related = ("program", "partner")
    search_fields = ("url", "public_id")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("program", "url", "event_types")
        return ("program", "public_id", "url", "event_types", "is_active", "secret", "partner", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return ("program", "public_id", "secret", "partner", "created_at") if obj else ()

    @admin.display(description="event types")
    def types(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types) or "all"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            endpoint_update(endpoint=obj, url=data["url"], event_types=data["event_types"],
                            is_active=data["is_active"])
            return
        endpoint = endpoint_create(program=data["program"], url=data["url"], event_types=data["event_types"])
        obj.pk, obj.public_id, obj.secret, obj.created_at = (
            endpoint.pk, endpoint.public_id, endpoint.secret, endpoint.created_at)
        obj._state.adding, obj._state.db = False, endpoint._state.db

    def get_deleted_objects(self, objs, request):
        # The delivery log goes with its endpoint (endpoint_delete); it is counted, not listed row by
        # row, and needs no permission of its own (the log is read-only here).
        endpoints = list(objs)
        deliveries = WebhookDelivery.objects.filter(endpoint__in=endpoints).count()
        counts = {WebhookEndpoint._meta.verbose_name_plural: len(endpoints),
                  WebhookDelivery._meta.verbose_name_plural: deliveries}
        return [str(endpoint) for endpoint in endpoints], counts, set(), []

    def delete_model(self, request, obj):
        endpoint_delete(endpoint=obj)

    def delete_queryset(self, request, queryset):
        for endpoint in queryset:
            endpoint_delete(endpoint=endpoint)


class ReadOnlyAdmin(LargeListAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("endpoint", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "delivered_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "type", "program", "created_at")
    list_filter = ("type", "program")
    list_select_related = ("program",)
    search_fields = ("public_id",)
    date_hierarchy = "created_at"
    fields = ("public_id", "type", "program", "created_at", "data")
    inlines = (DeliveryInline,)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """The delivery log."""

    list_display = ("event_id_", "event_type", "endpoint", "status", "attempts", "last_status_code", "error",
                    "last_attempt_at", "next_attempt_at", "delivered_at")
    list_filter = ("status", "event__type", "endpoint__program")
    list_select_related = ("event", "endpoint")
    search_fields = ("event__public_id", "endpoint__url")
    fields = ("event", "endpoint", "status", "attempts", "last_attempt_at", "last_status_code", "last_error",
              "next_attempt_at", "delivered_at")
    actions = ("redeliver",)

    @admin.display(description="event", ordering="event__public_id")
    def event_id_(self, delivery: WebhookDelivery) -> str:
        return delivery.event.public_id

    @admin.display(description="type", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="last error")
    def error(self, delivery: WebhookDelivery) -> str:
        return delivery.last_error[:80]

    @admin.action(description="Redeliver the selected deliveries", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset.order_by("id"):
            delivery_retry(delivery=delivery)
            count += 1
        self.message_user(request, f"{count} deliveries will be sent again shortly.", messages.SUCCESS)

    def has_redeliver_permission(self, request) -> bool:
        return request.user.has_perm("webhooks.change_webhookdelivery")
