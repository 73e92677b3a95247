"""A balance read shows the balance as of now: lots past their expiry, or past their pending time,
are settled by the read itself (as spending settles them) when the nightly jobs have not yet
reached the member, so that what is shown as available can be spent."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from ledger import services
from ledger.audit import run_audit
from ledger.models import Entry
from tests.api.fixtures import client_for

pytestmark = pytest.mark.django_db(transaction=True)

DAY = dt.timedelta(days=1)


@pytest.fixture
def expiring(make_program, make_member):
    program = make_program(expiry_days=30)
    member = make_member(program, external_id="c-1")
    now = timezone.now()
    services.points_earn(member=member, points=100, key="old", now=now - 31 * DAY)
    services.points_earn(member=member, points=40, key="new", now=now - 2 * DAY)
    return program, member


@pytest.mark.parametrize("path", ["/api/v1/members/c-1/balance", "/api/v1/members/c-1"])
def test_points_past_their_expiry_are_not_shown_as_available(expiring, path):
    program, member = expiring
    api = client_for(program)
    body = api.get(path).json()
    balance = body.get("balance", body)
    assert (balance["available"], balance["lifetime_expired"]) == (40, 100)
    assert [lot["points"] for lot in balance["expiring"]] == [40]
    assert Entry.objects.filter(member=member, kind="expire").count() == 1
    again = api.get(path).json()
    assert again.get("balance", again) == balance
    redeemed = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 40}, format="json")
    assert redeemed.status_code == 201, redeemed.json()
    assert run_audit() == []


def test_the_member_list_settles_its_page(expiring):
    program, _member = expiring
    listed = client_for(program).get("/api/v1/members").json()["data"]
    assert [(m["external_id"], m["balance"]["available"], m["balance"]["lifetime_expired"]) for m in listed] == [
        ("c-1", 40, 100)]
    assert run_audit() == []


def test_points_past_their_pending_time_are_shown_as_available(make_program, make_member):
    program = make_program(pending_days=3)
    member = make_member(program, external_id="c-1")
    services.points_earn(member=member, points=70, key="a", now=timezone.now() - 4 * DAY)
    services.points_earn(member=member, points=5, key="b", now=timezone.now() - DAY)
    balance = client_for(program).get("/api/v1/members/c-1/balance").json()
    assert (balance["available"], balance["pending"]) == (70, 5)
    assert run_audit() == []
