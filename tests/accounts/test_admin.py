import datetime as dt
import re
import uuid

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Member, Partner, PartnerAPIKey
from accounts.services import partner_create
from ledger import services
from ledger.models import Balance, Entry, Operation

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(member):
    """A member with something in every ledger table, and a partner with a key."""
    services.points_earn(member=member, points=300, key="earn-1")
    services.points_redeem(member=member, points=50, key="redeem-1")
    services.points_hold(member=member, points=20, key="hold-1")
    partner_create(program=member.program, name="Till")
    return member


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def key_in(messages: list[str]) -> str:
    [key] = [match[1] for m in messages if (match := re.search(r"API key .* is: (\w+\.\w+)", m))]
    return key


def test_every_changelist_loads(admin_client, history):
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client.get(url).status_code == 200, url


def test_every_change_page_loads(admin_client, history):
    for model in admin.site._registry:
        obj = model._default_manager.order_by("pk").first()
        if obj is None:
            continue
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
        assert admin_client.get(url).status_code == 200, url


def test_member_changelist_does_not_query_per_member(admin_client, program, make_member):
    url = reverse("admin:accounts_member_changelist")
    make_member(program)
    admin_client.get(url)  # warm the caches (content types, session)
    with CaptureQueriesContext(connection) as one:
        assert admin_client.get(url).status_code == 200
    for _ in range(5):
        make_member(program)
    with CaptureQueriesContext(connection) as six:
        response = admin_client.get(url)
    assert len(six) == len(one)
    assert response.context["cl"].result_count == 6


def test_member_change_page_shows_balance_lots_and_latest_entries(admin_client, member):
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for n in range(55):
        services.points_earn(member=member, points=10, key=f"e{n}", now=start + dt.timedelta(hours=n))

    response = admin_client.get(reverse("admin:accounts_member_change", args=[member.pk]))

    assert response.status_code == 200
    formsets = {fs.opts.model.__name__: fs.formset for fs in response.context["inline_admin_formsets"]}
    assert formsets["Balance"].forms[0].instance.available == 550
    assert len(formsets["Lot"].forms) == 50
    entries = [form.instance for form in formsets["Entry"].forms]
    assert len(entries) == 50
    assert entries[0].operation.key == "e54"  # newest first
    assert reverse("admin:accounts_member_adjust", args=[member.pk]) in response.content.decode()


def test_member_search_and_filters(admin_client, program, make_member):
    make_member(program, external_id="alice-1", email="alice@example.com")
    make_member(program, external_id="bob-2", email="bob@example.com")
    url = reverse("admin:accounts_member_changelist")
    assert admin_client.get(url, {"q": "alice@"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "bob-2"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"status__exact": "active", "program__id__exact": program.pk}
                            ).context["cl"].result_count == 2


def test_member_added_in_the_admin_gets_a_balance(admin_client, program):
    response = admin_client.post(reverse("admin:accounts_member_add"), {
        "program": program.pk, "external_id": "walk-in-1", "email": "w@example.com", "attributes": "{}",
        "user": "",
    })
    assert response.status_code == 302
    member = Member.objects.get(program=program, external_id="walk-in-1")
    assert Balance.objects.filter(member=member, program=program).exists()
    assert member.status == "active"


