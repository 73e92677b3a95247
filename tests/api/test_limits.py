"""What the API answers at its limits: a body too large to read, and figures beyond what the ledger
stores. Each is a clear error in the envelope; nothing changes, except that an event is kept."""

from __future__ import annotations

import json

import pytest

from ledger.audit import run_audit
from ledger.models import Balance
from rules.models import InboundEvent
from tests.api.fixtures import assert_error, earn, purchase, snapshot, spend_rule

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_of_a_thousand_events_of_many_lines_is_accepted(api, program, make_member):
    """Such a batch is larger than Django's default limit on a body (2.5 MB)."""
    member = make_member(program, external_id="c-1")
    items = [{"sku": f"SKU-{j}", "category": "misc", "quantity": 1, "unit_price": "1.00"} for j in range(50)]
    events = [purchase(f"big-{i}", member.external_id, "50.00", items=items) for i in range(1000)]
    body = json.dumps({"events": events})
    assert len(body) > 2_500_000
    response = api.post("/api/v1/events/batch", body, content_type="application/json")
    assert response.status_code == 202, response.content[:300]
    assert response.json()["accepted"] == 1000


def test_a_body_over_the_limit_is_413_and_changes_nothing(api, program, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    before = snapshot(program)
    body = json.dumps({"external_id": "c-9", "attributes": {"note": "x" * 20_000}})
    response = api.post("/api/v1/members", body, content_type="application/json")
    assert_error(response, 413, "request_too_large", error_type="invalid_request_error")
    assert "10,000 bytes" in response.json()["error"]["message"]
    assert snapshot(program) == before


def test_an_event_that_would_earn_beyond_the_ledger_is_422_and_kept_as_failed(api, program, make_member):
    spend_rule(program)
    member = make_member(program, external_id="c-1")
    before = Balance.objects.get(member=member).available
    response = api.post("/api/v1/events", purchase("huge-1", "c-1", "3000000000.00"), format="json")
    assert_error(response, 422, "value_out_of_range", error_type="invalid_request_error")
    event = InboundEvent.objects.get(program=program, event_id="huge-1")
    assert (event.status, event.error["code"], event.points) == ("failed", "value_out_of_range", 0)
    assert (event.type, event.member_external_id) == ("purchase", "c-1")
    assert event.payload["properties"]["amount"] == "3000000000.00"
    assert Balance.objects.get(member=member).available == before
    shown = api.get("/api/v1/events/huge-1")
    assert (shown.status_code, shown.json()["status"], shown.json()["error"]["code"]) == (
        200, "failed", "value_out_of_range")
    again = api.post("/api/v1/events", purchase("huge-1", "c-1", "3000000000.00"), format="json")
    assert (again.status_code, again.json()["status"]) == (200, "failed")
    assert run_audit() == []


def test_an_adjustment_beyond_the_ledger_is_422_and_changes_nothing(api, program, make_member):
    member = make_member(program, external_id="c-1")
    earn(member, 2 * 10**9)
    before = snapshot(program)
    response = api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 10**9, "reason": "x"}, format="json")
    assert_error(response, 422, "value_out_of_range", error_type="invalid_request_error")
    assert snapshot(program) == before
    assert run_audit() == []
