from django.contrib.auth import get_user_model

from ledger.services import points_earn


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
    """The text of each cell of the table's rows, header first."""
    import re

    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S).group(1)
    return [[re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


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
    import re

    rewards = [re.sub(r"\s+", " ", item).strip()
               for item in re.findall(r"<li>(.*?)</li>", page.split('id="rewards"')[1].split("</ul>")[0], re.S)]
    assert rewards == [
        "Sold-out cap: 50 points &middot; out of stock",
        "Gift card: 60 points &middot; yours to redeem",
        "Empty pool: 70 points &middot; out of stock",
        "Mug: 80 points &middot; yours to redeem",
        "Bag: 250 points &middot; 150 more points to go",
    ]


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
    import re

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
