"""The schema is true: Schemathesis, with all its default checks, against a live server.

The schema is fetched from ``/api/v1/schema/`` of a real HTTP server (``live_server``) and every
operation in it is exercised through Schemathesis' own engine, the one its CLI runs: every
default phase (examples, coverage, fuzzing, stateful) and every default check (server errors, status
codes, content types, headers, response bodies, positive data accepted, negative data refused,
auth, unsupported methods, use after free, created resources available...). Requests carry a
real partner key of a program with members, points, rewards, a rule, redemptions, an event and a
webhook endpoint; known ids are fed to path parameters and to ``member_id``/``reward`` half of the
time, so the fuzzer reaches real objects as well as missing ones. Derandomized with a fixed seed:
CI sees the same cases every run. Server tracebacks of any 5xx are attached to the failure.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading

import pytest
import requests
import schemathesis
from schemathesis.core.failures import Failure
from schemathesis.generation.case import Case

MAX_EXAMPLES = 50  # per operation and phase; the whole test takes about a minute
# Fixed, so CI sees the same cases; set SCHEMATHESIS_SEED to explore others.
SEED = int(os.environ.get("SCHEMATHESIS_SEED") or 20261122)

# A schema-valid request may still be refused for a reason no schema can state: the object it
# names does not exist, the member's balance is too small, the event type or its properties are
# the program's own. ``positive_data_acceptance`` is excused for exactly these answers (by status
# and error code); anything else the API refuses on schema-valid data fails the test.
SEMANTIC_REFUSALS = {
    (400, "invalid_cursor"),  # starting_after names no object of this list
    (422, "insufficient_points"),  # a deduction or redemption beyond the member's balance
    (400, "unknown_event_type"),  # event types are declared per program
    (400, "invalid_properties"),  # ...and so are their properties' JSON Schemas
    (422, "too_many_endpoints"),  # a program's webhook endpoints are capped; the fuzzer creates many
    (400, "invalid_url"),  # a webhook URL's scheme (https only in production) and host (public) rules
}


def _error(response) -> dict:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _semantic_refusal(response) -> bool:
    error = _error(response)
    if (response.status_code, error.get("code")) in SEMANTIC_REFUSALS:
        return True
    if response.status_code == 400 and error.get("code") == "null_characters_not_allowed":
        # Free-form JSON (a member's attributes, an event's properties) may hold no NUL character at
        # any depth: PostgreSQL cannot store one. Text fields say so in the schema (not: pattern).
        return error.get("param") in ("attributes", None)
    if error.get("param") == "url" and error.get("code") == "invalid_field":
        return True  # Django's URLValidator (label and host lengths, TLD rules) is stricter than format: uri
    # occurred_at may be any date-time in the schema; one in the future is refused.
    return error.get("param") == "occurred_at" and "future" in str(error.get("message"))


@pytest.fixture
def api_world(transactional_db, settings):
    """A program the fuzzer can find things in: its partner key and the ids of what it holds."""
    from accounts.models import Program
    from accounts.services import member_create, partner_create
    from campaigns.models import Reward
    from campaigns.services import redemption_create
    from ledger.services import points_earn
    from rules.models import Rule
    from rules.pipeline import event_submit
    from rules.services import rule_save
    from webhooks.services import endpoint_create

    settings.API_RATE_LIMIT_PER_MINUTE = 0  # the fuzzer sends thousands of requests a minute

    program = Program.objects.create(name="Schema", slug="schema")
    partner, key = partner_create(program=program, name="Fuzzer")
    members = []
    for n in range(1, 4):
        member = member_create(program=program, external_id=f"c-{n}", email=f"c{n}@example.com")
        points_earn(member=member, points=5000 * n, key=f"seed-earn-{n}")
        members.append(member)
    coffee = Reward.objects.create(program=program, code="free-coffee", name="Free coffee", cost=150)
    tote = Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=1000, stock=50)
    rule_save(rule=Rule(program=program, name="1 point per unit", kind="spend", event_type="purchase"))
    held = redemption_create(member=members[0], reward=coffee, capture=False, key="seed-held")
    captured = redemption_create(member=members[1], reward=tote, key="seed-captured")
    event_submit(program=program, partner=partner, payload={
        "event_id": "pos-1", "type": "purchase", "member_id": "c-1",
        "properties": {"order_id": "o-1", "amount": "42.50", "currency": "USD"},
    })
    endpoint = endpoint_create(program=program, url="https://hooks.example.com/loyalty", partner=partner)
    return {
        "key": key,
        "members": [m.external_id for m in members],
        "rewards": [coffee.code, tote.code],
        "redemptions": [held.public_id, captured.public_id],
        "events": ["pos-1"],
        "endpoints": [endpoint.public_id],
    }


@pytest.fixture
def server_errors():
    """Tracebacks the live server logs for 5xx answers, to show with a failure."""
    records: list[str] = []
    lock = threading.Lock()
    formatter = logging.Formatter()

    class Collect(logging.Handler):
        def emit(self, record):
            if record.exc_info and record.levelno >= logging.ERROR:
                with lock:
                    records.append(formatter.formatException(record.exc_info))

    handler = Collect(level=logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("django.request", "loyalty.api.errors")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def unique_idempotency_keys():
    """A schema-valid Idempotency-Key is made unique per request: generated keys repeat across
    cases, and the same key with another body is rightly refused (422), or with the same body
    replayed, which would turn every later case into a test of idempotency rather than of the
    operation. Keys the schema forbids (empty, too long) are sent as generated."""
    counter = itertools.count(1)

    def before_call(context, case: Case, kwargs):
        key = (case.headers or {}).get("Idempotency-Key")
        positive = case.meta is None or case.meta.generation.mode.is_positive
        if isinstance(key, str) and 1 <= len(key) <= 255 and positive:
            case.headers["Idempotency-Key"] = f"schemathesis-{next(counter)}"

    schemathesis.hook("before_call")(before_call)
    yield
    schemathesis.hooks.GLOBAL_HOOK_DISPATCHER.unregister(before_call)


@pytest.fixture
def api_schema(live_server, api_world, unique_idempotency_keys):
    """The schema as the live server serves it, set up to test that same server."""
    key = api_world["key"]
    served = requests.get(f"{live_server.url}/api/v1/schema/?format=json",
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
    served.raise_for_status()
    known = {
        "path.external_id": "members", "body.member_id": "members", "body.reward": "rewards",
        "path.redemption_id": "redemptions", "path.event_id": "events", "path.endpoint_id": "endpoints",
    }
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": live_server.url,
        "auth": {"openapi": {"partnerKey": {"bearer": key}}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "dictionaries": {name: {"values": values} for name, values in api_world.items() if name != "key"},
        "parameters": {param: {"dictionary": name, "probability": 0.5} for param, name in known.items()},
        "request-timeout": 30,
    })
    schema = schemathesis.openapi.from_dict(served.json(), config=config)

    @schema.hook
    def filter_failure(context, failure: Failure, case: Case, response) -> bool:
        if failure.code == "ST202" and _semantic_refusal(response):  # ST202: positive data refused
            return False
        return True

    return schema


def _describe(label: str, grouped) -> str:
    lines = [f"{label}: " + "; ".join(f"[{f.code}] {f.title}: {f.message}" for f in grouped.failures)]
    if grouped.response is not None:
        lines.append(f"    -> {grouped.response.status_code} {grouped.response.content[:500]!r}")
    lines.append(f"    {grouped.code_sample}")
    return "\n".join(lines)


def test_api_conforms_to_its_schema(api_schema, server_errors):
    """Every phase and every default check of Schemathesis: no server error, nothing off-schema."""
    from schemathesis.engine import events
    from schemathesis.reporting.recorders import grouped_failures_from_recorder

    problems: list[str] = []
    scenarios, started = 0, 0.0
    for event in schemathesis.engine.from_schema(api_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            for grouped in grouped_failures_from_recorder(event.recorder):
                problems.append(f"({event.phase.value}) " + _describe(event.recorder.label, grouped))
        elif isinstance(event, events.NonFatalError):
            problems.append(f"({event.phase}) {event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.PhaseStarted):
            started = event.timestamp
        elif isinstance(event, events.PhaseFinished):
            print(f"schemathesis {event.phase.name.value}: {event.status.value} in {event.timestamp - started:.1f}s")
    assert scenarios, "Schemathesis ran nothing"
    if server_errors and problems:
        unique = {trace.strip().splitlines()[-1]: trace for trace in server_errors}
        problems.append("server tracebacks:\n" + "\n".join(unique.values()))
    assert not problems, f"{len(problems)} problem(s):\n" + "\n\n".join(problems)

