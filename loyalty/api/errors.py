"""The one error shape of the API:
``{"error": {"type", "code", "message", "param"}}``."""

from __future__ import annotations

import logging
import math
import sys

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from loyalty.db import out_of_range, transient
from loyalty.errors import DomainError

logger = logging.getLogger(__name__)

_COMPACT = {"separators": (",", ":")}  # as the API's renderer writes JSON


def envelope(error_type: str, code: str, message: str, param: str | None = None) -> dict:
    return {"error": {"type": error_type, "code": code, "message": message, "param": param}}


def _first_error(detail, path: str = "") -> tuple[str, str, str | None]:
    """(message, code, param) of the first error in a DRF ValidationError detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _first_error(value, path)
            return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(detail, list) and detail:
        first = detail[0]
        if isinstance(first, dict | list):
            return _first_error(first, f"{path}.0" if path else "0")
        return _first_error(first, path)
    message = str(detail)
    code = getattr(detail, "code", None) or "invalid"
    return (f"{path}: {message}" if path else message), code, path or None


_CODES = {
    exceptions.ParseError: ("invalid_request_error", "invalid_json"),
    exceptions.AuthenticationFailed: ("authentication_error", "invalid_api_key"),
    exceptions.NotAuthenticated: ("authentication_error", "missing_api_key"),
    exceptions.PermissionDenied: ("permission_error", "forbidden"),
    exceptions.NotFound: ("not_found", "resource_missing"),
    exceptions.MethodNotAllowed: ("invalid_request_error", "method_not_allowed"),
    exceptions.NotAcceptable: ("invalid_request_error", "not_acceptable"),
    exceptions.UnsupportedMediaType: ("invalid_request_error", "unsupported_media_type"),
    exceptions.Throttled: ("rate_limit_error", "rate_limited"),
}


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        param = exc.param
        if exc.code == "idempotency_key_reused":
            # Below the API a reused key is an operation key; here it can only be the header's.
            param = "Idempotency-Key"
        return Response(envelope(exc.error_type, exc.code, exc.message, param), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such resource.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        message, code, param = _first_error(exc.detail)
        code = {"invalid": "invalid_field", "required": "missing_field", "null": "invalid_field"}.get(code, code)
        return Response(envelope("invalid_request_error", code, message, param), status=400)
    if isinstance(exc, exceptions.APIException):
        error_type, code = next(
            (value for cls, value in _CODES.items() if isinstance(exc, cls)), ("api_error", "api_error")
        )
        headers = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))  # the seconds DRF's message names
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = "Bearer"
        status = 401 if error_type == "authentication_error" else exc.status_code
        return Response(envelope(error_type, code, str(exc.detail)), status=status, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(envelope("invalid_request_error", "request_too_large",
                                 f"The request body is larger than {limit:,} bytes."), status=413)
    if out_of_range(exc):
        # A figure beyond what the ledger stores (points balances are 32-bit); nothing was written.
        logger.warning("value out of range in an API request: %s", exc)
        return Response(envelope("invalid_request_error", "value_out_of_range",
                                 "A number in this request, or a balance it would produce, is out of range."),
                        status=422)
    if transient(exc):
        logger.warning("database unavailable for an API request: %s", exc)
        return Response(_TRY_AGAIN, status=500, headers={"Retry-After": TRY_AGAIN_SECONDS})
    logger.exception("unhandled API error", exc_info=exc)
    return Response(envelope("api_error", "internal_error", "Something went wrong on our side."), status=500)


# A request the database failed for reasons of its own (``loyalty.db.transient``): still the
# contract's ``api_error`` (500), with its own code and a ``Retry-After``.
TRY_AGAIN_SECONDS = "1"
_TRY_AGAIN = envelope(
    "api_error", "try_again",
    "The database could not complete this request (a lost connection, a restart or a conflicting update). "
    "Send it again; a POST sent again with the same Idempotency-Key (an event, with the same event_id) "
    "is carried out at most once.",
)


def json_not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(envelope("not_found", "resource_missing", "No such resource."), status=404,
                            json_dumps_params=_COMPACT)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_server_error(request):
    """Django's 500 (``handler500``), for what escaped the views: the API's hottest reads answer
    around DRF (``loyalty.api.fastpath``), so a database failure there lands here."""
    if request.path.startswith("/api/"):
        if transient(sys.exc_info()[1]):
            return JsonResponse(_TRY_AGAIN, status=500, headers={"Retry-After": TRY_AGAIN_SECONDS},
                                json_dumps_params=_COMPACT)
        return JsonResponse(envelope("api_error", "internal_error", "Something went wrong on our side."), status=500,
                            json_dumps_params=_COMPACT)
    from django.views.defaults import server_error

    return server_error(request)
