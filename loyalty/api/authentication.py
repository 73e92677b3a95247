from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from accounts.models import PartnerAPIKey

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


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
        # One query for the key, its partner and its program; the secret part is checked against
        # the stored hash by the key library itself.
        prefix = parts[1].partition(".")[0]
        api_key = (PartnerAPIKey.objects.select_related("partner__program")
                   .filter(prefix=prefix).first() if prefix.isascii() and prefix.isalnum() else None)
        if api_key is None or not api_key.is_valid(parts[1]):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked or api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has been revoked or has expired.")
        if not api_key.partner.is_active:
            raise exceptions.AuthenticationFailed("This partner is disabled.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            PartnerAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
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
