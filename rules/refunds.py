"""Refunds: take back the points a purchase earned, in proportion to what came back.

The refunded amount is ``properties.amount``, else the value of ``properties.items`` (at the
refund's unit prices, or the purchase's for the same SKU), else the whole purchase. Refunds
of one order add up and are capped at the purchase amount, and the points reversed so far
are always ``floor(earned x refunded / purchase amount)``: several partial refunds never take
back more than was earned, and rounding never drifts.

A refund whose purchase is unknown (or not processed yet) is rejected with code
``purchase_not_found`` and kept; "reprocess" in the admin tries it again later.

What a refund takes back from a capped rule's award no longer counts toward that rule's cap for
the member, in the cap period of the purchase: the points in the same proportion (points caps),
and the time the rule fired once the whole purchase has come back (times caps). A "once a day"
bonus whose purchase is returned in full can be earned again that day; a partial return leaves it
used.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

from accounts.models import Member, Program
from ledger.models import Operation
from ledger.services import Source, points_reverse
from loyalty.db import prepared_cursor
from loyalty.jsontext import pg_json
from rules.engine import cap_period_key
from rules.models import InboundEvent, Rule
from rules.validation import CleanEvent, EventInvalid


def _amount(properties: dict, purchase_properties: dict) -> Decimal | None:
    if properties.get("amount") is not None:
        return Decimal(str(properties["amount"]))
    items = properties.get("items")
    if not items:
        return None
    prices = {item.get("sku"): item.get("unit_price") for item in purchase_properties.get("items") or ()}
    total = Decimal(0)
    for item in items:
        price = item.get("unit_price", prices.get(item.get("sku")))
        if price is None:
            raise EventInvalid(f"No unit price for refunded SKU {item.get('sku')!r}.", param="properties.items",
                               code="invalid_properties")
        total += Decimal(str(price)) * int(item.get("quantity", 1))
    return total


def refund_post(*, program: Program, event: InboundEvent, clean: CleanEvent, member: Member, now: dt.datetime) -> None:
    order_id = clean.order_id
    purchase = (
        InboundEvent.objects.filter(program=program, type="purchase", order_id=order_id,
                                    status=InboundEvent.Status.PROCESSED)
        .order_by("id").first()
    )
    if purchase is None:
        raise EventInvalid(f"No processed purchase with order_id {order_id!r}.", param="properties.order_id",
                           code="purchase_not_found")
    if purchase.member_id != member.pk:
        raise EventInvalid("The purchase with this order_id belongs to another member.", param="member_id",
                           code="purchase_member_mismatch")
    bought = Decimal(str(purchase.payload["properties"]["amount"]))
    refunded = _amount(clean.properties, purchase.payload.get("properties") or {})
    refunded = bought if refunded is None else refunded
    earlier = InboundEvent.objects.filter(
        program=program, type="refund", order_id=order_id, status=InboundEvent.Status.PROCESSED
    ).exclude(pk=event.pk)
    earlier_amount = sum((Decimal(a["refunded_amount"]) for e in earlier for a in e.awards), Decimal(0))
    earlier_points = -sum(e.points for e in earlier)
    total_refunded = min(earlier_amount + refunded, bought)
    earned = purchase.points
    target = int((Decimal(earned) * total_refunded / bought).to_integral_value(ROUND_FLOOR)) if bought else earned
    points = max(target - earlier_points, 0)
    detail = f"{total_refunded} of {bought} refunded in all"
    if earlier_amount + refunded > bought:
        detail += f" (refunds of {earlier_amount + refunded} capped at the purchase amount)"
    before = _share(min(earlier_amount, bought), bought, refunded_before=earlier.exists())
    given_back = caps_give_back(purchase, member.pk, before, _share(total_refunded, bought, refunded_before=True))
    if given_back:
        detail += f"; no longer counted toward caps: {given_back}"
    reversed_points = 0
    if points:
        earn = Operation.objects.get(program=program, key=f"event:{purchase.pk}")
        reversal = points_reverse(earn=earn, points=points, key=f"event:{event.pk}",
                                  description=f"refund {clean.event_id}", source=Source("event", clean.event_id),
                                  now=now)
        reversed_points = reversal.result["reversed"]
        if reversal.result.get("expired"):
            detail += f"; {reversal.result['expired']} points had already expired (not taken again)"
        if reversal.result["uncollected"]:
            detail += f"; {reversal.result['uncollected']} points already spent could not be taken back"
            if reversal.result.get("claimed"):
                detail += (f" ({reversal.result['claimed']} of them are owed by held or redeemed points:"
                           " they pay the refund if they come back)")
    event.points = -points
    event.awards = [{"points": -reversed_points, "rule": "refund", "rule_id": None, "campaign": None,
                     "refunded_amount": str(total_refunded - earlier_amount), "purchase": purchase.event_id}]
    event.trace = [{"rule_id": None, "rule": "refund", "outcome": "fired" if points else "no_points",
                    "points": -reversed_points, "detail": detail}]


def _share(amount: Decimal, bought: Decimal, *, refunded_before: bool) -> Fraction:
    """The share of the purchase refunded by ``amount``, exact (a third is a third, not 0.333...3,
    whose product with 3 points would floor to 0); a purchase of 0 is all refunded by its first
    refund."""
    if bought:
        return Fraction(amount) / Fraction(bought)
    return Fraction(1) if refunded_before else Fraction(0)


_GIVE_BACK_SQL = """
UPDATE rules_ruleusage u SET points = GREATEST(u.points - x.pt, 0), times = GREATEST(u.times - x.t, 0)
FROM json_to_recordset(%s::json) AS x(r bigint, m bigint, p text, pt bigint, t int)
WHERE u.rule_id = x.r AND u.member_id = x.m AND u.period = x.p
"""


def caps_give_back(purchase: InboundEvent, member_id: int, before: Fraction, after: Fraction) -> str:
    """Take out of the member's cap counters what a refund took back of ``purchase``'s awards:
    from the share ``before`` of the purchase refunded to ``after``. Each capped rule's counter of
    the purchase's period loses ``floor(award x after) - floor(award x before)`` points, and one
    time once ``after`` is the whole purchase. The period is the one the rule's cap has now (a cap
changed since the purchase is given back in its new period); rules deleted or no longer capped
since are left.
    Under the member's lock, as the counters are written. Says what it gave back, for the trace."""
    awarded: dict[int, int] = {}
    for award in purchase.awards:
        if award.get("rule_id") is not None and award.get("points", 0) > 0:
            awarded[award["rule_id"]] = awarded.get(award["rule_id"], 0) + award["points"]
    if not awarded or after <= before:
        return ""
    capped = Rule.objects.filter(pk__in=awarded).exclude(member_cap_period="").values_list(
        "id", "name", "member_cap_period")
    rows, said = [], []
    for rule_id, name, period in capped:
        points = math.floor(awarded[rule_id] * after) - math.floor(awarded[rule_id] * before)
        times = 1 if after >= 1 > before else 0
        if points or times:
            when = purchase.occurred_at or purchase.received_at
            rows.append({"r": rule_id, "m": member_id, "p": cap_period_key(period, when),
                         "pt": points, "t": times})
            said.append(f"{name!r} {points} points" + (", 1 time" if times else ""))
    if rows:
        with prepared_cursor() as cursor:
            cursor.execute(_GIVE_BACK_SQL, [pg_json(rows)])
    return "; ".join(said)
