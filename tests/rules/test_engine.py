"""engine.qualify: every rule kind, caps, windows, stacking, CEL and the trace. Pure: no database."""

import copy
import datetime as dt

import pytest

from rules.engine import cap_period_key, usage_increments
from tests.rules.fixtures_rules import NOW, OCCURRED, awarded, compiled, outcome, run

UTC = dt.UTC
COFFEE_ITEMS = [
    {"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": "4.25"},
    {"sku": "MOCHA", "category": "coffee", "quantity": 1, "unit_price": "3.10"},
    {"sku": "MUFFIN", "category": "bakery", "quantity": 3, "unit_price": "2.00"},
]


# --- spend ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "fields", "points"),
    [
        ("42.50", {}, 42),
        ("42.99", {"rounding": "down"}, 42),
        ("42.50", {"rounding": "nearest"}, 43),
        ("42.49", {"rounding": "nearest"}, 42),
        ("42.01", {"rounding": "up"}, 43),
        ("42.00", {"rounding": "up"}, 42),
        ("10.00", {"points_per_unit": "2.5"}, 25),
        ("3.30", {"points_per_unit": "1.5", "rounding": "down"}, 4),
        ("3.30", {"points_per_unit": "1.5", "rounding": "nearest"}, 5),
        ("3.30", {"points_per_unit": "1.5", "rounding": "up"}, 5),
        ("0.99", {"rounding": "down"}, 0),
        ("20.00", {"min_amount": "20.00"}, 20),
        ("19.99", {"min_amount": "20.00"}, 0),
        ("19.99", {"min_amount": "20.00", "rounding": "up"}, 0),
    ],
)
def test_spend_rule(amount, fields, points):
    rule = compiled(kind="spend", event_type="purchase", **fields)
    result = run([rule], properties={"amount": amount})
    assert result.points == points
    assert outcome(result, rule)["outcome"] == ("fired" if points else "no_points")


def test_spend_rule_without_an_amount_gives_nothing():
    rule = compiled(kind="spend")
    assert outcome(run([rule], properties={}), rule)["outcome"] == "no_points"


# --- product -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "items", "points"),
    [
        # fixed points per matching unit, by SKU and by category
        ({"skus": ["LATTE"], "points_per_item": 5}, COFFEE_ITEMS, 10),
        ({"skus": ["LATTE", "MUFFIN"], "points_per_item": 5}, COFFEE_ITEMS, 25),
        ({"categories": ["coffee"], "points_per_item": 5}, COFFEE_ITEMS, 15),
        # an item matching both by SKU and by category counts once
        ({"skus": ["LATTE"], "categories": ["coffee"], "points_per_item": 5}, COFFEE_ITEMS, 15),
        # quantity defaults to 1
        ({"skus": ["LATTE"], "points_per_item": 7}, [{"sku": "LATTE"}], 7),
        # points_per_item wins over the multiplier
        ({"skus": ["LATTE"], "points_per_item": 5, "item_multiplier": "10"}, COFFEE_ITEMS, 10),
        # multiplier on the line amount (quantity x unit price x points_per_unit x multiplier)
        ({"skus": ["LATTE"], "item_multiplier": "2"}, COFFEE_ITEMS, 17),  # 2 x 4.25 x 2
        ({"categories": ["coffee"], "item_multiplier": "3"}, COFFEE_ITEMS, 34),  # (8.50 + 3.10) x 3 = 34.8
        ({"categories": ["coffee"], "item_multiplier": "3", "rounding": "up"}, COFFEE_ITEMS, 35),
        ({"categories": ["coffee"], "item_multiplier": "3", "points_per_unit": "2"}, COFFEE_ITEMS, 69),  # 69.6
        # no fixed points and no multiplier: the spend rate on the line amount
        ({"skus": ["LATTE"]}, COFFEE_ITEMS, 8),
        # nothing matches
        ({"skus": ["TEA"], "points_per_item": 5}, COFFEE_ITEMS, 0),
        ({"categories": ["tea"], "item_multiplier": "2"}, COFFEE_ITEMS, 0),
        ({"skus": ["LATTE"], "points_per_item": 5}, [], 0),
    ],
)
def test_product_rule(fields, items, points):
    rule = compiled(kind="product", event_type="purchase", **fields)
    result = run([rule], properties={"amount": "50.00", "items": items})
    assert result.points == points
    assert outcome(result, rule)["outcome"] == ("fired" if points else "no_points")


