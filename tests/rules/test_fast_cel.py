"""rules.cel_python: the Python functions that decide common CEL expressions must give exactly the
CEL library's value, or leave the expression to it. Pure: no database.

Every expression here is evaluated both ways on the same values; whenever the Python function
answers, the answer (and its type) must be the library's, and the library must not fail there.
"""

import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rules import cel_python, context
from rules.engine import compile_cel

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 30, 12, 30, 15, 250000, tzinfo=UTC)


def _same(fast, expected, *, inside: bool = False) -> bool:
    if inside and type(fast) is int and not cel_python.INT_MIN <= fast <= cel_python.INT_MAX:
        # A list or map is handed back as it is (qualify never uses one as a result); the library
        # gives the ints in it that are not int64 as doubles.
        fast = float(fast)
    if type(fast) is not type(expected):
        return False
    if isinstance(fast, float) and math.isnan(fast):
        return math.isnan(expected)
    if isinstance(fast, list):
        return len(fast) == len(expected) and all(
            _same(a, b, inside=True) for a, b in zip(fast, expected, strict=True))
    if isinstance(fast, dict):
        return fast.keys() == expected.keys() and all(_same(fast[k], expected[k], inside=True) for k in fast)
    return fast == expected


def both_ways(source: str, values: dict):
    """(decided in Python?, the library's value or exception) after checking they agree."""
    program = compile_cel(source, field_name="condition")
    function = cel_python.compile_fast(source)
    activation = context.Activation(**values)
    try:
        fast = function(activation.values)
    except Exception:  # noqa: BLE001 - left to the library
        return False, None
    try:
        expected = activation.by_library(program)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{source!r}: Python gave {fast!r} where the library fails: {exc}")
    assert _same(fast, expected), f"{source!r}: Python {fast!r}, CEL {expected!r}"
    return True, expected


def values(properties=None, attributes=None, tier="gold", enrolled_at=None, occurred_at=NOW):
    return {
        "event": {"id": "e1", "type": "purchase", "occurred_at": occurred_at, "properties": properties or {}},
        "member": {"external_id": "m1", "email": "m@example.com", "attributes": attributes or {}, "tier": tier,
                   "status": "active", "enrolled_at": enrolled_at or dt.datetime(2024, 2, 29, 8, tzinfo=UTC),
                   "lifetime_earned": 1200, "lifetime_redeemed": 300, "available": 900},
        "program": {"slug": "coffee", "name": "Coffee Club", "points_name": "beans"},
        "now": NOW,
    }


PURCHASE = values(
    properties={"amount": "42.50", "currency": "EUR", "channel": "app", "order_id": "o-1",
                "items": [{"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": "4.25"},
                          {"sku": "MUFFIN", "category": "bakery", "quantity": 3, "unit_price": "2.00"}]},
    attributes={"city": "Lyon", "vip": True, "visits": 12, "score": 2.5, "tags": ["a", "b"], "name": "Zoë",
                "big": 2**63, "nothing": None},
)


@pytest.mark.parametrize(("source", "decided", "value"), [
    ("member.tier == 'gold'", True, True),
    ("member.tier != 'gold' || event.properties.amount > 40.0", True, True),
    ("event.properties.amount >= 50.0", True, False),
    ("event.properties.channel in ['app', 'web']", True, True),
    ("member.attributes.city == 'Lyon' && member.attributes.vip", True, True),
    ("member.attributes.visits > 10", True, True),
    ("member.attributes.visits > 10.0", False, None),  # int against double: the library's rules
    ("member.attributes.visits * 3 + 1", True, 37),
    ("member.attributes.visits / 5", True, 2),
    ("-member.attributes.visits / 5", True, -2),  # truncated towards zero
    ("-member.attributes.visits % 5", True, -2),  # the sign of the dividend
    ("member.attributes.visits / 0", False, None),
    ("member.attributes.big > 1", False, None),  # not an int64
    ("member.attributes.missing == 1", False, None),
    ("has(member.attributes.city)", True, True),
    ("has(member.attributes.zip)", True, False),
    ("size(member.attributes.tags) == 2", True, True),
    ("size(member.attributes.name)", False, None),  # not ASCII
    ("member.attributes.name.startsWith('Zo')", True, True),
    ("event.properties.items.exists(i, i.category == 'bakery')", True, True),
    ("event.properties.items.all(i, i.quantity > 1)", True, True),
    ("event.properties.items.filter(i, i.sku == 'LATTE').size()", True, 1),
    ("event.properties.items.map(i, i.unit_price)", True, [4.25, 2.0]),
    ("event.properties.items.exists_one(i, i.quantity == 3)", True, True),
    ("now - member.enrolled_at > duration('720h')", True, True),
    ("now > timestamp('2026-01-01T00:00:00Z')", True, True),
    ("event.occurred_at.getDayOfWeek() == 1", True, True),  # a Monday
    ("now.getMonth() == 10 && now.getDate() == 30 && now.getDayOfYear() == 333", True, True),
    ("now.getMilliseconds()", True, 250),
    ("int(event.properties.amount) * 2", True, 84),
    ("double(member.lifetime_earned) / 1000.0", True, 1.2),
    ("string(member.attributes.visits) + 'x'", True, "12x"),
    ("member.attributes.tier_missing ? 1 : 2", False, None),
    ("member.attributes.vip ? 10 : 0", True, 10),
    ("member.attributes.nothing == null", True, True),
    ("member.attributes.score * 2.0", True, 5.0),
    ("member.attributes.score > 1", False, None),
    ("'gold' in member.attributes", True, False),
    ("member.attributes.tags[1] == 'b'", True, True),
    ("member.attributes.tags[2] == 'b'", False, None),
    ("9223372036854775807 + member.attributes.visits", False, None),  # overflow
    ("-9223372036854775808 < member.attributes.visits", False, None),
    ("[1, 2, 3].exists(x, x == 2)", True, True),
])
def test_common_expressions_agree_with_the_library(source, decided, value):
    was_decided, expected = both_ways(source, PURCHASE)
    assert was_decided is decided, f"{source!r} decided in Python: {was_decided}"
    if decided:
        assert _same(expected, value)


