"""Admin for rewards, their voucher codes and redemptions.

Marketers edit rewards here. Voucher codes are added only by ``voucher_codes_upload`` (a pool)
or by a redemption (generated codes); a code given out is never edited or deleted, a free one
may be deleted. Redemptions are read-only: they change only through ``campaigns.services``,
which the capture, void and cancel actions call one redemption at a time.

A pool reward's availability is its free codes: its ``stock`` stays empty (the form says so),
so uploading codes never touches stock.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from accounts.admin import LatestFormSet, ViewOnlyInline
from campaigns import services
from campaigns.forms import RewardForm, VoucherUploadForm
from campaigns.models import Redemption, Reward, VoucherCode
from loyalty.admin_lists import LargeListAdmin
from loyalty.errors import DomainError

logger = logging.getLogger(__name__)

CODES_SHOWN = 20  # codes listed by name in a message; the rest are counted


def _some(codes: list[str]) -> str:
    shown = ", ".join(codes[:CODES_SHOWN])
    return f"{shown} and {len(codes) - CODES_SHOWN} more" if len(codes) > CODES_SHOWN else shown


def _redemption_link(redemption: Redemption | None) -> str:
    if redemption is None:
        return ""
    url = reverse("admin:campaigns_redemption_change", args=[redemption.pk])
    return format_html('<a href="{}">{}</a>', url, redemption.public_id)


# --- Rewards ---------------------------------------------------------------------------------


def reward_codes_url(reward: Reward) -> str:
    return f"{reverse('admin:campaigns_vouchercode_changelist')}?reward__id__exact={reward.pk}"


class VoucherCodeInline(ViewOnlyInline):
    model = VoucherCode
    formset = LatestFormSet
    verbose_name_plural = f"voucher codes (latest {LatestFormSet.limit})"
    fields = ("code", "state", "redemption_link", "given_at")
    ordering = ("-id",)
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("redemption")

    @admin.display(description="state")
    def state(self, code: VoucherCode) -> str:
        return "given" if code.redemption_id else "free"

    @admin.display(description="redemption")
    def redemption_link(self, code: VoucherCode) -> str:
        return _redemption_link(code.redemption)


@admin.register(Reward)
class RewardAdmin(admin.ModelAdmin):
    form = RewardForm
    list_display = ("code", "name", "program", "cost", "stock_display", "per_member_limit", "is_active", "window",
                    "vouchers_label", "codes_left")
    list_display_links = ("code", "name")
    list_filter = ("program", "is_active", "vouchers")
    list_select_related = ("program",)
    search_fields = ("code", "name")
    inlines = (VoucherCodeInline,)
    fieldsets = (
        (None, {"fields": ("program", "code", "name", "description", "is_active")}),
        ("Price and limits", {
            "fields": ("cost", "stock", "per_member_limit"),
            "description": "A redemption of n units costs n x cost points and takes n units of stock.",
        }),
        ("When it is available", {
            "fields": (("active_from", "active_until"),),
            "description": "Members can redeem an active reward inside its window.",
        }),
        ("Voucher codes", {"fields": ("vouchers", "codes_summary")}),
        ("Record", {"fields": ("created_at",)}),
    )

    def save_model(self, request, obj, form, change):
        """The stock as redemptions left it, not as the page was loaded: units taken or given back
        while the page was open stay taken or given back. A changed stock moves by what the
        marketer changed (10 to 15 adds 5 to whatever is left now); to or from unlimited is set as is."""
        if not change:
            obj.save()
            return
        with transaction.atomic():
            obj.save(update_fields=[f.name for f in Reward._meta.concrete_fields if f.name not in ("id", "stock")])
            if "stock" in form.changed_data:  # against the stock the page showed
                before = form.stock_as_loaded()
                stock = (obj.stock if before is None or obj.stock is None
                         else Greatest(F("stock") + (obj.stock - before), 0))
                Reward.objects.filter(pk=obj.pk).update(stock=stock)
            obj.stock = Reward.objects.filter(pk=obj.pk).values_list("stock", flat=True).get()

    def get_queryset(self, request):
        # One correlated count per listed row, on the partial "free codes" index: no query per row.
        free = (VoucherCode.objects.filter(reward=OuterRef("pk"), redemption__isnull=True).order_by()
                .values("reward").annotate(n=Count("pk")).values("n"))
        return super().get_queryset(request).annotate(free_codes=Coalesce(Subquery(free), 0))

    def get_fieldsets(self, request, obj=None):
        if obj is not None:
            return self.fieldsets
        return [(name, {**options, "fields": tuple(f for f in options["fields"] if f != "codes_summary")})
                for name, options in self.fieldsets if name != "Record"]

    def get_readonly_fields(self, request, obj=None):
        # Program and code name the reward to partners and to its redemptions: fixed once created.
        return ("program", "code", "codes_summary", "created_at") if obj else ()

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None and obj.vouchers != Reward.Vouchers.NONE else ()

    @admin.display(description="stock", ordering="stock")
    def stock_display(self, reward: Reward) -> str:
        if reward.stock is not None:
            return str(reward.stock)
        return "(its codes)" if reward.vouchers == Reward.Vouchers.POOL else "unlimited"

    @admin.display(description="window")
    def window(self, reward: Reward) -> str:
        def when(moment):
            return date_format(localtime(moment), "SHORT_DATETIME_FORMAT")

        parts = [f"from {when(reward.active_from)}" if reward.active_from else "",
                 f"until {when(reward.active_until)}" if reward.active_until else ""]
        return " ".join(part for part in parts if part) or "always"

    @admin.display(description="vouchers", ordering="vouchers")
    def vouchers_label(self, reward: Reward) -> str:
        return reward.get_vouchers_display().split(" (")[0]

    @admin.display(description="codes left", ordering="free_codes")
    def codes_left(self, reward: Reward):
        return reward.free_codes if reward.vouchers == Reward.Vouchers.POOL else None

    @admin.display(description="codes")
    def codes_summary(self, reward: Reward) -> str:
        if reward.pk is None or reward.vouchers == Reward.Vouchers.NONE:
            return "No voucher codes."
        given = VoucherCode.objects.filter(reward=reward, redemption__isnull=False).count()
        codes_url = reward_codes_url(reward)
        if reward.vouchers == Reward.Vouchers.GENERATED:
            return format_html('{} given. <a href="{}">See them all</a>.', given, codes_url)
        return format_html('{} free, {} given. <a href="{}">See them all</a> or '
                           '<a href="{}">upload more</a>.', reward.free_codes, given, codes_url,
                           reverse("admin:campaigns_reward_upload_codes", args=[reward.pk]))

    def get_urls(self):
        upload = path("<path:object_id>/upload-codes/", self.admin_site.admin_view(self.upload_codes_view),
                      name="campaigns_reward_upload_codes")
        return [upload, *super().get_urls()]

    def upload_codes_view(self, request, object_id):
        reward = self.get_object(request, unquote(object_id))
        if reward is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, reward):
            raise PermissionDenied
        change_url = reverse("admin:campaigns_reward_change", args=[reward.pk])
        if reward.vouchers != Reward.Vouchers.POOL:
            self.message_user(request, f"{reward} does not give codes from an uploaded pool; set its vouchers to "
                                       "\"Uploaded pool\" first.", messages.ERROR)
            return redirect(change_url)
        form = VoucherUploadForm(request.POST or None, request.FILES or None)
        if form.is_valid() and self._upload(request, reward, form.cleaned_data):
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": reward, "form": form,
            "title": f"Upload voucher codes: {reward}", "free": reward.free_codes,
            "given": VoucherCode.objects.filter(reward=reward, redemption__isnull=False).count(),
        }
        return TemplateResponse(request, "admin/campaigns/reward/upload_codes.html", context)

    def _upload(self, request, reward: Reward, data: dict) -> bool:
        codes = data["unique_codes"]
        # Only to say which were skipped; the service's count is what was added.
        in_pool = set()
        for start in range(0, len(codes), services.VOUCHER_UPLOAD_BATCH):
            in_pool.update(VoucherCode.objects.filter(
                reward=reward, code__in=codes[start:start + services.VOUCHER_UPLOAD_BATCH]
            ).values_list("code", flat=True))
        try:
            added = services.voucher_codes_upload(reward=reward, codes=codes)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        if added:
            self.log_change(request, reward, f"Uploaded {added} voucher code(s)")
        free = VoucherCode.objects.filter(reward=reward, redemption__isnull=True).count()
        self.message_user(request, f"Added {added} code(s) to the pool of {reward}; it has {free} free code(s).",
                          messages.SUCCESS if added else messages.WARNING)
        repeated = [code for code in data["repeated"] if code not in in_pool]  # the others: already in the pool
        if repeated:
            self.message_user(request, f"Skipped {len(repeated)} code(s) repeated in the upload (added "
                                       f"once): {_some(repeated)}", messages.WARNING)
        skipped = [code for code in codes if code in in_pool]
        if skipped:
            self.message_user(request, f"Skipped {len(skipped)} code(s) already in the pool: {_some(skipped)}",
                              messages.WARNING)
        return True


# --- Voucher codes ---------------------------------------------------------------------------


class VoucherStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("free", "free"), ("given", "given")]

    def queryset(self, request, queryset):
        if self.value() in ("free", "given"):
            return queryset.filter(redemption__isnull=self.value() == "free")
        return queryset


@admin.register(VoucherCode)
class VoucherCodeAdmin(LargeListAdmin):
    list_display = ("code", "reward", "state", "redemption_link", "given_at")
    list_filter = (VoucherStateFilter, "reward__program", "reward")
    list_select_related = ("reward", "redemption")
    search_fields = ("=code",)
    search_help_text = "A code (exact)."
    ordering = ("-id",)
    fields = ("reward", "code", "state", "redemption_link", "given_at")
    readonly_fields = ("state", "redemption_link")
    actions = ("delete_free",)

    def has_add_permission(self, request):
        return False  # codes come from an upload or a redemption

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # A code given out is the member's: it stays, with its redemption.
        return super().has_delete_permission(request, obj) and (obj is None or obj.redemption_id is None)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would offer given codes too
        return actions

    @admin.display(description="state")
    def state(self, code: VoucherCode) -> str:
        return "given" if code.redemption_id else "free"

    @admin.display(description="redemption")
    def redemption_link(self, code: VoucherCode) -> str:
        return _redemption_link(code.redemption)

    def delete_model(self, request, obj):
        self._delete_free([obj.pk])

    def delete_queryset(self, request, queryset):
        self._delete_free(list(queryset.values_list("pk", flat=True)))

    def _delete_free(self, pks: list[int]) -> list[VoucherCode]:
        """Delete those of ``pks`` that are still free. The lock makes a redemption skip them
        (it takes codes ``SKIP LOCKED``), and one given out meanwhile no longer matches."""
        with transaction.atomic():
            free = list(VoucherCode.objects.select_for_update().filter(pk__in=pks, redemption__isnull=True)
                        .order_by("pk"))
            VoucherCode.objects.filter(pk__in=[code.pk for code in free]).delete()
        return free

    @admin.action(description="Delete the selected free codes (given codes are kept)", permissions=["delete"])
    def delete_free(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        deleted = self._delete_free(pks)
        if deleted:
            self.log_deletions(request, deleted)
        self.message_user(request, f"{len(deleted)} free code(s) deleted.",
                          messages.SUCCESS if deleted else messages.INFO)
        if len(pks) > len(deleted):
            self.message_user(request, f"{len(pks) - len(deleted)} code(s) kept: they were given out.",
                              messages.WARNING)


# --- Redemptions -----------------------------------------------------------------------------


@admin.register(Redemption)
class RedemptionAdmin(LargeListAdmin):
    list_display = ("public_id", "member_external_id", "reward", "points", "status", "voucher_code", "created_at",
                    "resolved_at")
    list_filter = ("status", "program", "reward")
    list_select_related = ("member", "reward")
    search_fields = ("=public_id", "=member__external_id", "=voucher_codes__code")
    search_help_text = "An exact redemption id (rdm_...), member external id or voucher code."
    ordering = ("-id",)
    actions = ("capture", "void", "cancel")
    fieldsets = (
        (None, {"fields": ("public_id", "status", "program", "member", "reward", "quantity", "points",
                           "description", "voucher_code", "stock_returned")}),
        ("Ledger", {"fields": ("operation", "hold", "created_at", "resolved_at")}),
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # redemptions change only through the services: see the actions

    def has_delete_permission(self, request, obj=None):
        return False

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.display(description="member", ordering="member__external_id")
    def member_external_id(self, redemption: Redemption) -> str:
        return redemption.member.external_id

    @admin.action(description="Capture the selected held redemptions", permissions=["resolve"])
    def capture(self, request, queryset):
        self._resolve(request, queryset, services.redemption_capture, "captured", Redemption.Status.CAPTURED)

    @admin.action(description="Void the selected held redemptions (their points come back)",
                  permissions=["resolve"])
    def void(self, request, queryset):
        self._resolve(request, queryset, services.redemption_void, "voided", Redemption.Status.VOIDED)

    @admin.action(description="Cancel the selected captured redemptions (their points come back)",
                  permissions=["resolve"])
    def cancel(self, request, queryset):
        self._resolve(request, queryset, services.redemption_cancel, "cancelled", Redemption.Status.CANCELLED)

    def _resolve(self, request, queryset, service, done: str, target: str) -> None:
        """Call ``service`` for each redemption (each in its own transaction) and report the outcome."""
        changed, already, broken = 0, 0, []
        refused: dict[str, list[str]] = defaultdict(list)
        for redemption in queryset.select_related(None).order_by("pk"):
            was = redemption.status
            try:
                redemption = service(redemption=redemption)
            except DomainError as exc:
                refused[exc.message].append(redemption.public_id)
                continue
            except Exception:  # one broken redemption must not stop the others; the log says why
                logger.exception("%s of redemption %s failed", done, redemption.public_id)
                broken.append(redemption.public_id)
                continue
            if was == target:
                already += 1
            else:
                changed += 1
                self.log_change(request, redemption, done.capitalize())
        if changed or not (already or refused or broken):
            self.message_user(request, f"{changed} redemption(s) {done}.",
                              messages.SUCCESS if changed else messages.INFO)
        if already:
            self.message_user(request, f"{already} redemption(s) were already {done}; nothing changed.",
                              messages.INFO)
        for message, ids in refused.items():
            self.message_user(request, f"{len(ids)} redemption(s) not {done}: {message} ({_some(ids)})",
                              messages.ERROR)
        if broken:
            self.message_user(request, f"{len(broken)} redemption(s) not {done} because of an internal error "
                                       f"(it is logged): {_some(broken)}", messages.ERROR)
