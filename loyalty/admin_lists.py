"""Admin lists of tables that grow without bound (members, the ledger, events, redemptions,
vouchers, webhooks).

Django's change list counts every row its filters match, on every page view, to number the pages:
a ``count(*)`` that reads the whole table when nothing is filtered. On two million inbound events
it took 71 ms just after ``VACUUM`` and 729 ms once a tenth of them had been updated (as processing
does), and it grows with the table (``bench/admin_lists.py``). These lists count at most
``ADMIN_LIST_COUNT_LIMIT`` rows, in any order (a subquery with a ``LIMIT``): 1-5 ms. Past the limit
the list says "more than" it and numbers the pages up to it; filters or search narrow it down.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.utils.functional import cached_property


class CappedCountPaginator(Paginator):
    """Counts at most ``ADMIN_LIST_COUNT_LIMIT`` rows; ``capped`` says whether there were more."""

    capped = False

    @cached_property
    def count(self) -> int:
        limit = settings.ADMIN_LIST_COUNT_LIMIT
        counted = self.object_list.order_by()[: limit + 1].count()  # any limit + 1 rows: no sorting
        if counted > limit:
            self.capped = True
            return limit
        return counted


class LargeListAdmin(admin.ModelAdmin):
    """A model admin whose list counts at most ``ADMIN_LIST_COUNT_LIMIT`` rows, and never counts
    the unfiltered table next to a filtered list ("5 results (12,345,678 total)")."""

    paginator = CappedCountPaginator
    show_full_result_count = False

    def response_action(self, request, queryset):
        # "Select all N" offers the capped count; past it, the action would run on every row the
        # filters match, more than the page said (millions of redemptions cancelled by one click).
        limit = settings.ADMIN_LIST_COUNT_LIMIT
        if (request.POST.get("select_across") not in (None, "", "0", "False", "false")
                and queryset.order_by()[: limit + 1].count() > limit):
            self.message_user(request, f"More than {limit:,} rows match: narrow the list with its filters or search "
                              "before acting on all of them. Nothing was done.", messages.WARNING)
            return None
        return super().response_action(request, queryset)