# --- event ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_type", "event_type", "expected"),
    [
        ("signup", "signup", ("fired", 100)),
        ("signup", "purchase", ("not_this_event_type", 0)),
        ("review_written", "review_written", ("fired", 100)),
        ("review_written", "signup", ("not_this_event_type", 0)),
        ("", "signup", ("fired", 100)),  # no type: every event
        ("", "purchase", ("fired", 100)),
    ],
)
def test_event_rule(rule_type, event_type, expected):
    rule = compiled(kind="event", event_type=rule_type, points=100)
    result = run([rule], type=event_type, properties={"amount": "10.00"})
    entry = outcome(result, rule)
    assert (entry["outcome"], result.points) == expected
    if expected[0] == "not_this_event_type":
        assert rule_type in entry["detail"]


def test_event_type_filter_applies_to_every_kind():
    spend = compiled(kind="spend", event_type="purchase")
    result = run([spend], type="signup", properties={"amount": "10.00"})
    assert result.points == 0
    assert outcome(result, spend)["outcome"] == "not_this_event_type"


# --- multiplier ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("multiplier", "amount", "extra"),
    [
        ("2", "40.00", 40),
        ("3", "40.00", 80),
        ("1.5", "45.00", 22),  # 22.5 rounds down
        ("1.25", "10.00", 2),
        ("1", "40.00", 0),
    ],
)
def test_multiplier_adds_base_times_m_minus_one_as_its_own_award(multiplier, amount, extra):
    spend = compiled(kind="spend", name="spend")
    double = compiled(kind="multiplier", name="boost", multiplier=multiplier)
    result = run([double, spend], properties={"amount": amount})  # order does not matter for a multiplier
    base = int(amount.split(".")[0])
    assert result.points == base + extra
    assert awarded(result) == ({"spend": base, "boost": extra} if extra else {"spend": base})
    assert outcome(result, double)["outcome"] == ("fired" if extra else "no_points")


def test_multiplier_scales_the_sum_of_the_cumulative_rules_after_their_caps():
    spend = compiled(kind="spend", name="spend", max_points_per_event=30)
    bonus = compiled(kind="event", name="bonus", event_type="purchase", points=10)
    double = compiled(kind="multiplier", name="double", multiplier="2")
    result = run([spend, bonus, double], properties={"amount": "80.00"})
    assert awarded(result) == {"spend": 30, "bonus": 10, "double": 40}


def test_two_multipliers_each_add_their_share_of_the_same_base():
    spend = compiled(kind="spend", name="spend")
    x2 = compiled(kind="multiplier", name="x2", multiplier="2")
    x3 = compiled(kind="multiplier", name="x3", multiplier="3")
    result = run([spend, x2, x3], properties={"amount": "10.00"})
    assert awarded(result) == {"spend": 10, "x2": 10, "x3": 20}


def test_multiplier_with_nothing_to_multiply():
    double = compiled(kind="multiplier", multiplier="2")
    result = run([double], properties={"amount": "10.00"})
    assert result.awards == []
    assert outcome(result, double)["outcome"] == "no_points"


def test_multiplier_obeys_its_condition_and_its_caps():
    spend = compiled(kind="spend", name="spend")
    gold_only = compiled(kind="multiplier", name="gold", multiplier="2", condition="member.tier == 'gold'")
    capped = compiled(kind="multiplier", name="capped", multiplier="2", max_points_per_event=5)
    result = run([spend, gold_only, capped], properties={"amount": "40.00"}, member={"tier": "silver"})
    assert awarded(result) == {"spend": 40, "capped": 5}
    assert outcome(result, gold_only)["outcome"] == "condition_false"


