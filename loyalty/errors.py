"""Domain errors: raised by services, turned into the API's error envelope in one place."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule said no. ``code`` is stable and machine-readable."""

    code = "invalid_request"
    error_type = "invalid_request_error"
    status = 422

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class NotFound(DomainError):
    code = "resource_missing"
    error_type = "not_found"
    status = 404


class Conflict(DomainError):
    code = "conflict"
    error_type = "conflict"
    status = 409
