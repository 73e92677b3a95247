"""A marketer opens a program's health from its page in the admin, in a real browser."""

from __future__ import annotations

import pytest

from ledger.services import points_earn, points_redeem
from tests.browser.conftest import submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_marketer_reads_the_programs_health(admin_page, program, make_member):
    member = make_member(program, external_id="regular")
    points_earn(member=member, points=400, key="e1")
    points_redeem(member=member, points=100, key="r1")
    page = admin_page
    page.goto(f"/admin/accounts/program/{program.pk}/change/")
    submit(page, "text=Health")
    assert page.locator("h1").inner_text() == f"Health: {program}"
    liability = page.locator("#liability").inner_text()
    assert "Outstanding (available + pending + held)\t300" in liability
    assert "Burn (redeemed / earned)\t25.0%" in page.locator("#lifetime").inner_text()
    today = page.locator("#days tbody tr").nth(1).inner_text().split("\t")
    assert today[1:] == ["400", "100", "0", "0", "0"]
