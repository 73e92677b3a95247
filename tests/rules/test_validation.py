"""rules.validation: event properties against their type's JSON Schema. Pure: no database."""

import datetime as dt
import http.server
import json
import threading

import pytest

from rules.validation import EventInvalid, event_clean, schema_check

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def purchase(**properties):
    return {"event_id": "e1", "type": "purchase", "member_id": "m1",
            "properties": {"order_id": "o1", "amount": "12.50", "currency": "EUR", **properties}}


def rejected(payload, custom_schemas=None) -> EventInvalid:
    with pytest.raises(EventInvalid) as caught:
        event_clean(payload, custom_schemas=custom_schemas or {}, now=NOW)
    return caught.value


def test_a_valid_purchase_passes():
    clean = event_clean(purchase(items=[{"sku": "A", "quantity": 2, "unit_price": "1.25"}]),
                        custom_schemas={}, now=NOW)
    assert (clean.type, clean.properties["amount"]) == ("purchase", "12.50")


@pytest.mark.parametrize(("amount", "why"), [
    ("12\n", "a trailing newline"),
    ("١٢", "digits that are not ASCII"),
    ("1e3", "an exponent"),
    (" 12", "a leading space"),
])
def test_amounts_are_plain_ascii_decimals(amount, why):
    error = rejected(purchase(amount=amount))
    assert (error.code, error.param) == ("invalid_properties", "properties.amount"), why


def test_the_first_error_by_path_is_reported():
    error = rejected(purchase(amount="x", items=[{"sku": "", "quantity": 0}]))
    assert error.param == "properties.amount"
    error = rejected(purchase(items=[{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 0}]))
    assert error.param == "properties.items.1.quantity"
    assert "0" in error.message and "minimum" in error.message


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "nonsense"}, "Not a valid JSON Schema"),
    ({"type": "object", "properties": {"code": {"type": "string", "pattern": r"^A\Z"}}}, "Not a usable JSON Schema"),
    ({"$ref": "http://127.0.0.1:9/schema.json"}, "Not a usable JSON Schema"),
])
def test_schemas_events_cannot_be_checked_against_are_refused(schema, message):
    with pytest.raises(ValueError, match=message):
        schema_check(schema)


def test_a_stored_schema_the_fast_validator_cannot_compile_still_validates():
    """A custom type saved before its pattern was refused keeps working, through jsonschema."""
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": r"^A\d\Z"}}}
    payload = {"event_id": "e1", "type": "scan", "member_id": "m1"}
    assert event_clean({**payload, "properties": {"code": "A1"}}, custom_schemas={"scan": schema}, now=NOW)
    error = rejected({**payload, "properties": {"code": "B1"}}, custom_schemas={"scan": schema})
    assert (error.code, error.param) == ("invalid_properties", "properties.code")


def test_a_remote_reference_is_never_fetched():
    hits = []

    class Schema(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            hits.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Schema)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/x.json"
        schema = {"type": "object", "properties": {"x": {"$ref": url}}}
        with pytest.raises(ValueError, match="Not a usable JSON Schema"):
            schema_check(schema)
        # One stored before such schemas were refused rejects the event (kept, to be reprocessed).
        payload = {"event_id": "e1", "type": "scan", "member_id": "m1", "properties": {"x": 1}}
        error = rejected(payload, custom_schemas={"scan": schema})
        assert (error.code, error.param) == ("invalid_event_type", "type") and url in error.message
    finally:
        server.shutdown()
    assert hits == []
