"""The API's JSON renderer writes what DRF's JSONRenderer writes; negotiation answers as DRF's."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import zoneinfo

import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers
from rest_framework.exceptions import ErrorDetail, NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from loyalty.api.negotiation import RememberingContentNegotiation
from loyalty.api.renderers import JSONRenderer

UTC = dt.UTC

VALUES = [
    {"available": 793, "expiring": [{"points": 118, "expires_at": dt.datetime(2027, 3, 5, 15, 26, 0, 69580, UTC)}]},
    {"at": dt.datetime(2027, 3, 5, 15, 26, tzinfo=UTC)},  # no microseconds
    {"at": dt.datetime(2027, 3, 5, 15, 26, 1, 5, zoneinfo.ZoneInfo("Europe/Lisbon"))},
    {"at": dt.datetime(2027, 3, 5, 15, 26, 1, 5, dt.timezone(dt.timedelta(hours=-3, minutes=-30)))},
    {"day": dt.date(2026, 2, 28), "time": dt.time(10, 30, 5, 12)},
    {"amount": decimal.Decimal("12.50"), "id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    {"message": gettext_lazy("This field is required."), "detail": ErrorDetail("Unknown field.", code="unknown_field")},
    {"name": "Café ☕ 東京", "quote": 'say "hi"\n\t\\', "empty": {}, "none": None, "flags": [True, False]},
    {"big": 2**70, "small": -(2**63), "limit": 2**64 - 1},
    {"float": 1.5, "nested": [[1, [2, [3, {"x": []}]]]]},
    [1, "two", None],
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_same_bytes_as_drf(value):
    drf = renderers.JSONRenderer().render(value, "application/json")
    assert JSONRenderer().render(value, "application/json") == drf


def test_what_neither_can_write_is_refused():
    with pytest.raises(TypeError):
        JSONRenderer().render({"x": object()}, "application/json")


def test_an_integer_beyond_64_bits_in_a_member_answer(api):
    created = api.post("/api/v1/members", {"external_id": "big-1", "attributes": {"n": 2**70}}, format="json")
    assert created.status_code == 201, created.content
    assert b'"n":1180591620717411303424' in api.get("/api/v1/members/big-1").content


ACCEPTS = [None, "*/*", "application/json", "application/json; indent=4", "application/*",
           "text/html;q=0.9, application/json;q=0.8", "text/html, */*;q=0.1", "application/json; charset=utf-8"]


def _request(accept, query=""):
    extra = {"HTTP_ACCEPT": accept} if accept is not None else {}
    return Request(APIRequestFactory().get(f"/api/v1/rewards{query}", **extra))


@pytest.mark.parametrize("accept", ACCEPTS)
def test_negotiation_answers_as_drf_twice(accept):
    drf = DefaultContentNegotiation().select_renderer(_request(accept), [JSONRenderer()])
    for _ in range(2):  # the first answer is worked out, the second remembered
        choices = [JSONRenderer()]
        renderer, media_type = RememberingContentNegotiation().select_renderer(_request(accept), choices)
        assert renderer is choices[0] and media_type == drf[1]


def test_refusals_every_time():
    for _ in range(2):
        with pytest.raises(NotAcceptable):
            RememberingContentNegotiation().select_renderer(_request("text/html"), [JSONRenderer()])


def test_not_acceptable_over_http(api):
    response = api.get("/api/v1/rewards", HTTP_ACCEPT="text/html")
    assert response.status_code == 406 and response.json()["error"]["code"] == "not_acceptable"
    indented = api.get("/api/v1/rewards", HTTP_ACCEPT="application/json; indent=4")
    assert indented.status_code == 200 and b"\n" not in indented.content
