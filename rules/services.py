"""Writes for earning rules and custom event types: validated here, for admin, API and import alike."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from accounts.models import Program
from rules.engine import RuleCompileError, validate_rule
from rules.models import EventType, Rule
from rules.validation import schema_check


def _bump_rules_version(program_id: int) -> None:
    """Every process compiles the program's rules anew once it reads the new version: from the
    program row an event reads, or, through the API, with the partner key's program, which a web
    process keeps for up to API_KEY_CACHE_SECONDS. This process forgets its keys at commit, so it
    sees the change at once."""
    from loyalty.api.authentication import forget_keys

    Program.objects.filter(pk=program_id).update(rules_version=F("rules_version") + 1)
    forget_keys()
    transaction.on_commit(forget_keys)  # again: a request may have read the old row meanwhile


def rule_check(rule: Rule) -> None:
    """Raise ``ValidationError`` keyed by field (the CEL compiler's message on the CEL fields)."""
    try:
        validate_rule(rule)
    except RuleCompileError as exc:
        raise ValidationError({exc.field_name: exc.message}) from exc


def rule_save(*, rule: Rule) -> Rule:
    rule_check(rule)
    with transaction.atomic():
        previous_program = Rule.objects.filter(pk=rule.pk).values_list("program_id", flat=True).first()
        rule.save()
        _bump_rules_version(rule.program_id)
        if previous_program is not None and previous_program != rule.program_id:
            _bump_rules_version(previous_program)
    return rule


def rule_delete(*, rule: Rule) -> None:
    with transaction.atomic():
        program_id = rule.program_id
        rule.delete()
        _bump_rules_version(program_id)


def event_type_save(*, event_type: EventType) -> EventType:
    from rules.validation import BUILTIN_SCHEMAS, EVENT_TYPE_PATTERN

    if not EVENT_TYPE_PATTERN.match(event_type.name or ""):
        raise ValidationError({"name": "Use lower-case letters, digits and underscores, starting with a letter."})
    if event_type.name in BUILTIN_SCHEMAS:
        raise ValidationError({"name": f"{event_type.name!r} is a built-in event type."})
    try:
        schema_check(event_type.schema or {})
    except ValueError as exc:
        raise ValidationError({"schema": str(exc)}) from exc
    with transaction.atomic():
        previous_program = EventType.objects.filter(pk=event_type.pk).values_list("program_id", flat=True).first()
        event_type.save()
        _bump_rules_version(event_type.program_id)  # cached schemas are keyed by the rules version
        if previous_program is not None and previous_program != event_type.program_id:
            _bump_rules_version(previous_program)
    return event_type


def event_type_delete(*, event_type: EventType) -> None:
    with transaction.atomic():
        event_type.delete()
        _bump_rules_version(event_type.program_id)
