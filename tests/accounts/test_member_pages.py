import html
import re

from django.contrib.auth import get_user_model

from ledger.services import points_earn
from tests.html import cell_texts, element


def test_member_sees_only_their_own_points(client, program, make_member):
    users = get_user_model()
    alice = make_member(program, external_id="alice", user=users.objects.create_user("alice", password="pw-alice-1"))
    bob = make_member(program, external_id="bob", user=users.objects.create_user("bob", password="pw-bob-1"))
    points_earn(member=alice, points=120, key="a", description="Welcome gift")
    points_earn(member=bob, points=777, key="b")
    assert client.get("/me/").status_code == 302
    client.login(username="alice", password="pw-alice-1")
    page = client.get("/me/").content.decode()
    assert "120 points available" in page and "Welcome gift" in page
    assert "777" not in page


def test_login_without_membership_is_told_so(client, db):
    get_user_model().objects.create_user("staff", password="pw-staff-1")
    client.login(username="staff", password="pw-staff-1")
    assert client.get("/me/").status_code == 404


# --- rewards, redemptions and older history ---------------------------------------------------


def _signed_in(client, program, make_member, name="carol"):
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-1")
    member = make_member(program, external_id=name, user=user)
    client.login(username=name, password=f"pw-{name}-1")
    return member


def _rows(page: str, table_id: str) -> list[list[str]]:
    return cell_texts(element(page, "table", table_id))


def test_rewards_show_what_can_be_redeemed_now_and_what_is_missing(client, program, make_member):
    import datetime as dt

    from django.utils import timezone

    from campaigns.models import Reward, VoucherCode

    member = _signed_in(client, program, make_member)
    points_earn(member=member, points=100, key="e1")
    now = timezone.now()
    Reward.objects.create(program=program, code="mug", name="Mug", cost=80)
    Reward.objects.create(program=program, code="bag", name="Bag", cost=250)
    Reward.objects.create(program=program, code="gone", name="Sold-out cap", cost=50, stock=0)
    pool = Reward.objects.create(program=program, code="gift", name="Gift card", cost=60, vouchers="pool")
    VoucherCode.objects.create(reward=pool, code="ONLY-ONE")
    empty_pool = Reward.objects.create(program=program, code="empty", name="Empty pool", cost=70, vouchers="pool")
    assert empty_pool.codes.count() == 0
    Reward.objects.create(program=program, code="off", name="Switched off", cost=10, is_active=False)
    Reward.objects.create(program=program, code="later", name="Next month", cost=10,
                          active_from=now + dt.timedelta(days=3))
    Reward.objects.create(program=program, code="past", name="Last month", cost=10,
                          active_until=now - dt.timedelta(days=3))
    page = client.get("/me/").content.decode()
    rewards = [html.unescape(re.sub(r"<[^>]+>|\s+", " ", item)).split()
               for item in re.findall(r"<li>(.*?)</li>", element(page, "ul", "rewards"), re.S)]
    assert [" ".join(words) for words in rewards] == [
        "Sold-out cap: 50 points · out of stock",
        "Gift card: 60 points · yours to redeem Redeem",
        "Empty pool: 70 points · out of stock",
        "Mug: 80 points · yours to redeem Redeem",
        "Bag: 250 points · 150 more points to go",
    ]
    assert _redeem_form_codes(page) == ["gift", "mug"]


def test_redemptions_show_their_status_and_voucher_once_captured_and_only_the_members_own(
        client, program, make_member):
    from campaigns.models import Reward
    from campaigns.services import redemption_capture, redemption_create, redemption_void

    member = _signed_in(client, program, make_member)
    other = make_member(program, external_id="dave")
    points_earn(member=member, points=1000, key="e1")
    points_earn(member=other, points=1000, key="e2")
    coffee = Reward.objects.create(program=program, code="coffee", name="Coffee", cost=100, vouchers="generated")
    captured = redemption_create(key="r1", member=member, reward=coffee, quantity=2)
    held = redemption_create(key="r2", member=member, reward=coffee, capture=False)
    voided = redemption_create(key="r3", member=member, reward=coffee, capture=False)
    redemption_void(redemption=voided)
    redemption_create(key="r4", member=member, points=25, description="Donation")
    theirs = redemption_create(key="r5", member=other, reward=coffee)
    page = client.get("/me/").content.decode()
    rows = _rows(page, "redemptions")
    assert rows[0] == ["Date", "What", "Points", "Status", "Voucher code"]
    assert [row[1:] for row in rows[1:]] == [
        ["Donation", "25", "Captured", ""],
        ["Coffee", "100", "Voided", ""],
        ["Coffee", "100", "Held", ""],  # its code is shown once it is captured
        ["2 &times; Coffee", "200", "Captured", captured.voucher_code],
    ]
    assert theirs.voucher_code and theirs.voucher_code not in page
    redemption_capture(redemption=held)
    held.refresh_from_db()
    rows = _rows(client.get("/me/").content.decode(), "redemptions")
    assert rows[3][1:] == ["Coffee", "100", "Captured", held.voucher_code] and held.voucher_code


