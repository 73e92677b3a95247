"""The ledger, read-only: points move only through ``ledger.services``."""

from __future__ import annotations

from django.contrib import admin

from ledger.models import Balance, Entry, Hold, Lot, Operation
from loyalty.admin_lists import LargeListAdmin

# Exact match: these tables are large, and (program, external_id) is indexed.
MEMBER_SEARCH = "member__external_id__exact"


class LedgerAdmin(LargeListAdmin):
    list_select_related = ("member__program",)
    search_fields = (MEMBER_SEARCH,)
    search_help_text = "A member's external id (exact)."

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Entry)
class EntryAdmin(LedgerAdmin):
    list_display = ("id", "created_at", "member", "kind", "points", "description", "source")
    list_filter = ("kind", "program")
    ordering = ("-id",)

    @admin.display(description="source")
    def source(self, entry: Entry) -> str:
        return f"{entry.source_type}: {entry.source_id}" if entry.source_type else ""


@admin.register(Lot)
class LotAdmin(LedgerAdmin):
    list_display = ("id", "member", "points", "remaining", "available_at", "matured", "expires_at", "expired_at")
    list_filter = ("program", "matured", ("expired_at", admin.EmptyFieldListFilter))
    ordering = ("-id",)


@admin.register(Balance)
class BalanceAdmin(LedgerAdmin):
    list_display = ("member", "available", "pending", "held", "debt", "lifetime_earned", "lifetime_redeemed",
                    "lifetime_expired")
    list_filter = ("program",)


@admin.register(Hold)
class HoldAdmin(LedgerAdmin):
    list_display = ("id", "member", "points", "status", "created_at", "expires_at", "resolved_at")
    list_filter = ("status", "program")
    ordering = ("-id",)


class OperationKindFilter(admin.SimpleListFilter):
    """The kinds the services write, without a DISTINCT over every operation."""

    title = "kind"
    parameter_name = "kind"
    KINDS = ("earn", "redeem", "hold", "capture", "void", "cancel", "reverse", "adjust")

    def lookups(self, request, model_admin):
        return [(kind, kind) for kind in self.KINDS]

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


@admin.register(Operation)
class OperationAdmin(LedgerAdmin):
    list_display = ("id", "key", "kind", "member", "created_at")
    list_filter = (OperationKindFilter, "program")
    search_fields = (MEMBER_SEARCH, "key__exact")
    search_help_text = "A member's external id or an operation key (exact)."
    ordering = ("-id",)
