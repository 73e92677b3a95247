"""The API's hottest reads, answered around DRF when the request is a plain one.

DRF's request and response machinery (its ``Request``, negotiation, permission and throttle
classes, ``Response`` and its rendering) costs a GET about as much CPU as the query it wraps
(``bench/RESULTS.md``). A view whose GET is hot may first try ``plain_get_key``: for a GET that
DRF would answer with its defaults (no query string, JSON accepted, a valid partner key under its
rate limit) it gives the key, and the view answers with ``json_ok``: the same bytes and headers as
DRF's answer. Anything else gets None and goes through DRF as before, errors included, so every
error keeps its one place (``loyalty.api.errors``). The checks are DRF's own: the same
authentication class, the same rate limit.
"""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.exceptions import AuthenticationFailed

from accounts.models import PartnerAPIKey
from loyalty.api.authentication import PartnerKeyAuthentication
from loyalty.api.ratelimit import RATE_LIMIT_COUNTED, key_rate_limit_hit
from loyalty.api.renderers import JSONRenderer
from loyalty.jsontext import unstorable

# What ``RememberingContentNegotiation`` answers with JSON and its defaults; other values, even
# ones that also end in JSON, go through DRF.
_PLAIN_ACCEPTS = frozenset((None, "", "*/*", "application/json"))
_authentication = PartnerKeyAuthentication()
_renderer = JSONRenderer()
_allow: dict[type, str] = {}  # view class -> its Allow header


def plain_get_key(request, path_values) -> PartnerAPIKey | None:
    """The partner key of a GET that DRF would answer with its defaults, counted against its rate
    limit; None when DRF must answer it. ``path_values``: the view's arguments from the URL, which
    must be storable text (``StrictQueryMixin`` answers 404 to the others). The key, its partner
    and its program are the ones the process's requests share: read them, never change them."""
    meta = request.META
    if (request.method != "GET" or meta.get("QUERY_STRING") or meta.get("HTTP_ACCEPT") not in _PLAIN_ACCEPTS
            or unstorable(path_values)):
        return None
    try:
        found = _authentication.authenticate(request, shared=True)  # read here, never changed
    except AuthenticationFailed:
        return None
    if found is None:
        return None
    key = found[1]
    wait = key_rate_limit_hit(key)
    # Should DRF answer it after all (over the limit: 429; no such member: 404), its throttle
    # takes this count instead of counting the request again.
    setattr(request, RATE_LIMIT_COUNTED, wait)
    return key if wait is None else None


def json_ok(data, view) -> HttpResponse:
    """200 with ``data`` as DRF's ``Response(data)`` from ``view`` would render it."""
    response = HttpResponse(_renderer.render(data), content_type="application/json")
    allow = _allow.get(type(view))
    if allow is None:
        allow = _allow[type(view)] = ", ".join(view.allowed_methods)
    response["Allow"] = allow
    return response
