"""What makes an event valid: its envelope, then its properties against its type's JSON Schema.

Built-in types have schemas here; programs declare custom types (``EventType``) with their own.
One function, ``event_clean``, serves the single endpoint, batches and reprocessing alike.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

import jsonschema_rs
import referencing
import referencing.exceptions
from django.utils.dateparse import parse_datetime
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from loyalty.errors import DomainError

DECIMAL = {"type": "string", "pattern": r"^\d{1,12}(\.\d{1,4})?$"}
ITEM = {
    "type": "object",
    "required": ["sku", "quantity"],
    "properties": {
        "sku": {"type": "string", "minLength": 1, "maxLength": 128},
        "category": {"type": "string", "maxLength": 128},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100000},
        "unit_price": DECIMAL,
    },
}
BUILTIN_SCHEMAS: dict[str, dict] = {
    "purchase": {
        "type": "object",
        "required": ["order_id", "amount", "currency"],
        "properties": {
            "order_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "amount": DECIMAL,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "channel": {"type": "string", "maxLength": 64},
            "items": {"type": "array", "maxItems": 500, "items": ITEM},
        },
    },
    "refund": {
        "type": "object",
        "required": ["order_id"],
        "properties": {
            "order_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "amount": DECIMAL,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {"type": "array", "maxItems": 500, "items": ITEM},
        },
    },
    "signup": {"type": "object"},
}
ENVELOPE_FIELDS = {"event_id", "type", "member_id", "occurred_at", "properties"}
_EVENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,255}\Z")  # \Z: "$" would take a trailing newline
_NOT_A_MEMBER_ID = re.compile(r"[/\s]")  # Python's \s: what ``accounts.api`` refuses in an external id
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")


class EventInvalid(DomainError):
    """An event that cannot be processed; it is kept as ``rejected`` with this error."""

    code = "invalid_event"
    status = 400


class MemberNotFound(EventInvalid):
    code = "member_not_found"
    error_type = "not_found"
    status = 404


@dataclass(frozen=True)
class CleanEvent:
    event_id: str
    type: str
    member_id: str
    occurred_at: dt.datetime
    properties: dict

    @property
    def order_id(self) -> str:
        return str(self.properties.get("order_id", "")) if self.type in ("purchase", "refund") else ""


def schema_check(schema: dict) -> None:
    """Raise ValueError when ``schema`` is not a valid JSON Schema, or one events cannot be
    validated against (a pattern that is not an ECMA 262 regex, a ``$ref`` outside the schema)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"Not a valid JSON Schema: {exc.message}") from exc
    try:
        jsonschema_rs.Draft202012Validator(schema, offline=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise ValueError(f"Not a usable JSON Schema: {str(exc).splitlines()[0]}") from exc


def _no_download(uri: str):
    raise referencing.exceptions.NoSuchResource(ref=uri)


_validators: dict[str, object] = {}
_validators_by_id: dict[int, tuple[dict, object]] = {}  # schemas are never changed in place


def _validator(schema: dict):
    """The compiled validator of ``schema``: jsonschema-rs (a hundred times faster than the
    pure-Python validator on an event), offline, so a ``$ref`` to a URL is never fetched. A schema
    it cannot compile (a pattern only Python's ``re`` reads...) is validated by jsonschema."""
    # The same schema object comes back for every event (a built-in type's constant, or the
    # program's cached custom schemas): found by identity first, without serialising it.
    known = _validators_by_id.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    key = json.dumps(schema, sort_keys=True)
    validator = _validators.get(key)
    if validator is None:
        try:
            validator = jsonschema_rs.Draft202012Validator(schema, offline=True)
        except (jsonschema_rs.ValidationError, ValueError):  # saved before schema_check refused it
            validator = Draft202012Validator(schema, registry=referencing.Registry(retrieve=_no_download))
        if len(_validators) < 1000:
            _validators[key] = validator
    if len(_validators_by_id) >= 1000:
        _validators_by_id.clear()
    _validators_by_id[id(schema)] = (schema, validator)  # holding the schema keeps its id from being reused
    return validator


def _first_error(schema: dict, properties: dict) -> tuple[str, str] | None:
    """(path, message) of the first error of ``properties``, by path; None when they are valid."""
    validator = _validator(schema)
    try:
        if validator.is_valid(properties):
            return None
    except referencing.exceptions.Unresolvable as exc:  # a stored schema with a $ref to elsewhere
        raise EventInvalid(f"The event type's schema cannot be used: it refers to {exc.ref!r}, which is not "
                           "part of the schema. Fix the event type, then reprocess the event.",
                           param="type", code="invalid_event_type") from exc
    if isinstance(validator, Draft202012Validator):
        errors = [(list(error.absolute_path), error.message) for error in validator.iter_errors(properties)]
    else:
        errors = [(list(error.instance_path), error.message) for error in validator.iter_errors(properties)]
    if not errors:
        return "", "is not valid under the event type's schema"
    path, message = min(errors, key=lambda error: [(isinstance(part, int), part) for part in error[0]])
    return ".".join(str(part) for part in path), message


def _timestamp(text: str) -> dt.datetime | None:
    """``text`` as an aware or naive datetime; None when it is not ISO 8601. ``EventInvalid`` when
    it is, but names no instant that exists in UTC (the 30th of February, 24:00, an offset of a
    day or more, year 1 ahead of UTC)."""
    try:
        parsed = parse_datetime(text)
        if parsed is not None and parsed.tzinfo is not None:
            parsed.astimezone(dt.UTC)
        return parsed
    except (ValueError, OverflowError) as exc:
        raise EventInvalid(f"occurred_at names no time that exists ({exc}).", param="occurred_at",
                           code="invalid_field") from exc


def event_clean(payload: object, *, custom_schemas: dict[str, dict], now: dt.datetime,
                max_age_days: int | None = None, received_at: dt.datetime | None = None) -> CleanEvent:
    """Check one event; raise ``EventInvalid`` with a code and the offending field. With
    ``max_age_days`` (the program's ``event_max_age_days``), an event that happened longer ago is
    ``event_too_old``. An event without ``occurred_at`` happened when it was received:
    ``received_at``, or ``now`` for one being received."""
    if not isinstance(payload, dict):
        raise EventInvalid("An event must be a JSON object.")
    unknown = sorted(set(payload) - ENVELOPE_FIELDS)
    if unknown:
        raise EventInvalid(f"Unknown field: {unknown[0]}.", param=unknown[0], code="unknown_field")
    for name in ("event_id", "type", "member_id"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise EventInvalid(f"{name} is required and must be a non-empty string.", param=name,
                               code="missing_field" if name not in payload else "invalid_field")
    if not _EVENT_ID.match(payload["event_id"]):
        raise EventInvalid("event_id must be 1-255 characters of letters, digits and . _ : -.",
                           param="event_id", code="invalid_field")
    if len(payload["member_id"]) > 255:
        raise EventInvalid("member_id is longer than 255 characters.", param="member_id", code="invalid_field")
    if _NOT_A_MEMBER_ID.search(payload["member_id"]):
        # What POST /members refuses too: such a member could never be reached at /members/{external_id}.
        raise EventInvalid("member_id must not contain '/' or white space.", param="member_id", code="invalid_field")
    event_type = payload["type"]
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise EventInvalid("type must be lower-case letters, digits and underscores.", param="type",
                           code="invalid_field")
    occurred_raw = payload.get("occurred_at")
    occurred_at = _timestamp(occurred_raw) if isinstance(occurred_raw, str) else None
    if occurred_raw is None:
        occurred_at = received_at or now
    elif occurred_at is None or occurred_at.tzinfo is None:
        raise EventInvalid("occurred_at must be an ISO 8601 timestamp with a time zone.", param="occurred_at",
                           code="invalid_field")
    elif occurred_at > now + dt.timedelta(minutes=5):
        raise EventInvalid("occurred_at is in the future.", param="occurred_at", code="invalid_field")
    elif max_age_days is not None and occurred_at < now - dt.timedelta(days=max_age_days):
        raise EventInvalid(f"occurred_at is more than {max_age_days} days ago: this program takes events of the "
                           f"last {max_age_days} days.", param="occurred_at", code="event_too_old")
    properties = payload.get("properties", {})
    if not isinstance(properties, dict):
        raise EventInvalid("properties must be an object.", param="properties", code="invalid_field")
    schema = BUILTIN_SCHEMAS.get(event_type)
    if schema is None:
        schema = custom_schemas.get(event_type)
    if schema is None:
        raise EventInvalid(f"Unknown event type {event_type!r}.", param="type", code="unknown_event_type")
    error = _first_error(schema, properties)
    if error is not None:
        where, message = error
        param = f"properties.{where}" if where else "properties"
        raise EventInvalid(f"{param}: {message}", param=param, code="invalid_properties")
    return CleanEvent(payload["event_id"], event_type, payload["member_id"], occurred_at, properties)