# --- caps ----------------------------------------------------------------------------------


def test_max_points_per_event():
    rule = compiled(kind="spend", max_points_per_event=50)
    assert run([rule], properties={"amount": "80.00"}).points == 50
    assert run([rule], properties={"amount": "49.00"}).points == 49


@pytest.mark.parametrize(
    ("period", "key"),
    [("day", "2026-11-22"), ("week", "2026-W47"), ("month", "2026-11"), ("lifetime", "lifetime")],
)
@pytest.mark.parametrize(
    ("cap", "used", "expected"),
    [
        ({"member_cap_points": 100}, (0, 0), ("fired", 80)),
        ({"member_cap_points": 100}, (30, 1), ("fired", 70)),
        ({"member_cap_points": 100}, (99, 5), ("fired", 1)),
        ({"member_cap_points": 100}, (100, 2), ("cap_reached", 0)),
        ({"member_cap_points": 100}, (150, 2), ("cap_reached", 0)),
        ({"member_cap_times": 3}, (500, 2), ("fired", 80)),
        ({"member_cap_times": 3}, (10, 3), ("cap_reached", 0)),
        ({"member_cap_times": 3, "member_cap_points": 100}, (90, 1), ("fired", 10)),
        ({"member_cap_times": 3, "member_cap_points": 100}, (10, 3), ("cap_reached", 0)),
    ],
)
def test_member_cap_by_period(period, key, cap, used, expected):
    rule = compiled(kind="spend", member_cap_period=period, **cap)
    result = run([rule], properties={"amount": "80.00"}, usage={(rule.id, key): used})
    entry = outcome(result, rule)
    assert (entry["outcome"], result.points) == expected
    if expected[0] == "cap_reached":
        assert period in entry["detail"]


@pytest.mark.parametrize(
    ("period", "other_key"),
    [("day", "2026-11-21"), ("week", "2026-W46"), ("month", "2026-10")],
)
def test_usage_of_another_period_does_not_count(period, other_key):
    rule = compiled(kind="spend", member_cap_period=period, member_cap_times=1)
    result = run([rule], properties={"amount": "80.00"}, usage={(rule.id, other_key): (80, 1)})
    assert result.points == 80


def test_usage_of_another_rule_does_not_count():
    rule = compiled(kind="spend", member_cap_period="lifetime", member_cap_times=1)
    result = run([rule], properties={"amount": "80.00"}, usage={(rule.id + 1, "lifetime"): (80, 1)})
    assert result.points == 80


def test_cap_period_follows_the_event_time_not_the_clock():
    rule = compiled(kind="spend", member_cap_period="day", member_cap_times=1)
    usage = {(rule.id, "2026-11-22"): (10, 1)}
    yesterday = OCCURRED - dt.timedelta(days=1)
    assert run([rule], properties={"amount": "5.00"}, usage=usage).points == 0
    assert run([rule], properties={"amount": "5.00"}, usage=usage, occurred_at=yesterday).points == 5


def test_cap_period_is_the_same_for_one_instant_whatever_offset_the_partner_wrote():
    """23:30 at UTC-5 on 30 November is 04:30 UTC on 1 December: one instant, one cap period.

    The pipeline keeps the offset the partner sent (parse_datetime), so the period key must not
    depend on it, or a member gets a monthly cap twice by mixing offsets."""
    rule = compiled(kind="spend", member_cap_period="month", member_cap_times=1)
    instant_utc = dt.datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    same_instant_minus5 = instant_utc.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    usage = {(rule.id, "2026-12"): (10, 1)}
    at_utc = run([rule], properties={"amount": "5.00"}, usage=usage, occurred_at=instant_utc,
                 now=instant_utc + dt.timedelta(hours=1))
    at_minus5 = run([rule], properties={"amount": "5.00"}, usage=usage, occurred_at=same_instant_minus5,
                    now=instant_utc + dt.timedelta(hours=1))
    assert at_utc.points == 0
    assert at_minus5.points == at_utc.points
    assert cap_period_key("day", same_instant_minus5) == cap_period_key("day", instant_utc)


