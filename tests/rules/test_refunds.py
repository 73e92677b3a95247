"""Refund events: the points a purchase earned come back in proportion, never more, never drifting."""

from decimal import Decimal

import pytest

from ledger.audit import run_audit
from ledger.models import Balance, Entry, Operation
from ledger.services import points_redeem
from rules import pipeline
from rules.models import InboundEvent, RuleUsage
from tests.rules import fixtures_rules
from tests.rules.fixtures_rules import purchase, refund

make_rule = fixtures_rules.make_rule

ITEMS = [{"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": "4.25"},
         {"sku": "MUFFIN", "category": "bakery", "quantity": 1, "unit_price": "3.00"}]


@pytest.fixture
def send(program):
    def send(payload, *, to=None) -> InboundEvent:
        return pipeline.event_submit(program=to or program, partner=None, payload=payload).event

    return send


@pytest.fixture
def spend(program, make_rule):
    return make_rule(program, kind="spend", name="spend", event_type="purchase")


def available(member) -> int:
    return Balance.objects.get(member=member).available


def reversed_points(member) -> int:
    return -sum(Entry.objects.filter(member=member, kind="reverse").values_list("points", flat=True))


def test_full_refund_reverses_everything(send, member, spend):
    bought = send(purchase("p1", member.external_id, amount="100.00", order_id="o-1"))
    assert bought.points == 100
    back = send(refund("r1", member.external_id, "o-1"))
    assert back.status == "processed", back.error
    assert back.points == -100
    assert back.awards == [{"points": -100, "rule": "refund", "rule_id": None, "campaign": None,
                            "refunded_amount": "100.00", "purchase": "p1"}]
    assert back.trace[0]["outcome"] == "fired"
    assert available(member) == 0
    assert reversed_points(member) == 100
    entry = Entry.objects.get(member=member, kind="reverse")
    assert (entry.source_type, entry.source_id) == ("event", "r1")
    assert run_audit() == []


def test_the_same_refund_sent_again_reverses_nothing_more(send, member, spend):
    send(purchase("p1", member.external_id, amount="100.00", order_id="o-1"))
    send(refund("r1", member.external_id, "o-1", amount="30.00"))
    again = pipeline.event_submit(program=member.program, partner=None,
                                  payload=refund("r1", member.external_id, "o-1", amount="30.00"))
    assert again.created is False
    assert available(member) == 70
    assert Entry.objects.filter(member=member, kind="reverse").count() == 1
    assert run_audit() == []


@pytest.mark.parametrize(
    ("amount", "rule", "refunds", "reversed_each"),
    [
        ("100.00", {}, ["25.00"], [25]),
        ("100.00", {}, ["33.33", "33.33", "33.34"], [33, 33, 34]),
        ("100.00", {}, ["0.50", "0.50"], [0, 1]),
        ("10.00", {}, ["3.33", "3.33", "3.33", "0.01"], [3, 3, 3, 1]),
        ("99.99", {}, ["33.33", "33.33", "33.33"], [33, 33, 33]),  # earned 99
        ("10.00", {"points_per_unit": Decimal("0.7")}, ["5.00", "5.00"], [3, 4]),  # earned 7
        ("3.00", {"points_per_unit": Decimal("3.3333"), "rounding": "nearest"}, ["1.00", "1.00", "1.00"],
         [3, 3, 4]),  # earned 10
        ("7.00", {}, ["1.00"] * 7, [1] * 7),
        ("100.00", {}, ["60.00", "60.00"], [60, 40]),  # the second is capped at what is left
        ("100.00", {}, ["100.00", "5.00"], [100, 0]),
        ("100.00", {}, ["150.00"], [100]),
    ],
)
def test_partial_refunds_add_up_without_drift(program, make_rule, send, member, amount, rule, refunds,
                                              reversed_each):
    make_rule(program, kind="spend", name="spend", **rule)
    earned = send(purchase("p", member.external_id, amount=amount, order_id="o")).points
    got = []
    for n, refunded in enumerate(refunds):
        event = send(refund(f"r{n}", member.external_id, "o", amount=refunded))
        assert event.status == "processed", event.error
        got.append(-event.points)
        assert reversed_points(member) <= earned
        assert run_audit() == []
    assert got == reversed_each
    assert reversed_points(member) == sum(reversed_each)
    assert available(member) == earned - sum(reversed_each)
    refunded_total = min(sum(Decimal(r) for r in refunds), Decimal(amount))
    if refunded_total == Decimal(amount):
        assert sum(reversed_each) == earned  # a fully refunded purchase gives back exactly what it earned


