"""Admin: endpoints through the services, the delivery log, and Redeliver."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction
from django.urls import reverse

from webhooks.delivery import SIGNATURE_HEADER, deliveries_send_due
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import webhook_emit

from .conftest import verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_delivery(program, endpoint, receiver):
    receiver.statuses = [500]
    with transaction.atomic():
        webhook_emit(program_id=program.pk, type="reward.redeemed",
                     data={"member_id": "m-1", "redemption_id": "rdm_1", "points": 300})
    WebhookDelivery.objects.update(attempts=20)
    deliveries_send_due()
    WebhookDelivery.objects.update(status=WebhookDelivery.Status.FAILED)
    return WebhookDelivery.objects.get()


def test_pages_load(admin_client, failed_delivery):
    for model in (WebhookEndpoint, WebhookEvent, WebhookDelivery):
        name = model._meta.model_name
        assert admin_client.get(reverse(f"admin:webhooks_{name}_changelist")).status_code == 200, name
        obj = model.objects.first()
        assert admin_client.get(reverse(f"admin:webhooks_{name}_change", args=[obj.pk])).status_code == 200, name
    log = admin_client.get(reverse("admin:webhooks_webhookdelivery_changelist") + "?status=failed"
                           "&event__type=reward.redeemed")
    assert log.context["cl"].result_count == 1
    assert b"receiver says no" in log.content


def test_endpoint_page_shows_the_secret_read_only(admin_client, endpoint):
    response = admin_client.get(reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret.encode() in response.content
    assert "secret" not in response.context["adminform"].form.fields


def test_redeliver_sends_again(admin_client, failed_delivery, receiver, endpoint):
    receiver.statuses = [200]
    response = admin_client.post(reverse("admin:webhooks_webhookdelivery_changelist"), {
        "action": "redeliver", ACTION_CHECKBOX_NAME: [failed_delivery.pk]}, follow=True)
    assert response.status_code == 200
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == "pending"

    assert deliveries_send_due() == 1
    failed_delivery.refresh_from_db()
    assert (failed_delivery.status, failed_delivery.attempts) == ("succeeded", 22)
    first, last = receiver.requests[0], receiver.requests[-1]
    assert first.body == last.body
    verify(secret=endpoint.secret, header=last.headers[SIGNATURE_HEADER], body=last.body)


def test_create_endpoint_in_admin(admin_client, program):
    url = reverse("admin:webhooks_webhookendpoint_add")
    refused = admin_client.post(url, {"program": program.pk, "url": "ftp://hooks.example.com/x",
                                      "event_types": ["points.earned"]})
    assert refused.status_code == 200 and not WebhookEndpoint.objects.exists()
    created = admin_client.post(url, {"program": program.pk, "url": "https://hooks.example.com/x",
                                      "event_types": ["points.expired", "points.earned"]})
    assert created.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["points.earned", "points.expired"]
    assert endpoint.secret.startswith("whsec_") and endpoint.partner is None


def test_delete_endpoint_in_admin(admin_client, failed_delivery, endpoint):
    url = reverse("admin:webhooks_webhookendpoint_delete", args=[endpoint.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    assert WebhookEvent.objects.count() == 1
