"""Builders and fixtures shared by the rules tests (imported by the modules that use them)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest

from rules.engine import CompiledRule, Qualification, qualify
from rules.models import Rule

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
OCCURRED = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
OCCURRED_ISO = "2026-11-22T10:00:00Z"

_rule_ids = itertools.count(1000)


def compiled(**fields) -> CompiledRule:
    """A CompiledRule from an unsaved Rule: no database needed."""
    fields.setdefault("id", next(_rule_ids))
    fields.setdefault("name", f"rule {fields['id']}")
    for name in ("points_per_unit", "item_multiplier", "multiplier", "min_amount"):
        if isinstance(fields.get(name), str):
            fields[name] = Decimal(fields[name])
    return CompiledRule.from_rule(Rule(**fields))


MEMBER = {"external_id": "c-1", "email": "c1@example.com", "attributes": {}, "tier": "silver",
          "status": "active", "enrolled_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
          "lifetime_earned": 0, "lifetime_redeemed": 0, "available": 0}
PROGRAM = {"slug": "coffee", "name": "Coffee Club", "points_name": "beans"}


def run(
    rules: list[CompiledRule], *, type: str = "purchase", properties: dict | None = None,
    member: dict | None = None, occurred_at: dt.datetime | None = OCCURRED, usage: dict | None = None,
    now: dt.datetime = NOW,
) -> Qualification:
    """qualify() for one event with sensible defaults."""
    event = {"id": "e-1", "type": type, "occurred_at": occurred_at, "properties": properties or {}}
    return qualify(rules=rules, event=event, member={**MEMBER, **(member or {})}, program=PROGRAM,
                   now=now, usage=usage)


def outcome(result: Qualification, rule: CompiledRule) -> dict:
    """The trace entry of ``rule`` (exactly one per rule)."""
    entries = [entry for entry in result.trace if entry["rule_id"] == rule.id]
    assert len(entries) == 1, result.trace
    return entries[0]


def awarded(result: Qualification) -> dict[str, int]:
    return {award.rule: award.points for award in result.awards}


# --- payloads ------------------------------------------------------------------------------


def purchase(event_id: str, member_id: str, amount: str = "42.50", **properties) -> dict:
    properties.setdefault("order_id", f"o-{event_id}")
    return {"event_id": event_id, "type": "purchase", "member_id": member_id, "occurred_at": OCCURRED_ISO,
            "properties": {"amount": amount, "currency": "USD", **properties}}


def refund(event_id: str, member_id: str, order_id: str, **properties) -> dict:
    return {"event_id": event_id, "type": "refund", "member_id": member_id, "occurred_at": OCCURRED_ISO,
            "properties": {"order_id": order_id, **properties}}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def make_rule(db):
    """Save a rule through the service (validated, bumps the program's rules_version)."""
    from rules.services import rule_save

    def make(program, **fields) -> Rule:
        fields.setdefault("name", f"rule {next(_rule_ids)}")
        return rule_save(rule=Rule(program=program, **fields))

    return make


@pytest.fixture
def other_program_api(make_program, make_member):
    """(APIClient, member) of a second program, with its own partner key."""
    from rest_framework.test import APIClient

    from accounts.services import partner_create

    program = make_program()
    _partner, key = partner_create(program=program, name="Other POS")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, make_member(program)