def test_refund_by_items_uses_the_purchase_prices(program, make_rule, send, member):
    make_rule(program, kind="spend", name="spend", points_per_unit=Decimal(2))  # 11.50 -> 23 points
    assert send(purchase("p", member.external_id, amount="11.50", order_id="o", items=ITEMS)).points == 23
    steps = [
        ([{"sku": "LATTE", "quantity": 1}], "4.25", 8),  # floor(23 x 4.25 / 11.50) = 8
        ([{"sku": "MUFFIN", "quantity": 1}], "3.00", 6),  # floor(23 x 7.25 / 11.50) = 14
        ([{"sku": "LATTE", "quantity": 1}], "4.25", 9),  # everything back: 23
    ]
    for n, (items, refunded_amount, points) in enumerate(steps):
        event = send(refund(f"r{n}", member.external_id, "o", items=items))
        assert event.status == "processed", event.error
        assert (-event.points, event.awards[0]["refunded_amount"]) == (points, refunded_amount)
    assert available(member) == 0
    assert run_audit() == []


def test_refund_by_items_with_its_own_prices(program, make_rule, send, member):
    make_rule(program, kind="spend", name="spend", points_per_unit=Decimal(2))
    send(purchase("p", member.external_id, amount="11.50", order_id="o", items=ITEMS))
    event = send(refund("r", member.external_id, "o", items=[{"sku": "LATTE", "quantity": 1, "unit_price": "2.30"}]))
    assert -event.points == 4  # floor(23 x 2.30 / 11.50)
    assert available(member) == 19
    assert run_audit() == []


def test_refund_of_more_items_than_were_bought_is_capped(program, make_rule, send, member):
    make_rule(program, kind="spend", name="spend", points_per_unit=Decimal(2))
    send(purchase("p", member.external_id, amount="11.50", order_id="o", items=ITEMS))
    first = send(refund("r1", member.external_id, "o", items=[{"sku": "LATTE", "quantity": 5}]))
    assert -first.points == 23
    assert "capped" in first.trace[0]["detail"]
    second = send(refund("r2", member.external_id, "o", items=[{"sku": "MUFFIN", "quantity": 1}]))
    assert second.status == "processed"
    assert (second.points, second.trace[0]["outcome"]) == (0, "no_points")
    assert reversed_points(member) == 23
    assert available(member) == 0
    assert run_audit() == []


def test_refund_of_an_item_whose_price_is_unknown_is_rejected(send, member, spend):
    send(purchase("p", member.external_id, amount="11.50", order_id="o", items=ITEMS))
    event = send(refund("r", member.external_id, "o", items=[{"sku": "TEA", "quantity": 1}]))
    assert event.status == "rejected"
    assert (event.error["code"], event.error["param"]) == ("invalid_properties", "properties.items")
    assert available(member) == 11


def test_refund_of_an_unknown_order_is_rejected_kept_and_can_be_sent_again(send, member, spend):
    event = send(refund("r", member.external_id, "o-later", amount="5.00"))
    assert event.status == "rejected"
    assert (event.error["code"], event.error["param"]) == ("purchase_not_found", "properties.order_id")
    stored = InboundEvent.objects.get(event_id="r")
    assert (stored.status, stored.error, stored.order_id) == ("rejected", event.error, "o-later")
    assert not Entry.objects.filter(member=member, kind="reverse").exists()

    send(purchase("p", member.external_id, amount="20.00", order_id="o-later"))
    again = send(refund("r", member.external_id, "o-later", amount="5.00"))
    assert (again.status, again.points) == ("processed", -5)
    assert available(member) == 15
    assert run_audit() == []


def test_refund_of_another_members_order_is_rejected(program, send, member, make_member, spend):
    other = make_member(program)
    send(purchase("p", member.external_id, amount="20.00", order_id="o"))
    event = send(refund("r", other.external_id, "o"))
    assert (event.status, event.error["code"]) == ("rejected", "purchase_member_mismatch")
    assert available(member) == 20


def test_refund_of_a_purchase_that_earned_nothing(send, member):
    send(purchase("p", member.external_id, amount="20.00", order_id="o"))
    event = send(refund("r", member.external_id, "o"))
    assert (event.status, event.points) == ("processed", 0)
    assert not Entry.objects.filter(member=member).exists()
    assert run_audit() == []


# --- after the points were spent -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "refunded", "expected_available", "uncollected"),
    [
        (100, None, 0, 100),
        (60, None, 0, 60),  # 40 still in the lot come back, 60 cannot
        (60, "50.00", 0, 10),
        (30, "50.00", 20, 0),
    ],
)
def test_refund_after_spending_without_negative_balances(make_program, make_member, make_rule, spent, refunded,
                                                          expected_available, uncollected):
    program = make_program(allow_negative_balance=False)
    member = make_member(program)
    make_rule(program, kind="spend", name="spend")
    pipeline.event_submit(program=program, partner=None,
                          payload=purchase("p", member.external_id, amount="100.00", order_id="o"))
    points_redeem(member=member, points=spent, key="spend-it")
    props = {"amount": refunded} if refunded else {}
    event = pipeline.event_submit(program=program, partner=None,
                                  payload=refund("r", member.external_id, "o", **props)).event
    assert event.status == "processed", event.error
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt) == (expected_available, 0)
    result = Operation.objects.get(key=pipeline.earn_key(event), kind="reverse").result
    assert result["uncollected"] == uncollected
    assert result["reversed"] == result["requested"] - uncollected
    assert run_audit() == []