def test_signup_bonus_once_per_lifetime():
    bonus = compiled(kind="event", event_type="signup", points=500, name="welcome",
                     member_cap_period="lifetime", member_cap_times=1)
    first = run([bonus], type="signup")
    assert awarded(first) == {"welcome": 500}
    increments = usage_increments([bonus], first, OCCURRED)
    assert increments == {(bonus.id, "lifetime"): (500, 1)}
    second = run([bonus], type="signup", usage=increments)
    assert second.awards == []
    assert outcome(second, bonus)["outcome"] == "cap_reached"


def test_usage_increments_cover_only_capped_rules_that_fired():
    capped = compiled(kind="spend", name="capped", member_cap_period="month", member_cap_points=1000)
    free = compiled(kind="event", name="free", points=5)
    double = compiled(kind="multiplier", name="double", multiplier="2", member_cap_period="day",
                      member_cap_times=2)
    result = run([capped, free, double], properties={"amount": "10.00"})
    assert awarded(result) == {"capped": 10, "free": 5, "double": 15}
    assert usage_increments([capped, free, double], result, OCCURRED) == {
        (capped.id, "2026-11"): (10, 1), (double.id, "2026-11-22"): (15, 1),
    }


# --- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "occurred_at", "fires"),
    [
        ({"active_from": dt.datetime(2026, 11, 22, 9, tzinfo=UTC)}, OCCURRED, True),
        ({"active_from": dt.datetime(2026, 11, 22, 10, tzinfo=UTC)}, OCCURRED, True),  # from is inclusive
        ({"active_from": dt.datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)}, OCCURRED, False),
        ({"active_until": dt.datetime(2026, 11, 22, 10, tzinfo=UTC)}, OCCURRED, False),  # until is exclusive
        ({"active_until": dt.datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)}, OCCURRED, True),
        ({"active_from": dt.datetime(2026, 11, 1, tzinfo=UTC), "active_until": dt.datetime(2026, 12, 1, tzinfo=UTC)},
         OCCURRED, True),
        ({"active_from": dt.datetime(2026, 11, 1, tzinfo=UTC), "active_until": dt.datetime(2026, 12, 1, tzinfo=UTC)},
         dt.datetime(2026, 10, 31, 23, 59, tzinfo=UTC), False),
        # an offset is just another way to write the same instant
        ({"active_until": dt.datetime(2026, 11, 22, 10, tzinfo=UTC)},
         dt.datetime(2026, 11, 22, 10, 59, tzinfo=dt.timezone(dt.timedelta(hours=1))), True),
    ],
)
def test_active_window_is_checked_against_occurred_at(window, occurred_at, fires):
    rule = compiled(kind="event", points=10, **window)
    result = run([rule], occurred_at=occurred_at, now=NOW + dt.timedelta(days=30))
    assert result.points == (10 if fires else 0)
    assert outcome(result, rule)["outcome"] == ("fired" if fires else "outside_window")


def test_window_uses_the_event_time_even_when_the_clock_has_moved_on():
    black_friday = compiled(kind="event", points=10, active_from=dt.datetime(2026, 11, 27, tzinfo=UTC),
                            active_until=dt.datetime(2026, 11, 28, tzinfo=UTC))
    during = dt.datetime(2026, 11, 27, 15, tzinfo=UTC)
    assert run([black_friday], occurred_at=during, now=dt.datetime(2026, 11, 29, tzinfo=UTC)).points == 10
    assert run([black_friday], occurred_at=dt.datetime(2026, 11, 26, tzinfo=UTC), now=during).points == 0


