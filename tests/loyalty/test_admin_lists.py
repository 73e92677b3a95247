"""Admin lists of large tables count a bounded number of rows (loyalty.admin_lists)."""

import re

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Member
from campaigns.models import Redemption, VoucherCode
from ledger import services
from ledger.models import Balance, Entry, Hold, Lot, Operation
from loyalty.admin_lists import CappedCountPaginator
from rules.models import InboundEvent
from webhooks.models import WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db

LARGE = (Member, Entry, Lot, Balance, Hold, Operation, InboundEvent, VoucherCode, Redemption, WebhookEvent,
         WebhookDelivery)


def changelist(model, **query):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"), query


def counts(queries) -> list[str]:
    return [q["sql"] for q in queries if re.search(r"\bCOUNT\(", q["sql"], re.IGNORECASE)]


def paginator_text(response) -> str:
    html = response.content.decode()
    found = re.search(r'<p class="paginator">(.*?)</p>', html, re.DOTALL)
    assert found, "no paginator on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


@pytest.fixture
def members(program, make_member):
    return [make_member(program) for _ in range(5)]


@pytest.mark.parametrize("model", LARGE, ids=lambda m: m.__name__)
def test_every_large_list_counts_with_a_limit(model, admin_client, settings):
    settings.ADMIN_LIST_COUNT_LIMIT = 7
    assert admin.site._registry[model].paginator is CappedCountPaginator
    url, query = changelist(model)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, query)
    assert response.status_code == 200
    found = counts(queries.captured_queries)
    assert found, "the list counted nothing"
    for sql in found:  # each count reads at most limit + 1 rows: none reads the whole table
        assert re.search(r"\bLIMIT 8\b", sql), sql


def test_past_the_limit_the_list_says_more_than(admin_client, settings, members):
    settings.ADMIN_LIST_COUNT_LIMIT = 3
    url, query = changelist(Member)
    response = admin_client.get(url, query)
    assert paginator_text(response) == "More than 3 members: filter or search to narrow the list"
    # The page itself still lists what it can show.
    for member in members:
        assert member.external_id in response.content.decode()


def test_within_the_limit_the_list_gives_the_exact_count(admin_client, settings, members, make_program,
                                                        make_member):
    settings.ADMIN_LIST_COUNT_LIMIT = 5
    other = make_program()
    make_member(other)
    url, query = changelist(Member, program__id__exact=members[0].program_id)
    response = admin_client.get(url, query)
    assert paginator_text(response) == "5 members"  # filtered: the other program's member is not counted
    assert "total)" not in paginator_text(response)  # and the whole table is never counted beside it


def test_pages_are_numbered_up_to_the_limit(admin_client, settings, member):
    for n in range(12):
        services.points_earn(member=member, points=1, key=f"earn-{n}")
    settings.ADMIN_LIST_COUNT_LIMIT = 10
    model_admin = admin.site._registry[Entry]
    per_page, model_admin.list_per_page = model_admin.list_per_page, 4
    try:
        url, query = changelist(Entry)
        first = admin_client.get(url, query)
        last = admin_client.get(url, {"p": 3})
    finally:
        model_admin.list_per_page = per_page
    # 12 entries, counted as "more than 10": pages 1 to 3 of 4 a page cover the first 10; the
    # other 2 are found by filtering or searching.
    assert paginator_text(first).startswith("1 2 3 More than 10 entries")
    assert last.status_code == 200 and len(last.context["cl"].result_list) == 2


def test_select_all_past_the_limit_does_nothing_and_says_why(admin_client, settings, program, member):
    # The page offers "Select all 3" (the capped count): the action must not run on the 6 rows behind it.
    from django.contrib.messages import get_messages

    from campaigns import services as campaigns
    from campaigns.models import Reward

    services.points_earn(member=member, points=10_000, key="seed")
    coffee = Reward.objects.create(program=program, code="coffee", name="Coffee", cost=10)
    for n in range(6):
        campaigns.redemption_create(key=f"r{n}", member=member, reward=coffee)
    url = reverse("admin:campaigns_redemption_changelist") + "?status__exact=captured"
    settings.ADMIN_LIST_COUNT_LIMIT = 3
    assert "Select all 3" in admin_client.get(url).content.decode()
    one = list(Redemption.objects.values_list("pk", flat=True)[:1])
    response = admin_client.post(url, {"action": "cancel", "select_across": "1", "index": "0",
                                       "_selected_action": one})
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "More than 3 rows match: narrow the list with its filters or search before acting on all of them. "
        "Nothing was done."]
    assert not Redemption.objects.filter(status="cancelled").exists()
    settings.ADMIN_LIST_COUNT_LIMIT = 6  # within the limit, all of them
    admin_client.post(url, {"action": "cancel", "select_across": "1", "index": "0", "_selected_action": one})
    assert Redemption.objects.filter(status="cancelled").count() == 6
