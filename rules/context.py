"""What the rules see of one event: its CEL variables and what spend and product rules read,
each built once (``Activation``). The CEL library's own context is built from them only if an
expression needs the library; the common expressions are decided by ``rules.cel_python``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

import cel

from rules.cel_python import INT_MAX, INT_MIN, Fast

_E18 = 10**18
_DECIMAL_ZERO = Decimal(0)


def decimal_or_none(value) -> Decimal | None:
    """``value`` as a finite decimal; None for anything else ("NaN", "sNaN" and "Infinity" are
    decimals to Python, and no amount)."""
    try:
        number = Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None
    return number if number is None or number.is_finite() else None


_UNIT_PRICES: dict[str, tuple[Decimal | None, float]] = {}


def _unit_price(value) -> tuple[Decimal | None, float]:
    """A line's unit price as product rules read it, and as CEL sees it. Catalogue prices repeat
    and parsing one costs more than the rest of the line, so prices written as text are remembered."""
    found = _UNIT_PRICES.get(value) if type(value) is str else None
    if found is None:
        price = decimal_or_none(value)
        found = (price, float(price or 0))
        if type(value) is str:
            if len(_UNIT_PRICES) >= 4096:
                _UNIT_PRICES.clear()
            _UNIT_PRICES[value] = found
    return found


class Activation:
    """One event's CEL variables, and what the rules compute from its properties, each built once.

    ``values`` is what every rule's CEL sees: amounts are doubles, so ``event.properties.amount
    > 50.0`` works (``int()`` / ``double()`` mix types)."""

    __slots__ = ("values", "properties", "failure", "_cel", "_amount", "_priced", "_prices", "_lines")

    def __init__(self, *, event: dict, member: dict, program: dict, now: dt.datetime):
        self.properties = event.get("properties") or {}
        properties = dict(self.properties)
        amount = None
        if "amount" in properties and properties["amount"] is not None:
            amount = decimal_or_none(properties["amount"])
            properties["amount"] = float(amount) if amount is not None else properties["amount"]
        # What spend and product rules read is parsed here once, for them and for CEL alike.
        self._amount = amount if type(self.properties) is dict else False
        self._priced = self._prices = None
        items = properties.get("items")
        if isinstance(items, list):
            self._priced, self._prices, seen = items, [], []
            for item in items:
                price = None
                if isinstance(item, dict) and "unit_price" in item:  # one sent without a price has none
                    price, seen_price = _unit_price(item["unit_price"])
                    item = {**item, "unit_price": seen_price}
                self._prices.append(price)
                seen.append(item)
            properties["items"] = seen
        self.values = {"event": {**event, "properties": properties}, "member": member, "program": program,
                       "now": now}
        self.failure: Exception | None = None
        self._cel: cel.Context | None = None
        self._lines: list | None = None

    def cel_context(self) -> cel.Context:
        """The library's context; a value it cannot convert is kept in ``failure`` and raised."""
        if self._cel is None:
            try:
                self._cel = cel.Context(self.values)
            except Exception as exc:
                self.failure = exc
                raise
        return self._cel

    def by_library(self, program: cel.Program) -> Any:
        return program.execute(self.cel_context())

    def number(self, program: cel.Program, fast: Fast) -> Any:
        """The value of a points expression: its Python function's when that gives an int64 or a
        double, else the library's (which also renders anything else the way it always did)."""
        try:
            value = fast(self.values)
        except Exception:  # noqa: BLE001 - Undecided, or Python refused (a naive datetime...)
            value = None
        if type(value) is float or (type(value) is int and INT_MIN <= value <= INT_MAX):
            return value
        return self.by_library(program)

    def amount(self) -> Decimal | None:
        """The amount spend rules read."""
        if self._amount is False:
            self._amount = decimal_or_none(self.properties.get("amount"))
        return self._amount

    def lines(self) -> list:
        """Each item as product rules read it: (sku, category, quantity, quantity x unit price), or
        the item itself when it is not an object (reading it raises where it always did)."""
        if self._lines is None:
            lines = []
            items = self.properties.get("items") or ()
            prices = self._prices if items is self._priced else None
            for index, item in enumerate(items):
                try:
                    sku, category = item.get("sku"), item.get("category")
                except AttributeError:
                    lines.append(item)
                    continue
                price = prices[index] if prices is not None else decimal_or_none(item.get("unit_price"))
                quantity = item.get("quantity", 1)
                # Decimal(an int) is Decimal(str(it)), twice as fast (str() refuses over 4,300 digits)
                quantity = Decimal(quantity) if type(quantity) is int and -_E18 < quantity < _E18 else (
                    decimal_or_none(quantity))
                quantity = quantity or _DECIMAL_ZERO
                lines.append((sku, category, quantity, quantity * (price or _DECIMAL_ZERO)))
            self._lines = lines
        return self._lines