def test_missing_occurred_at_falls_back_to_now():
    rule = compiled(kind="event", points=10, active_from=dt.datetime(2026, 11, 22, 11, tzinfo=UTC))
    assert run([rule], occurred_at=None, now=NOW).points == 10


# --- stacking ------------------------------------------------------------------------------


def test_cumulative_rules_add_up():
    a = compiled(kind="spend", name="a")
    b = compiled(kind="event", name="b", points=5)
    assert awarded(run([a, b], properties={"amount": "10.00"})) == {"a": 10, "b": 5}


def test_highest_priority_exclusive_rule_that_fires_wins_alone():
    promo = compiled(kind="event", name="promo", points=50, priority=10, stacking="exclusive")
    bigger = compiled(kind="event", name="bigger", points=100, priority=5, stacking="exclusive")
    spend = compiled(kind="spend", name="spend", priority=20)
    double = compiled(kind="multiplier", name="double", multiplier="2")
    result = run([spend, promo, bigger, double], properties={"amount": "40.00"})
    assert awarded(result) == {"promo": 50}
    assert outcome(result, promo)["outcome"] == "fired"
    for loser in (bigger, spend, double):
        entry = outcome(result, loser)
        assert entry["outcome"] == "beaten_by_exclusive"
        assert entry["points"] == 0 and "promo" in entry["detail"]


def test_exclusive_winner_is_chosen_by_priority_whatever_the_order_of_the_rules():
    """qualify is the one entry point (API, workers, admin preview, backtests); the winner must
    not depend on the caller passing the rules pre-sorted."""
    low = compiled(kind="event", name="low", points=100, priority=1, stacking="exclusive")
    high = compiled(kind="event", name="high", points=50, priority=10, stacking="exclusive")
    assert awarded(run([high, low])) == {"high": 50}
    assert awarded(run([low, high])) == {"high": 50}


@pytest.mark.parametrize(
    ("exclusive_fields", "why"),
    [
        ({"condition": "member.tier == 'gold'"}, "condition_false"),
        ({"event_type": "signup"}, "not_this_event_type"),
        ({"active_until": dt.datetime(2026, 1, 1, tzinfo=UTC)}, "outside_window"),
        ({"kind": "spend", "min_amount": "100.00"}, "no_points"),
        ({"member_cap_period": "lifetime", "member_cap_times": 1}, "cap_reached"),
        ({"condition": "event.properties.coupon == 'X'"}, "error"),
    ],
)
def test_an_exclusive_rule_that_does_not_fire_beats_nobody(exclusive_fields, why):
    fields = {"kind": "event", "name": "vip", "points": 500, "priority": 100, "stacking": "exclusive",
              **exclusive_fields}
    vip = compiled(**fields)
    spend = compiled(kind="spend", name="spend")
    double = compiled(kind="multiplier", name="double", multiplier="2")
    result = run([vip, spend, double], properties={"amount": "40.00"}, member={"tier": "silver"},
                 usage={(vip.id, "lifetime"): (500, 1)})
    assert outcome(result, vip)["outcome"] == why
    assert awarded(result) == {"spend": 40, "double": 40}


def test_the_next_exclusive_rule_wins_when_the_first_does_not_fire():
    gold = compiled(kind="event", name="gold", points=500, priority=100, stacking="exclusive",
                    condition="member.tier == 'gold'")
    promo = compiled(kind="event", name="promo", points=50, priority=10, stacking="exclusive")
    spend = compiled(kind="spend", name="spend")
    result = run([gold, promo, spend], properties={"amount": "40.00"})
    assert awarded(result) == {"promo": 50}
    assert outcome(result, gold)["outcome"] == "condition_false"
    assert outcome(result, spend)["outcome"] == "beaten_by_exclusive"