def test_refund_takes_back_from_the_members_other_points_first(make_program, make_member, make_rule):
    program = make_program(allow_negative_balance=False)
    member = make_member(program)
    make_rule(program, kind="spend", name="spend")
    for event_id, amount in (("p1", "100.00"), ("p2", "50.00")):
        pipeline.event_submit(program=program, partner=None,
                              payload=purchase(event_id, member.external_id, amount=amount, order_id=event_id))
    points_redeem(member=member, points=100, key="spend-it")  # the soonest-expiring lot: p1's
    pipeline.event_submit(program=program, partner=None, payload=refund("r", member.external_id, "p1"))
    assert Balance.objects.get(member=member).available == 0
    assert reversed_points(member) == 50
    assert run_audit() == []


def test_refund_after_spending_with_negative_balances(make_program, make_member, make_rule):
    program = make_program(allow_negative_balance=True)
    member = make_member(program)
    make_rule(program, kind="spend", name="spend")

    def send(payload):
        return pipeline.event_submit(program=program, partner=None, payload=payload).event

    send(purchase("p", member.external_id, amount="100.00", order_id="o"))
    points_redeem(member=member, points=100, key="spend-it")
    send(refund("r1", member.external_id, "o", amount="40.00"))
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt) == (-40, 40)
    send(refund("r2", member.external_id, "o"))
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt) == (-100, 100)
    assert reversed_points(member) == 100
    assert run_audit() == []
    send(purchase("p2", member.external_id, amount="30.00", order_id="o2"))  # new points settle the debt first
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt) == (-70, 70)
    assert run_audit() == []


# --- refunds through the batch pipeline ----------------------------------------------------


def test_refund_processed_by_a_worker_in_the_same_batch_as_its_purchase(program, member, spend):
    result = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        refund("r0", member.external_id, "o-none"),  # no such purchase: rejected when processed
        purchase("p", member.external_id, amount="80.00", order_id="o"),
        refund("r", member.external_id, "o", amount="20.00"),
    ])
    assert (result.accepted, result.rejected) == (3, [])
    assert pipeline.events_process(result.received_ids) == 3
    events = {e.event_id: e for e in InboundEvent.objects.filter(program=program)}
    assert (events["p"].status, events["p"].points) == ("processed", 80)
    assert (events["r"].status, events["r"].points) == ("processed", -20)
    assert (events["r0"].status, events["r0"].error["code"]) == ("rejected", "purchase_not_found")
    assert available(member) == 60
    assert run_audit() == []


def test_a_rejected_refund_from_a_newcomer_enrolls_nobody(send, program, spend):
    """A program that enrolls on first event: a refund of an unknown order from an unknown
    member is rejected, and the enrollment it made on the way is undone with it."""
    from accounts.models import Member, Program

    Program.objects.filter(pk=program.pk).update(enroll_on_first_event=True)
    program.refresh_from_db()
    back = send(refund("r-new", "newcomer", "o-none"), to=program)
    assert (back.status, back.error["code"]) == ("rejected", "purchase_not_found")
    assert not Member.objects.filter(program=program, external_id="newcomer").exists()
    assert run_audit() == []


# --- what a refund gives back to capped rules ---------------------------------------------


@pytest.fixture
def daily_bonus(program, make_rule):
    return make_rule(program, kind="event", name="first purchase of the day", event_type="purchase", points=50,
                     member_cap_period="day", member_cap_times=1)


def usage(rule, member) -> list[tuple]:
    return list(RuleUsage.objects.filter(rule=rule, member_id=member.pk).values_list("period", "points", "times"))


def outcome(event, rule) -> tuple:
    return next((entry["outcome"], entry["points"]) for entry in event.trace if entry["rule_id"] == rule.pk)


def test_a_full_refund_gives_a_once_a_day_bonus_back(send, member, spend, daily_bonus):
    assert send(purchase("p1", member.external_id, amount="10.00", order_id="o-1")).points == 60
    second = send(purchase("p2", member.external_id, amount="10.00", order_id="o-2"))
    assert (second.points, outcome(second, daily_bonus)) == (10, ("cap_reached", 0))
    back = send(refund("r1", member.external_id, "o-1"))
    assert (back.status, back.points) == ("processed", -60)
    assert "no longer counted toward caps: 'first purchase of the day' 50 points, 1 time" in back.trace[0]["detail"]
    assert usage(daily_bonus, member) == [("2026-11-22", 0, 0)]
    third = send(purchase("p3", member.external_id, amount="10.00", order_id="o-3"))
    assert (third.points, outcome(third, daily_bonus)) == (60, ("fired", 50))
    assert usage(daily_bonus, member) == [("2026-11-22", 50, 1)]
    assert available(member) == 10 + 60
    assert run_audit() == []