def test_history_pages_through_older_entries_of_the_member_only(client, program, make_member):
    member = _signed_in(client, program, make_member)
    other = make_member(program, external_id="erin")
    for n in range(1, 31):
        points_earn(member=member, points=n, key=f"e{n}", description=f"Visit {n}")
    points_earn(member=other, points=5, key="o1", description="Someone else's visit")
    first = client.get("/me/").content.decode()
    visits = [row[1] for row in _rows(first, "history")[1:]]
    assert visits == [f"Earn: Visit {n}" for n in range(30, 5, -1)]
    older = re.search(r'href="\?before=(\d+)" rel="next">Older activity', first).group(1)
    assert "Newest activity" not in first
    second = client.get(f"/me/?before={older}").content.decode()
    assert [row[1] for row in _rows(second, "history")[1:]] == [f"Earn: Visit {n}" for n in range(5, 0, -1)]
    assert "Older activity" not in second and "Newest activity" in second
    assert "Someone else" not in first + second
    others = str(other.entries.get().pk)
    for cursor in (others, "abc", "-1", "99999999999999999999999"):
        response = client.get(f"/me/?before={cursor}")
        assert response.status_code == 404, cursor
        assert "Someone else" not in response.content.decode()


# --- redeeming on the member pages ----------------------------------------------------------


def _redeem_form(page: str, reward: str) -> dict[str, str]:
    """The hidden fields of the page's Redeem form for ``reward``."""
    [form] = [form for form in re.findall(r'<form method="post" action="/me/redeem/".*?</form>', page, re.S)
              if f'name="reward" value="{reward}"' in form]
    return dict(re.findall(r'name="(\w+)" value="([^"]*)"', form))


def _messages(page: str) -> list[str]:
    return [html.unescape(re.sub(r"\s+", " ", text).strip())
            for text in re.findall(r'<li class="(?:success|error)">(.*?)</li>', page, re.S)]


def test_member_redeems_a_reward_once_however_often_the_form_is_sent(client, program, make_member):
    from campaigns.models import Redemption, Reward

    member = _signed_in(client, program, make_member)
    points_earn(member=member, points=250, key="e1")
    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=100, vouchers="generated")
    Reward.objects.create(program=program, code="bag", name="Bag", cost=300)
    page = client.get("/me/").content.decode()
    assert "bag" not in _redeem_form_codes(page)  # 50 more points to go: no button
    form = _redeem_form(page, "coffee")
    response = client.post("/me/redeem/", form, follow=True)
    redemption = Redemption.objects.get(member=member)
    assert (redemption.reward.code, redemption.points, redemption.status) == ("coffee", 100, "captured")
    assert _messages(response.content.decode()) == [
        f"You redeemed Coffee for 100 points. Your voucher code: {redemption.voucher_code}"]
    assert '<h2 id="balance">150 points available</h2>' in response.content.decode()
    again = client.post("/me/redeem/", form, follow=True)  # the same form again: a double click
    assert Redemption.objects.filter(member=member).count() == 1
    assert redemption.voucher_code in _messages(again.content.decode())[0]
    assert member.balance.__class__.objects.get(member=member).available == 150


def _redeem_form_codes(page: str) -> list[str]:
    return re.findall(r'name="reward" value="([^"]*)"', page)


def test_redeeming_what_cannot_be_redeemed_says_why_and_changes_nothing(client, program, make_program, make_member):
    from campaigns.models import Redemption, Reward
    from ledger.models import Balance

    member = _signed_in(client, program, make_member)
    points_earn(member=member, points=120, key="e1")
    Reward.objects.create(program=program, code="bag", name="Bag", cost=300)
    Reward.objects.create(program=program, code="cap", name="Cap", cost=10, stock=0)
    Reward.objects.create(program=make_program(), code="theirs", name="Not yours", cost=10)
    token = "a" * 32
    cases = {
        "bag": "300 points requested, 120 available.",
        "cap": "The reward 'cap' is out of stock.",
        "theirs": "No reward 'theirs'.",
    }
    for n, (code, message) in enumerate(cases.items()):
        response = client.post("/me/redeem/", {"reward": code, "token": f"{n}" * 32}, follow=True)
        assert _messages(response.content.decode()) == [message], code
    for form in ({"reward": "bag"}, {"reward": "bag", "token": "short"}, {"token": token},
                 {"reward": "x" * 100_000, "token": token}):  # never a reward's code: not echoed back
        response = client.post("/me/redeem/", form, follow=True)
        assert _messages(response.content.decode()) == ["That form is out of date: reload the page and try again."]
    assert not Redemption.objects.exists()
    assert Balance.objects.get(member=member).available == 120
    assert client.get("/me/redeem/").status_code == 405


