"""The balance read's way around DRF (``loyalty.api.fastpath``): a plain GET gets exactly what DRF
would answer, and every other request is answered by DRF itself, errors included."""

from __future__ import annotations

import pytest

from accounts.services import partner_create
from tests.api.fixtures import assert_error, bare_client, client_for, earn

PATH = "/api/v1/members/fp-1/balance"
SAME_EVERY_TIME = ("Content-Type", "Allow", "Vary", "X-Frame-Options", "X-Content-Type-Options",
                   "Referrer-Policy", "Cross-Origin-Opener-Policy", "Content-Length")


@pytest.fixture
def funded(program, make_member):
    member = make_member(program, external_id="fp-1")
    earn(member, 120)
    earn(member, 30)
    return member


def headers(response) -> dict:
    return {name: response.get(name) for name in SAME_EVERY_TIME}


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json"])
def test_a_plain_read_skips_drf_and_answers_what_drf_answers(program, funded, through_drf, accept):
    client = client_for(program)
    extra = {} if accept is None else {"HTTP_ACCEPT": accept}
    fast = client.get(PATH, **extra)
    assert through_drf == []
    # "application/*" is answered with JSON too, but only DRF's negotiation knows that.
    slow = client.get(PATH, HTTP_ACCEPT="application/*")
    assert through_drf == [PATH]
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert headers(fast) == headers(slow)
    assert fast.json()["available"] == 150 and [lot["points"] for lot in fast.json()["expiring"]] == [120, 30]


def test_another_programs_member_is_404_through_drf(program, funded, make_program, through_drf):
    other = client_for(make_program(), "Other")
    assert_error(other.get(PATH), 404, "member_not_found")
    assert through_drf == [PATH]


@pytest.mark.parametrize("case", ["no key", "unknown key", "not bearer", "revoked", "partner disabled"])
def test_authentication_failures_are_drfs_401(program, funded, through_drf, case):
    partner, key = partner_create(program=program, name="Till")
    client = bare_client(key)
    if case == "no key":
        client = bare_client()
    elif case == "unknown key":
        client = bare_client(key[:-4] + "zzzz")
    elif case == "not bearer":
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    elif case == "revoked":
        partner.api_keys.update(revoked=True)
    else:
        partner.is_active = False
        partner.save()
    response = client.get(PATH)
    assert_error(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"
    assert through_drf == [PATH]


@pytest.mark.parametrize("path, status", [
    (PATH + "?limit=5", 400),  # no query parameters on this endpoint
    ("/api/v1/members/ghost/balance", 404),
    ("/api/v1/members/fp%00x/balance", 404),  # a NUL cannot be an external id
])
def test_unusual_requests_are_drfs(program, funded, through_drf, path, status):
    response = client_for(program).get(path)
    assert_error(response, status)
    assert through_drf


def test_an_unacceptable_accept_is_drfs_406(program, funded, through_drf):
    response = client_for(program).get(PATH, HTTP_ACCEPT="text/html")
    assert_error(response, 406, "not_acceptable", error_type="invalid_request_error")
    assert through_drf == [PATH]


def test_other_methods_are_drfs(program, funded, through_drf):
    client = client_for(program)
    assert client.head(PATH).status_code == 200
    assert_error(client.post(PATH, {}, format="json"), 405, error_type="invalid_request_error")
    assert through_drf == [PATH, PATH]