# --- CEL conditions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "member", "properties", "now", "fires"),
    [
        ("member.tier == 'gold'", {"tier": "gold"}, {}, NOW, True),
        ("member.tier == 'gold'", {"tier": "silver"}, {}, NOW, False),
        ("has(member.attributes.vip) && member.attributes.vip", {"attributes": {"vip": True}}, {}, NOW, True),
        ("has(member.attributes.vip) && member.attributes.vip", {"attributes": {"vip": False}}, {}, NOW, False),
        ("has(member.attributes.vip) && member.attributes.vip", {"attributes": {}}, {}, NOW, False),
        ("member.attributes.city in ['Paris', 'Lyon']", {"attributes": {"city": "Lyon"}}, {}, NOW, True),
        ("event.properties.amount > 50.0", {}, {"amount": "50.01"}, NOW, True),
        ("event.properties.amount > 50.0", {}, {"amount": "50.00"}, NOW, False),
        ("event.properties.amount >= 50.0", {}, {"amount": "50"}, NOW, True),
        ("event.properties.channel == 'pos'", {}, {"channel": "pos"}, NOW, True),
        ("event.properties.channel == 'pos'", {}, {"channel": "web"}, NOW, False),
        ("has(event.properties.channel) && event.properties.channel == 'pos'", {}, {}, NOW, False),
        ("event.properties.items.exists(i, i.category == 'coffee' && i.unit_price > 4.0)", {},
         {"items": COFFEE_ITEMS}, NOW, True),
        ("event.properties.items.exists(i, i.category == 'tea')", {}, {"items": COFFEE_ITEMS}, NOW, False),
        ("event.type == 'purchase' && event.id == 'e-1'", {}, {}, NOW, True),
        ("program.slug == 'coffee'", {}, {}, NOW, True),
        ("now < timestamp('2026-12-01T00:00:00Z')", {}, {}, NOW, True),
        ("now < timestamp('2026-12-01T00:00:00Z')", {}, {}, dt.datetime(2026, 12, 2, tzinfo=UTC), False),
        ("now.getDayOfWeek() == 0", {}, {}, NOW, True),  # 22 November 2026 is a Sunday
        ("now - member.enrolled_at < duration('720h')", {"enrolled_at": NOW - dt.timedelta(days=3)}, {}, NOW, True),
        ("now - member.enrolled_at < duration('720h')", {"enrolled_at": NOW - dt.timedelta(days=40)}, {}, NOW,
         False),
        ("event.properties.channel == 'pos' && member.tier == 'gold'", {"tier": "gold"}, {"channel": "pos"}, NOW,
         True),
        ("event.properties.channel == 'pos' && member.tier == 'gold'", {"tier": "gold"}, {"channel": "web"}, NOW,
         False),
    ],
)
def test_condition(condition, member, properties, now, fires):
    rule = compiled(kind="event", points=10, condition=condition)
    result = run([rule], properties=properties, member=member, now=now)
    assert outcome(result, rule)["outcome"] == ("fired" if fires else "condition_false")
    assert result.points == (10 if fires else 0)


# --- points expressions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expression", "member", "properties", "points"),
    [
        ("spend", "int(event.properties.amount) * 2", {}, {"amount": "42.50"}, 84),
        ("spend", "event.properties.amount * 1.5", {}, {"amount": "42.50"}, 63),  # 63.75, a double: truncated
        ("event", "member.tier == 'gold' ? 100 : 10", {"tier": "gold"}, {}, 100),
        ("event", "member.tier == 'gold' ? 100 : 10", {"tier": "silver"}, {}, 10),
        ("event", "size(event.properties.items) * 3", {}, {"items": COFFEE_ITEMS}, 9),
        ("product", "event.properties.items.filter(i, i.category == 'coffee').size() * 7", {},
         {"items": COFFEE_ITEMS}, 14),
        ("event", "0", {}, {}, 0),
        ("event", "-25", {}, {}, 0),
    ],
)
def test_points_expression_computes_the_points(kind, expression, member, properties, points):
    rule = compiled(kind=kind, points=999 if kind == "event" else None, skus=["LATTE"],
                    points_expression=expression)
    result = run([rule], properties=properties, member=member)
    assert result.points == points
    assert outcome(result, rule)["outcome"] == ("fired" if points else "no_points")


