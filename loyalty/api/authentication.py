from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from accounts.models import Partner, PartnerAPIKey, Program

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


# prefix -> (monotonic time read, row): keys, partners and programs as read in the last
# API_KEY_CACHE_SECONDS, so that most requests spend no query on authentication. Saving a key,
# partner or program empties it in this process at once; other processes see a revocation
# within API_KEY_CACHE_SECONDS. Each request gets instances of its own.
_rows: dict[str, tuple[float, tuple | None]] = {}
_MAX_ROWS = 10_000


def _key_by_prefix(prefix: str) -> PartnerAPIKey | None:
    ttl = settings.API_KEY_CACHE_SECONDS
    cached = _rows.get(prefix)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl:
        row = cached[1]
    else:
        row = PartnerAPIKey.objects.row_by_prefix(prefix)
        if ttl > 0 and row is not None:
            if len(_rows) >= _MAX_ROWS:
                _rows.clear()
            _rows[prefix] = (now, row)
    return PartnerAPIKey.objects.from_row(row) if row is not None else None


@receiver([post_save, post_delete], sender=PartnerAPIKey)
@receiver([post_save, post_delete], sender=Partner)
@receiver([post_save, post_delete], sender=Program)
def _forget(**kwargs) -> None:
    _rows.clear()


class PartnerKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <key>``: a partner's API key (stored hashed), scoped to one program.

    ``request.user`` is the Partner, ``request.auth`` the key. Last use is recorded at most once
    a minute per key, so reads stay reads.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Bearer <API key>'.")
        prefix = parts[1].partition(".")[0]
        api_key = _key_by_prefix(prefix) if prefix.isascii() and prefix.isalnum() else None
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
