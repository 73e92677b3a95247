import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from ledger import services
from ledger.models import Balance, Entry, Hold, Lot, Operation

pytestmark = pytest.mark.django_db

LEDGER_MODELS = (Entry, Lot, Balance, Hold, Operation)


@pytest.fixture
def history(member):
    services.points_earn(member=member, points=300, key="earn-1")
    services.points_redeem(member=member, points=50, key="redeem-1")
    services.points_hold(member=member, points=20, key="hold-1")
    return member


def url(model, view, *args):
    return reverse(f"admin:ledger_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda m: m.__name__)
def test_ledger_admin_is_read_only(model, admin_user):
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/")
    request.user = admin_user
    assert model_admin.has_view_permission(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda m: m.__name__)
def test_ledger_pages_show_but_refuse_writes(model, admin_client, history):
    obj = model.objects.filter(member=history).first()
    before = model.objects.count()

    assert admin_client.get(url(model, "changelist")).status_code == 200
    page = admin_client.get(url(model, "change", obj.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.get(url(model, "add")).status_code == 403
    assert admin_client.post(url(model, "add"), {}).status_code == 403
    assert admin_client.post(url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.count() == before


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda m: m.__name__)
def test_ledger_lists_search_by_member_external_id(model, admin_client, history, make_member):
    other = make_member(history.program)
    services.points_earn(member=other, points=5, key="other-earn")
    services.points_hold(member=other, points=5, key="other-hold")

    response = admin_client.get(url(model, "changelist"), {"q": history.external_id})

    members = {row.member_id for row in response.context["cl"].result_list}
    assert members == {history.pk}


def test_entry_list_filters_by_kind_and_program(admin_client, history, make_program, make_member):
    elsewhere = make_member(make_program())
    services.points_earn(member=elsewhere, points=5, key="earn-1")
    changelist = url(Entry, "changelist")

    redeems = admin_client.get(changelist, {"kind__exact": "redeem"}).context["cl"].result_list
    assert [(e.kind, e.points) for e in redeems] == [("redeem", -50)]
    in_program = admin_client.get(changelist, {"program__id__exact": history.program_id}).context["cl"].result_list
    assert {e.member_id for e in in_program} == {history.pk}


def test_operation_list_filters_by_kind(admin_client, history):
    response = admin_client.get(url(Operation, "changelist"), {"kind": "hold"})
    assert [op.key for op in response.context["cl"].result_list] == ["hold-1"]
