"""Refunds: take back the points a purchase earned, in proportion to what came back.

The refunded amount is ``properties.amount``, else the value of ``properties.items`` (at the
refund's unit prices, or the purchase's for the same SKU), else the whole purchase. Refunds
of one order add up and are capped at the purchase amount, and the points reversed so far
are always ``floor(earned x refunded / purchase amount)``: several partial refunds never take
back more than was earned, and rounding never drifts.

A refund whose purchase is unknown (or not processed yet) is rejected with code
``purchase_not_found`` and kept; "reprocess" in the admin tries it again later.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_FLOOR, Decimal

from accounts.models import Member, Program
from ledger.models import Operation
from ledger.services import Source, points_reverse
from rules.models import InboundEvent
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
