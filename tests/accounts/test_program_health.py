"""The program's health page in the admin: liability, breakage and burn, earn and burn by day,
the last day's events; figures read from the ledger of that program only."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from ledger import services, upkeep
from tests.html import cell_texts, element

pytestmark = pytest.mark.django_db


def _module(page: str, module_id: str) -> dict[str, str]:
    """Each row of the module's table: its heading cell -> its other cells."""
    return {cells[0]: " | ".join(cells[1:]) for cells in cell_texts(element(page, "div", module_id))}


@pytest.fixture
def ledger_history(make_program, make_member):
    from rules.models import InboundEvent

    now = timezone.now()
    days_ago = lambda n: now - dt.timedelta(days=n)  # noqa: E731
    program = make_program(expiry_days=60)
    alice, bob = make_member(program, external_id="alice"), make_member(program, external_id="bob")
    services.points_earn(member=alice, points=100, key="e1", now=days_ago(70))  # expires 10 days ago
    services.points_earn(member=alice, points=200, key="e2", now=days_ago(40))  # expires in 20 days
    upkeep.lots_expire(now=days_ago(9))
    services.points_earn(member=alice, points=300, key="e3", now=days_ago(5))
    services.points_redeem(member=alice, points=50, key="r1", now=days_ago(2))  # from e2, the soonest
    services.points_hold(member=alice, points=30, key="h1")  # still open
    voided = services.points_hold(member=alice, points=20, key="h2")
    services.hold_void(hold=voided, key="v2")
    services.points_adjust(member=alice, points=15, key="a1", reason="Goodwill")
    services.points_adjust(member=alice, points=-5, key="a2", reason="Correction")
    services.points_earn(member=bob, points=40, key="e4", now=days_ago(1))
    other = make_program()
    services.points_earn(member=make_member(other), points=999, key="x1")

    def event(program, status, received_at):
        InboundEvent.objects.create(program=program, payload={}, status=status, received_at=received_at)

    for status in ("processed", "processed", "rejected"):
        event(program, status, now - dt.timedelta(hours=2))
    event(program, "processed", days_ago(2))
    event(other, "failed", now)
    return program, now


def test_health_shows_liability_breakage_and_earn_and_burn_by_day(admin_client, ledger_history):
    program, now = ledger_history
    change = admin_client.get(reverse("admin:accounts_program_change", args=[program.pk])).content.decode()
    url = reverse("admin:accounts_program_health", args=[program.pk])
    assert f'href="{url}"' in change
    page = admin_client.get(url).content.decode()
    change_url = reverse("admin:accounts_program_change", args=[program.pk])
    assert re.search(rf'<a href="{change_url}">{program}</a>\s*&rsaquo; Health\s*</div>', page)

    assert _module(page, "liability") == {
        "Members": "2",
        # alice: 615 earned and adjusted, less 100 expired, 50 redeemed, 30 held, 5 deducted; bob 40
        "Outstanding (available + pending + held)": "500",
        "Available": "470",
        "Pending": "0",
        "Held": "30",
        "Owed back by members (refunds of points already spent)": "0",
        # what is left of e2 (200 - 50 - 30 - 5); e3, bob's and the adjustment's lots expire later
        "Expiring in the next 30 days": "115",
    }
    assert _module(page, "lifetime") == {
        "Earned": "640", "Redeemed": "50", "Expired": "100",
        "Burn (redeemed / earned)": "7.8%", "Breakage (expired / earned)": "15.6%",
    }
    inbox = reverse("admin:rules_inboundevent_changelist")
    assert _module(page, "events") == {"Received": "0", "Processed": "2", "Rejected": "1", "Failed": "0"}
    assert f'href="{inbox}?program__id__exact={program.pk}&amp;status__exact=rejected&amp;received_at__gte=' in page

    days = _module(page, "days")
    assert len(days) == 1 + 1 + 30  # the heading, the total, a row a day
    day = lambda n: f"{(now - dt.timedelta(days=n)).astimezone(dt.UTC):%a %-d %b}"  # noqa: E731
    columns = "Earned | Redeemed | Expired | Refunds and cancellations | Adjustments"
    assert days["Day"] == columns
    # e1 and e2 were earned before the period; the void gave its hold back (20 - 20).
    assert days["All 30 days"] == "340 | 80 | 100 | 0 | 10"
    assert days[day(0)] == "0 | 30 | 0 | 0 | 10"
    assert days[day(1)] == "40 | 0 | 0 | 0 | 0"
    assert days[day(2)] == "0 | 50 | 0 | 0 | 0"
    assert days[day(5)] == "300 | 0 | 0 | 0 | 0"
    assert days[day(9)] == "0 | 0 | 100 | 0 | 0"
    quiet = [name for name, cells in days.items() if cells == "0 | 0 | 0 | 0 | 0"]
    assert len(quiet) == 30 - 5


def test_a_new_program_has_no_ratios_yet(admin_client, program):
    page = admin_client.get(reverse("admin:accounts_program_health", args=[program.pk])).content.decode()
    lifetime = _module(page, "lifetime")
    assert lifetime["Burn (redeemed / earned)"] == lifetime["Breakage (expired / earned)"] == "&ndash;"
    assert _module(page, "liability")["Members"] == "0"


def test_health_needs_permission_to_view_programs(client, program):
    url = reverse("admin:accounts_program_health", args=[program.pk])
    staff = get_user_model().objects.create_user("analyst", password="pw-analyst-1", is_staff=True)
    client.login(username="analyst", password="pw-analyst-1")
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_program"))
    assert client.get(url).status_code == 200
    missing = client.get(reverse("admin:accounts_program_health", args=[program.pk + 1000]))
    assert missing.status_code == 302  # to the admin index, with "does not exist", as the change page does


def test_each_event_count_links_to_the_events_it_counts(admin_client, program):
    import html

    from rules.models import InboundEvent

    now = timezone.now()
    for n, age in enumerate((dt.timedelta(hours=1), dt.timedelta(days=3), dt.timedelta(days=40))):
        InboundEvent.objects.create(program=program, event_id=f"e{n}", payload={}, status="rejected",
                                    error={"code": "x", "message": "bad"}, received_at=now - age)
    page = admin_client.get(reverse("admin:accounts_program_health", args=[program.pk])).content.decode()
    link, shown = re.search(r'<th>Rejected</th><td><a href="([^"]+)">(\d+)</a>', page).groups()
    listed = admin_client.get(html.unescape(link)).context["cl"].result_count
    assert int(shown) == listed == 1
