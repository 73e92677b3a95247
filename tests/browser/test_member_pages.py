"""A member signs in through the form and sees their own points, and nobody else's."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.browser.conftest import sign_in, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def members(make_program, make_member):
    from campaigns.models import Reward
    from ledger.services import points_earn, points_redeem

    program = make_program(expiry_days=365)
    users = get_user_model()
    alice = make_member(program, external_id="alice", user=users.objects.create_user("alice", password="pw-alice-1"))
    alice.tier = "Gold"
    alice.save(update_fields=["tier"])
    bob = make_member(program, external_id="bob", user=users.objects.create_user("bob", password="pw-bob-1"))
    points_earn(member=alice, points=120, key="a1", description="Welcome gift",
                now=timezone.now() - dt.timedelta(days=345))
    points_earn(member=alice, points=35, key="a2", description="Coffee purchase")
    points_redeem(member=alice, points=15, key="a3", description="Cookie")
    points_earn(member=bob, points=7777, key="b1", description="Bob's big order")
    Reward.objects.create(program=program, code="free-coffee", name="Free coffee", cost=150)
    return alice, bob


def test_member_signs_in_and_sees_balance_history_expiry_tier_and_rewards(page, members):
    sign_in(page, "alice", "pw-alice-1", "/me/")
    assert page.url.endswith("/me/")
    assert page.locator("#balance").inner_text() == "140 points available"
    body = page.locator("body").inner_text()
    assert "Member alice, tier Gold." in body
    assert "Earned in all: 155" in body and "Redeemed: 15" in body
    soon, later = (f"{timezone.now() + dt.timedelta(days=days):%-d %b %Y}" for days in (20, 365))
    # The 15 points redeemed came from the lot that expires first.
    assert page.locator("#expiring").inner_text() == f"105 on {soon}\n35 on {later}"
    history = page.locator("#history").inner_text()
    assert "Welcome gift" in history and "Coffee purchase" in history and "Cookie" in history
    assert page.locator("#rewards").inner_text() == "Free coffee: 150 points · 10 more points to go"
    assert page.locator("#redemptions").inner_text().endswith("No redemptions yet.")
    assert "7777" not in body and "Bob" not in body


def test_other_member_and_signed_out_visitor(page, members):
    sign_in(page, "bob", "pw-bob-1", "/me/")
    assert page.locator("#balance").inner_text() == "7777 points available"
    assert "Welcome gift" not in page.locator("body").inner_text()
    submit(page, "text=Sign out")
    page.goto("/me/")
    assert "/accounts/login/" in page.url
    assert page.locator("h1").inner_text() == "Sign in"


def test_wrong_password_is_refused_on_the_form(page, members):
    sign_in(page, "alice", "wrong-password", "/me/")
    assert "/accounts/login/" in page.url
    assert "correct username and password" in page.locator("body").inner_text()


def test_member_finds_a_voucher_and_pages_back_through_older_history(page, members):
    from campaigns.models import Reward
    from campaigns.services import redemption_create
    from ledger.services import points_earn

    alice, _bob = members
    for n in range(1, 31):
        points_earn(member=alice, points=10, key=f"visit-{n}", description=f"Visit {n}")
    tea = Reward.objects.create(program=alice.program, code="tea", name="Tea", cost=200, vouchers="generated")
    voucher = redemption_create(key="tea-1", member=alice, reward=tea).voucher_code
    sign_in(page, "alice", "pw-alice-1", "/me/")
    assert page.locator("#redemptions tr").nth(1).inner_text().split("\t")[1:] == ["Tea", "200", "Captured", voucher]
    history = page.locator("#history").inner_text()
    # Newest first, 25 a page: the redemption, then visits 30 to 7.
    assert "Visit 30\t" in history and "Visit 7\t" in history and "Visit 6\t" not in history
    submit(page, "text=Older activity")
    older = page.locator("#history").inner_text()
    assert "Visit 6\t" in older and "Visit 1\t" in older and "Welcome gift" in older and "Visit 30" not in older
    assert page.locator("text=Older activity").count() == 0
    submit(page, "text=Newest activity")
    assert "Visit 30" in page.locator("#history").inner_text()


def test_member_redeems_a_reward_and_gets_its_voucher_code(page, members):
    from campaigns.models import Redemption, Reward

    alice, _bob = members
    Reward.objects.create(program=alice.program, code="cookie", name="Cookie", cost=40, vouchers="generated")
    sign_in(page, "alice", "pw-alice-1", "/me/")
    rewards = page.locator("#rewards").inner_text()
    assert "Cookie: 40 points · yours to redeem" in rewards and rewards.count("Redeem") == 1  # not the coffee
    submit(page, "#rewards button:has-text('Redeem')")
    code = Redemption.objects.get(member=alice).voucher_code
    said = page.locator(".messages .success").inner_text()
    assert said == f"You redeemed Cookie for 40 points. Your voucher code: {code}"
    assert page.locator("#balance").inner_text() == "100 points available"
    assert page.locator("#redemptions tr").nth(1).inner_text().split("\t")[1:] == ["Cookie", "40", "Captured", code]
