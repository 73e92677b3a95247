from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.models import Member, Partner, PartnerAPIKey
from ledger.audit import run_audit
from ledger.models import Balance, Entry, Lot, Operation


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(command: str, **options) -> str:
    out = StringIO()
    call_command(command, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def snapshot() -> dict:
    return {
        "members": list(Member.objects.order_by("pk").values_list("pk", "external_id", "user_id")),
        "balances": list(Balance.objects.order_by("pk").values_list(
            "pk", "available", "pending", "held", "lifetime_earned", "lifetime_redeemed")),
        "entries": Entry.objects.count(),
        "lots": list(Lot.objects.order_by("pk").values_list("pk", "remaining")),
        "operations": Operation.objects.count(),
        "users": list(get_user_model().objects.order_by("pk").values_list("username", "password")),
    }


@pytest.mark.django_db
def test_seed_demo_twice_changes_nothing():
    first = run("seed_demo")
    before = snapshot()
    second = run("seed_demo")

    assert snapshot() == before
    assert run_audit() == []
    assert len(before["members"]) == 5 and len(before["balances"]) == 5
    assert before["entries"] == before["operations"] == 17
    assert "17 operations (17 new)" in first and "17 operations (0 new)" in second
    for output in (first, second):
        assert "admin / demo-admin-password" in output
        assert "demo / demo-customer-password" in output


@pytest.mark.django_db
def test_seed_demo_history_and_logins():
    run("seed_demo")
    balances = dict(Balance.objects.values_list("member__external_id", "available"))
    assert balances == {"demo-1": 342, "demo-2": 250, "demo-3": 1375, "demo-4": 109, "demo-5": 100}
    assert Entry.objects.filter(kind="redeem").count() == 1
    assert Entry.objects.filter(kind="adjust").count() == 1
    demo_1 = Member.objects.select_related("program", "user").get(external_id="demo-1")
    assert (demo_1.program.slug, demo_1.program.name, demo_1.program.expiry_days, demo_1.program.pending_days) == (
        "demo", "Demo Coffee", 365, 0)
    assert demo_1.user.username == "demo" and demo_1.user.check_password("demo-customer-password")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password("demo-admin-password")


@pytest.mark.django_db
def test_seed_demo_keeps_a_changed_password_unless_the_variable_is_set(monkeypatch):
    run("seed_demo")
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-by-the-operator")
    admin.save()

    output = run("seed_demo")
    admin.refresh_from_db()
    assert admin.check_password("changed-by-the-operator")
    assert "changed-by-the-operator" not in output and "set DEMO_ADMIN_PASSWORD to reset it" in output

    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "from-the-environment")
    output = run("seed_demo")
    admin.refresh_from_db()
    assert admin.check_password("from-the-environment")
    assert "from-the-environment" not in output


@pytest.mark.django_db
def test_seed_demo_second_program():
    run("seed_demo")
    run("seed_demo", slug="acme")
    acme = Member.objects.select_related("program", "user").get(program__slug="acme", external_id="demo-1")
    assert acme.program.name == "Acme"
    assert acme.user.username == "demo-acme"
    assert Member.objects.count() == 10
    assert run_audit() == []


def test_seed_demo_rejects_a_bad_slug():
    with pytest.raises(CommandError, match="not a valid slug"):
        run("seed_demo", slug="not a slug")


@pytest.mark.django_db
def test_create_partner_prints_a_working_key_last(program):
    output = run("create_partner", program=program.slug, name="Till System")

    key = output.splitlines()[-1]
    partner = Partner.objects.get(program=program, name="Till System")
    assert key.strip() == key and " " not in key
    assert key not in "\n".join(output.splitlines()[:-1])
    assert PartnerAPIKey.objects.is_valid(key)
    assert PartnerAPIKey.objects.get_from_key(key).partner == partner


@pytest.mark.django_db
def test_create_partner_unknown_program():
    with pytest.raises(CommandError, match="No program with slug 'nope'"):
        run("create_partner", program="nope", name="Till System")


@pytest.mark.django_db
def test_create_partner_same_name_twice(program):
    run("create_partner", program=program.slug, name="Till System")
    with pytest.raises(CommandError, match="already has a partner named 'Till System'"):
        run("create_partner", program=program.slug, name="Till System")
    assert Partner.objects.filter(program=program).count() == 1
    assert PartnerAPIKey.objects.filter(partner__program=program).count() == 1
