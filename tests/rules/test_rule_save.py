"""rule_save: validation with the compiler's message on the right field, and the version bump."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from rules import engine
from rules.models import Rule
from rules.services import rule_delete, rule_save
from tests.rules import fixtures_rules

make_rule = fixtures_rules.make_rule


def _refused(program, **fields) -> dict:
    version = program.rules_version
    with pytest.raises(ValidationError) as info:
        rule_save(rule=Rule(program=program, name="bad", **fields))
    program.refresh_from_db()
    assert program.rules_version == version, "a refused rule must not bump the version"
    assert not Rule.objects.filter(program=program).exists(), "a refused rule must not be saved"
    return info.value.message_dict


@pytest.mark.parametrize(
    ("field", "source", "expected"),
    [
        ("condition", "event.properties.amount >", "Syntax error"),
        ("condition", "member.tier == 'gold' &&", "Syntax error"),
        ("condition", "member.tier = 'gold'", "Syntax error"),
        ("condition", "event.properties.channel == 'pos", "event.properties.channel == 'pos"),
        ("points_expression", "int(event.properties.amount) *", "Syntax error"),
        ("points_expression", "(1 + 2", "Syntax error"),
    ],
)
def test_bad_cel_is_refused_with_the_parser_message_on_its_field(program, field, source, expected):
    errors = _refused(program, kind="event", points=10, **{field: source})
    assert list(errors) == [field]
    assert expected in errors[field][0]


@pytest.mark.parametrize(
    ("field", "source", "unknown"),
    [
        ("condition", "customer.tier == 'gold'", "customer"),
        ("condition", "event.properties.amount > threshold", "threshold"),
        ("condition", "member.tier == 'gold' && today > 3", "today"),
        ("points_expression", "int(order.amount) * 2", "order"),
    ],
)
def test_unknown_variables_are_refused(program, field, source, unknown):
    errors = _refused(program, kind="event", points=10, **{field: source})
    assert list(errors) == [field]
    assert unknown in errors[field][0]
    assert "Unknown variable" in errors[field][0]


@pytest.mark.parametrize(
    "source",
    [
        "event.properties.items.exists(i, i.sku == 'LATTE')",
        "event.properties.items.all(item, item.quantity < 10)",
        "size(event.properties.items.filter(i, i.category == 'coffee')) > 1",
    ],
)
def test_macro_variables_are_not_unknown_variables(program, source):
    """``exists``/``all``/``filter``/``map`` bind their own variable: it is not a free one."""
    rule = rule_save(rule=Rule(program=program, name="items", kind="event", points=5, condition=source))
    assert rule.pk is not None


def test_all_four_variables_are_allowed(program):
    rule = rule_save(rule=Rule(
        program=program, name="all vars", kind="event", points=5,
        condition="event.type == 'signup' && member.tier == 'gold' && program.slug != '' "
                  "&& now > timestamp('2026-01-01T00:00:00Z')",
    ))
    assert rule.pk is not None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "multiplier", "multiplier": Decimal("2"), "stacking": "exclusive"}, "stacking"),
        ({"kind": "multiplier"}, "multiplier"),
        ({"kind": "multiplier", "multiplier": Decimal("0")}, "multiplier"),
        ({"kind": "multiplier", "multiplier": Decimal("0.5")}, "multiplier"),  # it would take nothing away
        ({"kind": "multiplier", "multiplier": Decimal("1")}, "multiplier"),
        ({"kind": "multiplier", "multiplier": Decimal("2"), "points_expression": "100"}, "points_expression"),
        ({"kind": "event"}, "points"),
        ({"kind": "product", "points_per_item": 5}, "skus"),
        ({"kind": "spend", "member_cap_times": 1}, "member_cap_period"),
        ({"kind": "spend", "member_cap_points": 100}, "member_cap_period"),
        ({"kind": "spend", "active_from": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
          "active_until": dt.datetime(2026, 11, 1, tzinfo=dt.UTC)}, "active_until"),
    ],
)
def test_inconsistent_rules_are_refused_on_the_right_field(program, fields, field):
    errors = _refused(program, **fields)
    assert list(errors) == [field]


def test_an_event_rule_may_compute_its_points_instead(program):
    rule = rule_save(rule=Rule(program=program, name="expr", kind="event", points_expression="10"))
    assert rule.pk is not None


def test_rule_save_bumps_the_version_and_rules_for_sees_the_change_at_once(program, make_rule):
    rule = make_rule(program, kind="spend", name="spend")
    program.refresh_from_db()
    assert program.rules_version == 1
    assert [r.points_per_unit for r in engine.rules_for(program)] == [Decimal(1)]

    rule.points_per_unit = Decimal(3)
    rule_save(rule=rule)
    program.refresh_from_db()
    assert program.rules_version == 2
    assert [r.points_per_unit for r in engine.rules_for(program)] == [Decimal(3)]

    make_rule(program, kind="event", name="bonus", points=5, priority=10)
    program.refresh_from_db()
    assert program.rules_version == 3
    assert [r.name for r in engine.rules_for(program)] == ["bonus", "spend"]  # by priority

    rule.is_active = False
    rule_save(rule=rule)
    program.refresh_from_db()
    assert [r.name for r in engine.rules_for(program)] == ["bonus"]

    rule_delete(rule=Rule.objects.get(program=program, name="bonus"))
    program.refresh_from_db()
    assert program.rules_version == 5
    assert engine.rules_for(program) == []


def test_rules_for_serves_the_cache_while_the_version_stands(program, make_rule, django_assert_num_queries):
    make_rule(program, kind="spend", name="spend")
    program.refresh_from_db()
    first = engine.rules_for(program)
    with django_assert_num_queries(0):
        assert engine.rules_for(program) is first
    # a write that bypasses rule_save is not seen until the version moves
    Rule.objects.filter(program=program).update(points_per_unit=7)
    assert engine.rules_for(program)[0].points_per_unit == Decimal(1)
    program.rules_version += 1
    assert engine.rules_for(program)[0].points_per_unit == Decimal(7)


def test_rules_of_one_program_are_not_seen_by_another(make_program, make_rule):
    a, b = make_program(), make_program()
    make_rule(a, kind="spend", name="a spend")
    make_rule(b, kind="event", name="b bonus", points=5)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.rules_version == b.rules_version == 1  # same version number, separate caches
    assert [r.name for r in engine.rules_for(a)] == ["a spend"]
    assert [r.name for r in engine.rules_for(b)] == ["b bonus"]


def test_a_saved_rule_qualifies_like_its_compiled_form(program, make_member, make_rule):
    """The rule row is the data; what the engine sees after rule_save is what qualify uses."""
    make_rule(program, kind="spend", name="gold spend", points_per_unit=Decimal(2),
              condition="member.tier == 'gold'", max_points_per_event=50)
    program.refresh_from_db()
    rules = engine.rules_for(program)
    event = {"id": "e", "type": "purchase", "occurred_at": dt.datetime(2026, 11, 22, tzinfo=dt.UTC),
             "properties": {"amount": "40.00"}}
    gold = engine.qualify(rules=rules, event=event, member={"tier": "gold"}, program={},
                          now=dt.datetime(2026, 11, 22, 1, tzinfo=dt.UTC))
    silver = engine.qualify(rules=rules, event=event, member={"tier": "silver"}, program={},
                            now=dt.datetime(2026, 11, 22, 1, tzinfo=dt.UTC))
    assert gold.points == 50
    assert silver.points == 0