def test_points_expression_is_still_capped():
    rule = compiled(kind="event", points_expression="1000", max_points_per_event=250)
    assert run([rule]).points == 250


@pytest.mark.parametrize("expression", ["'ten'", "true", "[1, 2]", "event.properties"])
def test_points_expression_that_is_not_a_number_is_an_error(expression):
    rule = compiled(kind="event", points_expression=expression)
    other = compiled(kind="event", name="other", points=3)
    result = run([rule, other])
    entry = outcome(result, rule)
    assert entry["outcome"] == "error" and entry["detail"]
    assert awarded(result) == {"other": 3}


# --- runtime errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expression", "properties"),
    [
        ("condition", "event.properties.coupon == 'WELCOME'", {}),  # no such key
        ("condition", "int(event.properties.channel) > 0", {"channel": "pos"}),  # bad conversion
        ("condition", "event.properties.channel + 1 == 2", {"channel": "pos"}),  # type mismatch
        ("condition", "member.attributes.vip", {}),  # attribute the member does not have
        ("points_expression", "event.properties.nope * 2", {}),
        ("points_expression", "'a' + 1", {}),
        # arithmetic errors are runtime errors too
        ("condition", "100 / event.properties.visits > 1", {"visits": 0}),
        ("condition", "100 % event.properties.visits == 0", {"visits": 0}),
        ("points_expression", "1000 / event.properties.visits", {"visits": 0}),
        ("points_expression", "9223372036854775807 + event.properties.visits", {"visits": 1}),
        ("condition", "event.properties.tags[3] == 'x'", {"tags": ["a"]}),
    ],
)
def test_a_cel_runtime_error_is_traced_and_the_rule_does_not_fire(field, expression, properties):
    broken = compiled(kind="event", name="broken", points=10, **{field: expression})
    fine = compiled(kind="event", name="fine", points=3)
    result = run([broken, fine], type="signup", properties=properties)
    entry = outcome(result, broken)
    assert entry["outcome"] == "error"
    assert entry["detail"] and entry["points"] == 0
    assert awarded(result) == {"fine": 3}


# --- the trace and purity ------------------------------------------------------------------


def test_the_trace_explains_every_rule_once():
    rules = {
        "fired": compiled(kind="spend", name="spend"),
        "condition_false": compiled(kind="event", points=5, condition="member.tier == 'gold'"),
        "not_this_event_type": compiled(kind="event", points=5, event_type="signup"),
        "outside_window": compiled(kind="event", points=5, active_until=dt.datetime(2026, 1, 1, tzinfo=UTC)),
        "cap_reached": compiled(kind="event", points=5, member_cap_period="day", member_cap_times=1),
        "no_points": compiled(kind="product", skus=["TEA"], points_per_item=5),
        "error": compiled(kind="event", points=5, condition="event.properties.coupon == 'X'"),
    }
    capped = rules["cap_reached"]
    result = run(list(rules.values()), properties={"amount": "12.00"},
                 usage={(capped.id, "2026-11-22"): (5, 1)})
    assert len(result.trace) == len(rules)
    for expected, rule in rules.items():
        entry = outcome(result, rule)
        assert entry["outcome"] == expected
        assert entry["rule"] == rule.name
        assert set(entry) == {"rule_id", "rule", "outcome", "points", "detail"}
    assert outcome(result, rules["fired"])["points"] == 12
    assert result.points == 12
    assert [a.as_dict() for a in result.awards] == [
        {"points": 12, "rule": "spend", "rule_id": rules["fired"].id, "campaign": None}
    ]


