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
