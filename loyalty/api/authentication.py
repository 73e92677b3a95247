from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.models import Partner, PartnerAPIKey, Program
from loyalty.db import model_copy

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


# prefix -> (monotonic time read, key): keys, with their partners and programs attached, as read in
# the last API_KEY_CACHE_SECONDS, so that most requests spend no query on authentication. Saving a
# key, partner or program empties it in this process at once; other processes see a revocation
# within API_KEY_CACHE_SECONDS. Each request gets copies of its own (``model_copy``).
_keys: dict[str, tuple[float, PartnerAPIKey]] = {}
_MAX_KEYS = 10_000


def _key_by_prefix(prefix: str, *, shared: bool = False) -> PartnerAPIKey | None:
    """The key, with its partner and program; with ``shared``, the cached objects themselves, for a
    caller that only reads them (no copies: a third of a cached authentication's cost)."""
    ttl = settings.API_KEY_CACHE_SECONDS
    cached = _keys.get(prefix)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl:
        return cached[1] if shared else _copied(cached[1])
    row = PartnerAPIKey.objects.row_by_prefix(prefix)
    if row is None:
        return None
    key = PartnerAPIKey.objects.from_row(row)
    if ttl <= 0:
        return key
    if len(_keys) >= _MAX_KEYS:
        _keys.clear()
    _keys[prefix] = (now, key)
    return key if shared else _copied(key)


def _copied(key: PartnerAPIKey) -> PartnerAPIKey:
    """A copy of the key, attached to copies of its partner and program."""
    program = model_copy(key.partner.program)
    partner = model_copy(key.partner)
    partner.program = program
    copy = model_copy(key)
    copy.partner = partner
    return copy


@receiver([post_save, post_delete], sender=PartnerAPIKey)
@receiver([post_save, post_delete], sender=Partner)
@receiver([post_save, post_delete], sender=Program)
def _forget(**kwargs) -> None:
    forget_keys()


def forget_keys() -> None:
    """Read every key, with its partner and program, anew on its next request in this process."""
    _keys.clear()


class PartnerKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <key>``: a partner's API key (stored hashed), scoped to one program.

    ``request.user`` is the Partner, ``request.auth`` the key. Last use is recorded at most once
    a minute per key, so reads stay reads.
    """

    keyword = "Bearer"

    def authenticate(self, request, *, shared: bool = False):
        """(partner, key) of the request's bearer key, None without one, AuthenticationFailed for
        a bad one. With ``shared``, the key and partner may be the ones every request of this
        process reads (``_key_by_prefix``): the caller must not change them."""
        # From the WSGI environment (a latin-1 str), not ``request.headers``, which DRF's
        # ``get_authorization_header`` would build from every header of the request.
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":  # the scheme is case-insensitive (RFC 9110)
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Bearer <API key>'.")
        prefix = parts[1].partition(".")[0]
        api_key = _key_by_prefix(prefix, shared=shared) if prefix.isascii() and prefix.isalnum() else None
        # The secret part is checked against the stored hash by the key library itself.
        if api_key is None or not api_key.is_valid(parts[1]):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked or api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has been revoked or has expired.")
        if not api_key.partner.is_active:
            raise exceptions.AuthenticationFailed("This partner is disabled.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            PartnerAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            _forget()
        return api_key.partner, api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class IsPartner(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, PartnerAPIKey)


class PartnerKeyScheme(OpenApiAuthenticationExtension):
    target_class = PartnerKeyAuthentication
    name = "partnerKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A partner API key: `Authorization: Bearer <key>`."}