@pytest.mark.django_db
def test_qualify_is_pure(django_assert_num_queries):
    rules = [
        compiled(kind="spend", name="spend", member_cap_period="day", member_cap_points=100),
        compiled(kind="event", name="gold", points=20, condition="member.tier == 'gold'"),
        compiled(kind="multiplier", name="double", multiplier="2", condition="now.getDayOfWeek() == 0"),
    ]
    usage = {(rules[0].id, "2026-11-22"): (70, 2)}
    frozen = copy.deepcopy(usage)
    with django_assert_num_queries(0):
        first = run(rules, properties={"amount": "50.00"}, member={"tier": "gold"}, usage=usage)
        second = run(rules, properties={"amount": "50.00"}, member={"tier": "gold"}, usage=usage)
    assert awarded(first) == {"spend": 30, "gold": 20, "double": 50}
    assert (first.awards, first.trace) == (second.awards, second.trace)
    assert usage == frozen


@pytest.mark.parametrize("condition", ["member.tier", "event.properties.amount", "null", "1 + 1"])
def test_a_condition_that_gives_neither_true_nor_false_is_an_error_not_a_false(condition):
    rule = compiled(kind="event", event_type="purchase", points=5, condition=condition)
    result = run([rule], properties={"amount": "10.00"})
    entry = outcome(result, rule)
    assert entry["outcome"] == "error" and "not true or false" in entry["detail"], entry
    assert result.points == 0


def test_an_item_sent_without_a_unit_price_has_none_in_cel():
    priced = compiled(kind="event", event_type="purchase", points=1, name="all priced",
                      condition="event.properties.items.all(i, has(i.unit_price))")
    some = compiled(kind="event", event_type="purchase", points=1, name="some priced",
                    condition="event.properties.items.exists(i, has(i.unit_price) && i.unit_price > 2.0)")
    result = run([priced, some], properties={"amount": "10.00", "items": [
        {"sku": "A", "quantity": 1, "unit_price": "2.50"}, {"sku": "B", "quantity": 1}]})
    assert outcome(result, priced)["outcome"] == "condition_false"
    assert outcome(result, some)["outcome"] == "fired"


@pytest.mark.parametrize("condition", ["event.occurred_at.getHours() == 14",  # decided in Python
                                       "event.occurred_at.getHours() == 14 && size(event.id) > 0",
                                       "int(event.occurred_at.getHours()) + 0 == 14"])
def test_the_event_time_is_read_in_utc_whatever_offset_the_partner_wrote(condition):
    from rules.pipeline import event_context
    from rules.validation import CleanEvent

    written = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # 14:30 UTC
    rule = compiled(kind="event", event_type="purchase", points=5, condition=condition)
    event = event_context(CleanEvent("e-1", "purchase", "c-1", written, {"amount": "1.00"}))
    assert event["occurred_at"] == written and event["occurred_at"].utcoffset() == dt.timedelta(0)
    result = run([rule], properties={"amount": "1.00"}, occurred_at=event["occurred_at"])
    assert outcome(result, rule)["outcome"] == "fired"


def test_an_amount_that_is_no_number_leaves_the_other_rules_alone():
    # "sNaN" is a decimal to Python, whose float() raises: a fixed bonus must not depend on it.
    bonus = compiled(kind="event", event_type="signup", points=100)
    spend = compiled(kind="spend", event_type="signup")
    for amount in ("sNaN", "NaN", "Infinity", "-Infinity"):
        result = run([bonus, spend], type="signup", properties={"amount": amount})
        assert result.points == 100, (amount, result.trace)


@pytest.mark.parametrize("rounding, amount, points", [
    ("down", "0.99999999999999999999999999999", 0),
    ("up", "1.0000000000000000000000000001", 2),
    ("nearest", "2.49999999999999999999999999999", 2),
])
def test_rounding_applies_to_the_exact_product_however_many_digits(rounding, amount, points):
    # 28 digits is Decimal's default precision: the product was rounded to it before the rule's rounding.
    rule = compiled(kind="spend", rounding=rounding)
    assert run([rule], type="signup", properties={"amount": amount}).points == points
