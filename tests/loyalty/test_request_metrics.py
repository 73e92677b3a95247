"""The HTTP series at /metrics: latency and responses by view, method and status; exceptions."""

import logging
import re

import pytest
from django.http import JsonResponse
from django.test import Client
from django.urls import include, path

pytestmark = pytest.mark.django_db


def boom(request):
    raise LookupError("a view that fails")


def fine(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("boom", boom, name="boom"), path("fine", fine, name="fine"), path("", include("loyalty.urls"))]


def sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.urls(__name__)
def test_requests_are_timed_and_counted_by_view_method_and_status(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/fine").status_code == 200
    assert client.post("/fine").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    after = scrape(client)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    latency = "django_http_requests_latency_seconds_by_view_method_count"
    assert delta(latency, view="fine", method="GET") == 3
    assert delta(latency, view="fine", method="POST") == 1
    assert delta("django_http_requests_latency_seconds_by_view_method_bucket", view="fine", method="GET",
                 le="+Inf") == 3
    responses = "django_http_responses_total_by_status_view_method_total"
    assert delta(responses, status="200", view="fine", method="GET") == 3
    assert delta(responses, status="404", view="<unnamed view>", method="GET") == 1
    # The series django-prometheus's own middlewares would add are not kept up (nor exported).
    assert "django_http_requests_total_by_method" not in after
    assert "django_http_responses_body_total_bytes" not in after


@pytest.mark.urls(__name__)
def test_an_exception_in_a_view_is_counted_with_its_500():
    client = Client(raise_request_exception=False)
    before = scrape(client)
    assert client.get("/boom").status_code == 500
    after = scrape(client)
    assert sample(after, "django_http_exceptions_total_by_type_total", type="LookupError") - sample(
        before, "django_http_exceptions_total_by_type_total", type="LookupError") == 1
    assert sample(after, "django_http_exceptions_total_by_view_total", view="boom") - sample(
        before, "django_http_exceptions_total_by_view_total", view="boom") == 1
    assert sample(after, "django_http_responses_total_by_status_view_method_total", status="500", view="boom",
                  method="GET") - sample(before, "django_http_responses_total_by_status_view_method_total",
                                         status="500", view="boom", method="GET") == 1


@pytest.mark.urls(__name__)
def test_a_4xx_answer_is_not_logged_and_a_5xx_is_with_its_traceback(client, caplog):
    # LOG_LEVEL_REQUESTS (default ERROR): the access log lists every answer; Django's request log
    # keeps the server's faults only.
    client.raise_request_exception = False
    with caplog.at_level(logging.DEBUG, logger="loyalty"):
        assert client.get("/no-such-page").status_code == 404
        assert client.post("/api/v1/redemptions", data={}, content_type="application/json").status_code == 401
        assert client.get("/boom").status_code == 500
    logged = [record for record in caplog.records if record.name == "django.request"]
    assert [(record.levelno, record.exc_info is not None) for record in logged] == [(logging.ERROR, True)]
    assert "/boom" in logged[0].getMessage()
