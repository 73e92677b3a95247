"""Authentication reads a key (with its partner and program) at most once per
API_KEY_CACHE_SECONDS per process; a change saved in the process is seen at once."""

from __future__ import annotations

import time

from rest_framework.test import APIClient

from accounts.models import PartnerAPIKey
from accounts.services import partner_create


def _client(program):
    partner, key = partner_create(program=program, name="POS")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, PartnerAPIKey.objects.get(partner=partner)


def test_a_revocation_saved_here_is_seen_at_once(db, program, make_member, settings):
    settings.API_KEY_CACHE_SECONDS = 60
    make_member(program, external_id="c-1")
    client, key = _client(program)
    assert client.get("/api/v1/members/c-1/balance").status_code == 200
    key.revoked = True
    key.save()
    assert client.get("/api/v1/members/c-1/balance").status_code == 401


def test_a_revocation_made_elsewhere_is_seen_within_the_cache_seconds(db, program, make_member, settings):
    settings.API_KEY_CACHE_SECONDS = 1
    make_member(program, external_id="c-1")
    client, key = _client(program)
    assert client.get("/api/v1/members/c-1/balance").status_code == 200
    # As another process would revoke it: no signal reaches this one.
    PartnerAPIKey.objects.filter(pk=key.pk).update(revoked=True)
    deadline = time.monotonic() + 1.5
    while client.get("/api/v1/members/c-1/balance").status_code == 200:
        assert time.monotonic() < deadline, "the revoked key still works after API_KEY_CACHE_SECONDS"
        time.sleep(0.05)
    assert client.get("/api/v1/members/c-1/balance").status_code == 401


def test_without_the_cache_every_request_reads_the_key(db, program, make_member, settings):
    settings.API_KEY_CACHE_SECONDS = 0
    make_member(program, external_id="c-1")
    client, key = _client(program)
    assert client.get("/api/v1/members/c-1/balance").status_code == 200
    PartnerAPIKey.objects.filter(pk=key.pk).update(revoked=True)
    assert client.get("/api/v1/members/c-1/balance").status_code == 401


def test_each_request_gets_its_own_key_partner_and_program(db, program, settings):
    """The cached key is copied for each request: what one request does to its instances is not
    seen by the next."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from loyalty.api.authentication import PartnerKeyAuthentication

    settings.API_KEY_CACHE_SECONDS = 60
    partner, key = partner_create(program=program, name="POS")

    def authenticate():
        request = APIRequestFactory().get("/api/v1/rewards", HTTP_AUTHORIZATION=f"Bearer {key}")
        return PartnerKeyAuthentication().authenticate(Request(request))

    authenticate()  # reads the key, records its first use (which empties the cache)
    authenticate()  # reads it into the cache
    first_partner, first_key = authenticate()
    first_partner.program.name = "changed by a request"
    first_key.name = "changed by a request"
    second_partner, second_key = authenticate()
    assert second_key is not first_key and second_partner is not first_partner
    assert second_partner.program is not first_partner.program
    assert (second_key.pk, second_partner.pk, second_partner.program.pk) == (first_key.pk, partner.pk, program.pk)
    assert second_key.partner is second_partner and second_key.name != "changed by a request"
    assert second_partner.program.name == program.name
    assert not second_key._state.adding and second_key._state.db == "default"