def test_what_python_cannot_parse_is_left_to_the_library():
    for source in ("{'a': 1}.a == 1", "1u == 1u", "b'x' == b'x'", r"'a\'b' == 'x'", "'''x''' == 'x'",
                   "member.tier.matches('^g')", "now.getHours('Europe/Paris') > 3", "dyn(1) == 1"):
        try:
            compile_cel(source, field_name="condition")
        except Exception:  # noqa: BLE001 - not even CEL: nothing to compare
            continue
        assert cel_python.compile_fast(source) is cel_python.undecided, source


def test_a_naive_or_offset_timestamp_is_left_to_the_library():
    naive = values(occurred_at=dt.datetime(2026, 11, 30, 23, 30))  # noqa: DTZ001 - naive on purpose
    assert both_ways("event.occurred_at.getHours() == 23", naive)[0] is False
    paris = values(occurred_at=dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert both_ways("event.occurred_at.getHours() == 22", paris)[0] is False


# --- generated: random expressions over random JSON values ----------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**53, 2**53 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["gold", "Zoë", "", "a", "b"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "b", "x"]), inner, max_size=3),
), max_leaves=8)

PATHS = ["member.attributes.a", "member.attributes.b", "member.attributes.x", "member.tier",
         "member.lifetime_earned", "event.properties.amount", "event.properties.items", "now",
         "member.enrolled_at", "member.attributes", "event.properties.a"]
LITERALS = ["0", "1", "-1", "2", "1.5", "0.0", "-2.5", "9223372036854775807", "-9223372036854775808",
            "'gold'", "'a'", "''", "'Zoë'", "true", "false", "null", "[1, 2]", "['a', 'b']", "[]",
            "duration('1h')", "timestamp('2026-01-01T00:00:00Z')", "1e300", "0x10"]
BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in"]


def expressions(depth: int) -> st.SearchStrategy[str]:
    atoms = st.sampled_from(PATHS + LITERALS)
    if depth == 0:
        return atoms
    smaller = expressions(depth - 1)
    return st.one_of(
        atoms,
        st.builds(lambda a, op, b: f"({a} {op} {b})", smaller, st.sampled_from(BINARY), smaller),
        st.builds(lambda a, op, b: f"{a} {op} {b}", smaller, st.sampled_from(BINARY), smaller),
        st.builds(lambda op, a: f"{op}{a}", st.sampled_from(["!", "-"]), smaller),
        st.builds(lambda a, b, c: f"({a} ? {b} : {c})", smaller, smaller, smaller),
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from(["size", "int", "double", "string"]), smaller),
        st.builds(lambda p: f"has({p})", st.sampled_from([p for p in PATHS if p.count(".") >= 1])),
        st.builds(lambda a, m, b: f"{a}.{m}({b})", smaller, st.sampled_from(["startsWith", "endsWith",
                                                                              "contains"]), smaller),
        st.builds(lambda a, m: f"{a}.{m}()", smaller, st.sampled_from(["size", "getFullYear", "getDayOfWeek",
                                                                       "getHours", "getDayOfYear"])),
        st.builds(lambda a, i: f"{a}[{i}]", smaller, st.sampled_from(["0", "1", "'a'", "-1", "x"])),
        st.builds(lambda a, m, b: f"{a}.{m}(x, {b})", smaller,
                  st.sampled_from(["exists", "all", "exists_one", "filter", "map"]),
                  st.builds(lambda op, b: f"x {op} {b}", st.sampled_from(BINARY), smaller)),
    )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions(3), attributes=st.dictionaries(st.sampled_from(["a", "b", "x"]), json_values),
       properties=st.dictionaries(st.sampled_from(["a", "amount", "items"]), json_values))
def test_generated_expressions_agree_with_the_library(source, attributes, properties):
    try:
        compile_cel(source, field_name="condition")
    except Exception:  # noqa: BLE001 - not a valid rule expression
        assume(False)
    both_ways(source, values(properties=properties, attributes=attributes))