def test_a_partial_refund_leaves_the_bonus_used_until_the_rest_comes_back(send, member, spend, daily_bonus):
    send(purchase("p1", member.external_id, amount="10.00", order_id="o-1"))  # 10 + 50
    half = send(refund("r1", member.external_id, "o-1", amount="5.00"))
    assert half.points == -30
    assert usage(daily_bonus, member) == [("2026-11-22", 25, 1)]  # half the points, but it still fired
    again = send(purchase("p2", member.external_id, amount="10.00", order_id="o-2"))
    assert outcome(again, daily_bonus) == ("cap_reached", 0)
    rest = send(refund("r2", member.external_id, "o-1", amount="5.00"))
    assert rest.points == -30
    assert usage(daily_bonus, member) == [("2026-11-22", 0, 0)]
    more = send(refund("r3", member.external_id, "o-1", amount="5.00"))  # nothing left to refund
    assert (more.points, usage(daily_bonus, member)) == (0, [("2026-11-22", 0, 0)])
    assert "caps" not in more.trace[0]["detail"]
    assert outcome(send(purchase("p3", member.external_id, amount="10.00", order_id="o-3")), daily_bonus) == (
        "fired", 50)
    assert run_audit() == []


def test_a_points_cap_counts_only_what_was_not_refunded(program, make_rule, send, member):
    capped = make_rule(program, kind="spend", name="capped spend", event_type="purchase",
                       member_cap_period="month", member_cap_points=100)
    assert send(purchase("p1", member.external_id, amount="100.00", order_id="o-1")).points == 100
    assert outcome(send(purchase("p2", member.external_id, amount="10.00", order_id="o-2")), capped) == (
        "cap_reached", 0)
    assert send(refund("r1", member.external_id, "o-1", amount="30.00")).points == -30
    assert usage(capped, member) == [("2026-11", 70, 1)]
    assert send(purchase("p3", member.external_id, amount="50.00", order_id="o-3")).points == 30
    assert usage(capped, member) == [("2026-11", 100, 2)]
    assert run_audit() == []


def test_a_third_refunded_gives_back_a_third_of_a_points_cap(program, make_rule, send, member):
    # 1.00 of 3.00 is a third: as a 28-digit decimal, 3 x 0.333...3 floored to 0 points given back.
    capped = make_rule(program, kind="spend", name="capped spend", event_type="purchase",
                       member_cap_period="month", member_cap_points=100)
    assert send(purchase("p1", member.external_id, amount="3.00", order_id="o-1")).points == 3
    assert send(refund("r1", member.external_id, "o-1", amount="1.00")).points == -1
    assert usage(capped, member) == [("2026-11", 2, 1)]
    assert send(refund("r2", member.external_id, "o-1", amount="1.00")).points == -1
    assert usage(capped, member) == [("2026-11", 1, 1)]
    assert send(refund("r3", member.external_id, "o-1", amount="1.00")).points == -1
    assert usage(capped, member) == [("2026-11", 0, 0)]
    assert run_audit() == []


def test_a_refund_leaves_the_caps_of_rules_deleted_or_uncapped_since(send, member, spend, daily_bonus):
    send(purchase("p1", member.external_id, amount="10.00", order_id="o-1"))
    daily_bonus.member_cap_period, daily_bonus.member_cap_times = "", None
    daily_bonus.save()
    back = send(refund("r1", member.external_id, "o-1"))
    assert (back.status, back.points) == ("processed", -60)
    assert usage(daily_bonus, member) == [("2026-11-22", 50, 1)]
    assert "caps" not in back.trace[0]["detail"]


def test_caps_given_back_by_a_refund_a_worker_processes(program, member, spend, daily_bonus):
    first = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        purchase("p", member.external_id, amount="10.00", order_id="o"),
        refund("r", member.external_id, "o"),
    ])
    assert pipeline.events_process(first.received_ids) == 2
    assert usage(daily_bonus, member) == [("2026-11-22", 0, 0)]
    second = pipeline.events_submit_batch(program=program, partner=None, payloads=[
        purchase("p2", member.external_id, amount="10.00", order_id="o-2")])
    assert pipeline.events_process(second.received_ids) == 1
    assert InboundEvent.objects.get(program=program, event_id="p2").points == 60
    assert available(member) == 60
    assert run_audit() == []