def test_redeeming_needs_a_signed_in_member_and_the_pages_csrf_token(client, program, make_member):
    from django.test import Client

    from campaigns.models import Redemption, Reward

    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=10)
    response = client.post("/me/redeem/", {"reward": "coffee", "token": "b" * 32})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    member = make_member(program, external_id="frank",
                         user=get_user_model().objects.create_user("frank", password="pw-frank-1"))
    points_earn(member=member, points=50, key="e1")
    strict = Client(enforce_csrf_checks=True)
    strict.login(username="frank", password="pw-frank-1")
    assert strict.post("/me/redeem/", {"reward": "coffee", "token": "b" * 32}).status_code == 403
    assert not Redemption.objects.exists()


def test_the_programs_redemption_limit_applies_on_the_pages_too(client, make_program, make_member):
    from campaigns.models import Redemption, Reward

    program = make_program(redemption_limit_per_minute=2)
    member = _signed_in(client, program, make_member, name="gina")
    points_earn(member=member, points=100, key="e1")
    Reward.objects.create(program=program, code="sticker", name="Sticker", cost=1)
    said = [_messages(client.post("/me/redeem/", {"reward": "sticker", "token": f"{n}" * 32}, follow=True)
                      .content.decode())[0] for n in range(3)]
    assert said[:2] == ["You redeemed Sticker for 1 points."] * 2
    assert said[2] == "Too many redemptions in a short time: try again in a minute."
    assert Redemption.objects.filter(member=member).count() == 2


def test_a_double_click_under_the_redemption_limit_is_answered_as_the_first(client, make_program, make_member):
    # The second send of a form is the first redemption again: it answers as it, and counts nothing.
    from campaigns.models import Redemption, Reward

    program = make_program(redemption_limit_per_minute=1)
    member = _signed_in(client, program, make_member, name="rita")
    points_earn(member=member, points=500, key="e1")
    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=100)
    form = _redeem_form(client.get("/me/").content.decode(), "coffee")
    assert _messages(client.post("/me/redeem/", form, follow=True).content.decode()) == [
        "You redeemed Coffee for 100 points."]
    assert _messages(client.post("/me/redeem/", form, follow=True).content.decode()) == [
        "You redeemed Coffee for 100 points."]
    assert Redemption.objects.filter(member=member).count() == 1


def test_two_redeem_buttons_of_one_page_are_two_redemptions(client, program, make_member):
    from campaigns.models import Redemption, Reward

    member = _signed_in(client, program, make_member, name="tom")
    points_earn(member=member, points=500, key="e1")
    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=50)
    Reward.objects.create(program=program, code="mug", name="Mug", cost=80)
    page = client.get("/me/").content.decode()
    assert _messages(client.post("/me/redeem/", _redeem_form(page, "coffee"), follow=True).content.decode()) == [
        "You redeemed Coffee for 50 points."]
    assert _messages(client.post("/me/redeem/", _redeem_form(page, "mug"), follow=True).content.decode()) == [
        "You redeemed Mug for 80 points."]
    assert sorted(Redemption.objects.filter(member=member).values_list("reward__code", flat=True)) == ["coffee", "mug"]


def test_no_redeem_button_where_a_redemption_could_only_be_refused(client, program, make_member):
    from campaigns.models import Reward

    member = _signed_in(client, program, make_member, name="lena")
    points_earn(member=member, points=500, key="e1")
    Reward.objects.create(program=program, code="welcome-mug", name="Welcome mug", cost=50, per_member_limit=1)
    Reward.objects.create(program=program, code="coffee", name="Coffee", cost=50, per_member_limit=2)
    client.post("/me/redeem/", _redeem_form(client.get("/me/").content.decode(), "welcome-mug"))
    page = client.get("/me/").content.decode()
    assert _redeem_form_codes(page) == ["coffee"]
    assert "Welcome mug: 50 points &middot; you have taken the most allowed (1)" in " ".join(page.split())
    member.status = "suspended"
    member.save(update_fields=["status"])
    page = client.get("/me/").content.decode()
    assert _redeem_form_codes(page) == []
    assert "Your membership is suspended: it neither earns nor redeems points." in page
    assert "Coffee: 50 points &middot; not while your membership is suspended" in " ".join(page.split())
