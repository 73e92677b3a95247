"""Rewards in the admin, in a real browser: a marketer creates a reward with a pool of voucher codes,
uploads the codes, sees a held redemption and captures it, and the member gets a code."""

from __future__ import annotations

import pytest

from campaigns import services
from campaigns.models import Redemption, Reward, VoucherCode
from ledger.services import points_earn
from tests.browser.conftest import submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_reward_with_uploaded_codes_and_a_held_redemption_captured(admin_page, program, make_member):
    page = admin_page
    page.goto("/admin/campaigns/reward/add/")
    page.select_option("#id_program", str(program.pk))
    page.fill("#id_code", "cinema-ticket")
    page.fill("#id_name", "Cinema ticket")
    page.fill("#id_cost", "300")
    page.fill("#id_stock", "")
    page.select_option("#id_vouchers", "pool")
    submit(page, "input[name=_continue]")
    assert page.locator(".messagelist .success").is_visible(), page.locator("#content").inner_text()[:1500]
    reward = Reward.objects.get(code="cinema-ticket")

    submit(page, "text=Upload voucher codes")
    page.fill("#id_codes", "CIN-0001\n  CIN-0002  \n\nCIN-0001\nCIN-0003\n")
    submit(page, "input[value='Upload codes']")
    assert "3" in page.locator(".messagelist").inner_text(), page.locator(".messagelist").inner_text()
    assert sorted(VoucherCode.objects.filter(reward=reward).values_list("code", flat=True)) == [
        "CIN-0001", "CIN-0002", "CIN-0003"]

    member = make_member(program, external_id="film-fan")
    points_earn(member=member, points=1000, key="fund")
    held = services.redemption_create(member=member, reward=reward, capture=False, key="hold-1")
    assert held.status == Redemption.Status.HELD

    page.goto("/admin/campaigns/redemption/?status__exact=held")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and held.public_id in rows.first.inner_text() and "film-fan" in rows.first.inner_text()
    rows.first.locator("input.action-select").check()
    page.select_option("select[name=action]", "capture")
    submit(page, ".actions button")
    assert "captured" in page.locator(".messagelist").inner_text()

    held.refresh_from_db()
    assert held.status == Redemption.Status.CAPTURED and held.voucher_code == "CIN-0001"
    member.balance.refresh_from_db()
    assert (member.balance.available, member.balance.held) == (700, 0)
    page.goto("/admin/campaigns/redemption/?q=CIN-0001")
    assert held.public_id in page.locator("#result_list").inner_text()