def test_members_cannot_be_deleted_in_the_admin(admin_client, member):
    response = admin_client.post(reverse("admin:accounts_member_delete", args=[member.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert Member.objects.filter(pk=member.pk).exists()


# --- adjust points ---------------------------------------------------------------------------


def adjust(admin_client, member, points, reason="Goodwill", key=None):
    return admin_client.post(reverse("admin:accounts_member_adjust", args=[member.pk]), {
        "points": points, "reason": reason, "key": key or f"admin-adjust:{uuid.uuid4()}",
    })


def test_adjust_page_shows_a_form(admin_client, member):
    response = admin_client.get(reverse("admin:accounts_member_adjust", args=[member.pk]))
    assert response.status_code == 200
    assert response.context["form"]["key"].value().startswith("admin-adjust:")


def test_adjust_credits_and_debits_the_balance(admin_client, member):
    response = adjust(admin_client, member, 120, reason="Order arrived late")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:accounts_member_change", args=[member.pk])
    assert Balance.objects.get(member=member).available == 120

    adjust(admin_client, member, -20, reason="Duplicate credit")
    assert Balance.objects.get(member=member).available == 100
    entries = list(Entry.objects.filter(member=member).order_by("id").values_list("kind", "points", "description"))
    assert entries == [("adjust", 120, "Order arrived late"), ("adjust", -20, "Duplicate credit")]
    assert LogEntry.objects.filter(object_id=str(member.pk), change_message__contains="+120").exists()


def test_adjust_overdraw_shows_the_error_and_changes_nothing(admin_client, member):
    services.points_earn(member=member, points=30, key="earn-1")
    response = adjust(admin_client, member, -100)

    assert response.status_code == 200
    assert any("100 points to deduct, 30 available" in m for m in messages_of(response))
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.lifetime_earned) == (30, 30)
    assert Entry.objects.filter(member=member).count() == 1
    assert Operation.objects.filter(member=member, kind="adjust").count() == 0


def test_adjust_form_sent_twice_adjusts_once(admin_client, member):
    key = f"admin-adjust:{uuid.uuid4()}"
    adjust(admin_client, member, 40, key=key)
    response = adjust(admin_client, member, 40, key=key)
    assert any("already made" in m for m in messages_of(response))
    assert Balance.objects.get(member=member).available == 40


@pytest.mark.parametrize("data", [{"points": 0}, {"points": 5, "key": "made-up"}, {"points": "x"}])
def test_adjust_rejects_bad_input(admin_client, member, data):
    response = adjust(admin_client, member, **data)
    assert response.status_code == 200 and response.context["form"].errors
    assert not Entry.objects.filter(member=member).exists()


# --- partners and keys -------------------------------------------------------------------------


def test_partner_added_in_the_admin_gets_a_key_shown_once(admin_client, program):
    response = admin_client.post(reverse("admin:accounts_partner_add"), {"program": program.pk, "name": "Webshop"})
    assert response.status_code == 302
    partner = Partner.objects.get(program=program, name="Webshop")
    key = key_in(messages_of(response))
    assert PartnerAPIKey.objects.get_from_key(key).partner == partner


def test_api_key_created_in_the_admin_then_revoked(admin_client, program):
    partner, _key = partner_create(program=program, name="Till")
    response = admin_client.post(reverse("admin:accounts_partnerapikey_add"), {
        "partner": partner.pk, "name": "second key", "expiry_date_0": "", "expiry_date_1": "",
    })
    assert response.status_code == 302
    key = key_in(messages_of(response))
    api_key = PartnerAPIKey.objects.get(partner=partner, name="second key")
    assert PartnerAPIKey.objects.get_from_key(key) == api_key

    admin_client.post(reverse("admin:accounts_partnerapikey_changelist"), {
        "action": "revoke", "_selected_action": [api_key.pk],
    })
    api_key.refresh_from_db()
    assert api_key.revoked
    assert not PartnerAPIKey.objects.is_valid(key)


def test_api_key_list_shows_prefix_and_last_use(admin_client, program):
    partner, key = partner_create(program=program, name="Till")
    response = admin_client.get(reverse("admin:accounts_partnerapikey_changelist"))
    content = response.content.decode()
    assert key.split(".")[0] in content and "last used" in content.lower()
    assert key not in content


def test_member_change_page_saves_with_its_read_only_inlines(admin_client, history):
    page = admin_client.get(reverse("admin:accounts_member_change", args=[history.pk]))
    data = {"email": "new@example.com", "attributes": '{"vip": true}', "status": "suspended", "user": ""}
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{name}": value for name, value in formset.management_form.initial.items()})
        for form in formset.forms:
            data[f"{form.prefix}-{formset.model._meta.pk.name}"] = form.instance.pk

    response = admin_client.post(reverse("admin:accounts_member_change", args=[history.pk]), data)

    assert response.status_code == 302, response.context["errors"] if response.context else response
    history.refresh_from_db()
    assert (history.email, history.attributes, history.status) == ("new@example.com", {"vip": True}, "suspended")
    assert Balance.objects.get(member=history).available == 230


def test_member_change_page_does_not_query_per_row(admin_client, member):
    url = reverse("admin:accounts_member_change", args=[member.pk])
    services.points_earn(member=member, points=10, key="e-first")
    admin_client.get(url)  # warm the caches (content types, session)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for n in range(10):
        services.points_earn(member=member, points=10, key=f"e{n}")
    with CaptureQueriesContext(connection) as eleven:
        admin_client.get(url)
    assert len(eleven) == len(one)


@pytest.mark.parametrize("field", ["expiry_days", "pending_days"])
def test_a_policy_beyond_a_century_is_refused_and_a_century_earns(make_program, make_member, field):
    # Dates past year 9999 cannot be made: a program allowed 3,000,000 days could not earn at all.
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError, transaction

    from accounts.models import MAX_POLICY_DAYS

    program = make_program(**{field: MAX_POLICY_DAYS})
    program.full_clean()
    services.points_earn(member=make_member(program), points=10, key="e")
    setattr(program, field, MAX_POLICY_DAYS + 1)
    with pytest.raises(ValidationError) as refused:
        program.full_clean()
    assert field in refused.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():
        program.save()


@pytest.mark.parametrize("attributes, error", [
    ('["vip", "lisbon"]', "Attributes are a JSON object"),
    ('"vip"', "Attributes are a JSON object"),
    ("42", "Attributes are a JSON object"),
    ('{"note": "a\\u0000b"}', "Null characters (\\u0000) are not allowed."),
])
def test_member_attributes_the_api_would_refuse_are_a_form_error(admin_client, program, attributes, error):
    # Rules read member.attributes.<name>: anything but a storable object would fail them for that member.
    import html

    response = admin_client.post(reverse("admin:accounts_member_add"), {
        "program": program.pk, "external_id": "walk-in", "email": "", "attributes": attributes, "user": ""})
    assert response.status_code == 200
    assert error in html.unescape(response.content.decode())
    assert not Member.objects.filter(external_id="walk-in").exists()


def test_an_event_type_schema_with_a_nul_is_a_form_error(admin_client, program):
    from rules.models import EventType

    response = admin_client.post(reverse("admin:rules_eventtype_add"), {
        "program": program.pk, "name": "review_written", "description": "",
        "schema": '{"type": "object", "description": "a\\u0000b"}'})
    assert response.status_code == 200
    assert "Null characters" in response.content.decode()
    assert not EventType.objects.exists()
