"""The earning-rules engine: compile a program's rules once, qualify events against them.

``qualify`` is a pure function: the same rules, event, member, usage and clock give the
same awards and the same trace. The API, the workers, the admin's "try it" and backtests
all go through it.

Trace outcomes: ``fired``, ``condition_false``, ``not_this_event_type``, ``outside_window``,
``cap_reached``, ``no_points``, ``beaten_by_exclusive``, ``error``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from operator import attrgetter

import cel

from rules.cel_python import Fast, compile_fast, undecided
from rules.context import Activation
from rules.models import Rule
from rules.trace import OUTCOMES, trace_unpack

CEL_VARIABLES = frozenset({"event", "member", "program", "now"})
# Comprehension macros introduce their own variable: `items.exists(i, i.sku == 'LATTE')`.
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_ROUNDING = {"down": ROUND_FLOOR, "nearest": ROUND_HALF_UP, "up": ROUND_CEILING}


class RuleCompileError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def compile_cel(source: str, *, field_name: str) -> cel.Program | None:
    """Compile a CEL expression, refusing unknown variables; None for an empty one."""
    source = (source or "").strip()
    if not source:
        return None
    try:
        program = cel.compile(source)
    except ValueError as exc:
        raise RuleCompileError(field_name, str(exc)) from exc
    unknown = set(program.variables()) - CEL_VARIABLES - set(_MACRO_VARIABLE.findall(source))
    if unknown:
        raise RuleCompileError(
            field_name,
            f"Unknown variable(s) {', '.join(sorted(unknown))}: use event, member, program or now.",
        )
    return program


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    kind: str
    event_type: str
    priority: int
    exclusive: bool
    active_from: dt.datetime | None
    active_until: dt.datetime | None
    condition: cel.Program | None
    points_expression: cel.Program | None
    points_per_unit: Decimal
    rounding: str
    min_amount: Decimal | None
    skus: frozenset[str]
    categories: frozenset[str]
    points_per_item: int | None
    item_multiplier: Decimal | None
    points: int | None
    multiplier: Decimal | None
    max_points_per_event: int | None
    cap_period: str
    cap_points: int | None
    cap_times: int | None
    # Derived once for qualify: the evaluation order, the points of a plain event rule, whether
    # any cap applies, and the expressions as Python functions (see rules.cel_python).
    order: int = field(init=False, compare=False, repr=False)
    fixed_points: int | None = field(init=False, compare=False, repr=False)
    capped: bool = field(init=False, compare=False, repr=False)
    fast_condition: Fast = field(init=False, compare=False, repr=False)
    fast_points: Fast = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        derived = {
            "order": (-self.priority << 64) + (self.id or 0),  # (-priority, id) as one int: sorts faster
            "fixed_points": (self.points or 0) if self.kind == "event" and self.points_expression is None else None,
            "capped": self.max_points_per_event is not None or bool(self.cap_period),
            "fast_condition": compile_fast(self.condition.source) if self.condition is not None else undecided,
            "fast_points": (compile_fast(self.points_expression.source)
                            if self.points_expression is not None else undecided),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # the dataclass is frozen

    @classmethod
    def from_rule(cls, rule: Rule) -> CompiledRule:
        return cls(
            id=rule.pk, name=rule.name, kind=rule.kind, event_type=rule.event_type, priority=rule.priority,
            exclusive=rule.stacking == Rule.Stacking.EXCLUSIVE,
            active_from=rule.active_from, active_until=rule.active_until,
            condition=compile_cel(rule.condition, field_name="condition"),
            points_expression=compile_cel(rule.points_expression, field_name="points_expression"),
            points_per_unit=Decimal(rule.points_per_unit), rounding=rule.rounding,
            min_amount=rule.min_amount, skus=frozenset(rule.skus or ()), categories=frozenset(rule.categories or ()),
            points_per_item=rule.points_per_item,
            item_multiplier=Decimal(rule.item_multiplier) if rule.item_multiplier is not None else None,
            points=rule.points,
            multiplier=Decimal(rule.multiplier) if rule.multiplier is not None else None,
            max_points_per_event=rule.max_points_per_event, cap_period=rule.member_cap_period,
            cap_points=rule.member_cap_points, cap_times=rule.member_cap_times,
        )


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_rule(rule: Rule) -> None:
    """Everything a rule must satisfy before it is saved; raises RuleCompileError(field, message)."""
    CompiledRule.from_rule(rule)
    if rule.kind == Rule.Kind.EVENT and rule.points is None and not rule.points_expression:
        raise RuleCompileError("points", "An event rule needs its points (or a points expression).")
    if rule.kind == Rule.Kind.MULTIPLIER:
        if rule.multiplier is None or rule.multiplier <= 1:
            raise RuleCompileError("multiplier", "A multiplier rule needs a multiplier above 1: it adds to what the "
                                                 "other rules award (2 doubles it); it never takes points away.")
        if rule.stacking == Rule.Stacking.EXCLUSIVE:
            raise RuleCompileError("stacking", "A multiplier rule scales other rules: it cannot be exclusive.")
        if rule.points_expression:
            raise RuleCompileError("points_expression", "A multiplier rule scales what the other rules award: it "
                                                        "has no points expression of its own.")
    if rule.kind == Rule.Kind.PRODUCT and not (rule.skus or rule.categories):
        raise RuleCompileError("skus", "A product rule needs SKUs or categories to match.")
    if (rule.member_cap_points or rule.member_cap_times) and not rule.member_cap_period:
        raise RuleCompileError("member_cap_period", "A member cap needs its period.")
    if rule.active_from and rule.active_until and rule.active_until <= rule.active_from:
        raise RuleCompileError("active_until", "The window must end after it starts.")


# --- the per-process cache, keyed by program version -------------------------------------

class InOrder(list):
    """Compiled rules already in evaluation order (``CompiledRule.order``): ``qualify`` takes them
    as they are instead of sorting them for every event."""


_cache: dict[int, tuple[int, list[CompiledRule]]] = {}
_cache_lock = threading.Lock()


def rules_for(program) -> list[CompiledRule]:
    """The program's active rules, compiled; recompiled when ``program.rules_version`` moves.

    A change is seen by every process within API_KEY_CACHE_SECONDS (``rules.services``).
    """
    cached = _cache.get(program.pk)
    if cached and cached[0] == program.rules_version:
        return cached[1]
    rules = InOrder(
        CompiledRule.from_rule(rule)
        for rule in Rule.objects.filter(program_id=program.pk, is_active=True).order_by("-priority", "id")
    )
    with _cache_lock:
        _cache[program.pk] = (program.rules_version, rules)
    return rules


# --- qualification ------------------------------------------------------------------------


@dataclass
class Award:
    rule_id: int
    rule: str
    points: int

    def as_dict(self) -> dict:
        return {"points": self.points, "rule": self.rule, "rule_id": self.rule_id, "campaign": None}


@dataclass
class Qualification:
    awards: list[Award] = field(default_factory=list)
    # The trace as it is stored (``rules.trace``): a list a rule, made so by ``_line``. Written in
    # that form, the batch worker stores it as it is, instead of building a dict a rule and then
    # packing it.
    packed: list[list] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(a.points for a in self.awards)

    @property
    def trace(self) -> list[dict]:
        """The trace as the engine explains it: a dict a rule (``rule_id``, ``rule``, ``outcome``,
        ``points``, ``detail``)."""
        return trace_unpack(self.packed)


def cap_period_key(period: str, when: dt.datetime) -> str:
    """Periods are UTC days, ISO weeks and months, whatever offset the partner wrote."""
    when = when.astimezone(dt.UTC)
    # isoformat() writes what strftime does in a tenth of the time, but pads years before 1000.
    if period == "day":
        return when.date().isoformat() if when.year >= 1000 else when.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return when.date().isoformat()[:7] if when.year >= 1000 else when.strftime("%Y-%m")
    return "lifetime"


def _round(value: Decimal, mode: str) -> int:
    if mode != "nearest" and mode != "up" and value >= _ZERO:
        return int(value)  # down (the default), for the points of every spend rule: int() is the floor
    return int(value.to_integral_value(_ROUNDING.get(mode, ROUND_FLOOR)))  # a keyword costs 250 ns here


_ZERO, _ONE = Decimal(0), Decimal(1)
# Amounts times rates, before the rule's rounding: the default context would round the product to
# 28 digits first (0.99999999999999999999999999999 x 1 "down" gave 1, not 0).
_EXACT = Context(prec=100)


def _base_points(rule: CompiledRule, activation: Activation) -> int:
    if rule.points_expression is not None:
        value = activation.number(rule.points_expression, rule.fast_points)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"the points expression gave {value!r}, not a number")
        return max(int(value), 0)
    if rule.kind == "event":
        return rule.points or 0
    if rule.kind == "spend":
        amount = activation.amount()
        if amount is None or (rule.min_amount is not None and amount < rule.min_amount):
            return 0
        return max(_round(_EXACT.multiply(amount, rule.points_per_unit), rule.rounding), 0)
    if rule.kind == "product":
        skus, categories, per_item = rule.skus, rule.categories, rule.points_per_item
        total = _ZERO
        for line in activation.lines():
            if type(line) is not tuple:
                line.get("sku")  # not an object: raises, as reading its SKU always did
            sku, category, quantity, line_amount = line
            if sku not in skus and category not in categories:
                continue
            if per_item is not None:
                total = _EXACT.add(total, _EXACT.multiply(quantity, per_item))
            else:  # line_amount is quantity * unit price
                total = _EXACT.add(total, _EXACT.multiply(
                    _EXACT.multiply(line_amount, rule.points_per_unit), rule.item_multiplier or _ONE))
        return max(_round(total, rule.rounding), 0)
    return 0


def _cap(rule: CompiledRule, points: int, usage: dict, period_keys: dict[str, str],
         when: dt.datetime) -> tuple[int, str]:
    if rule.max_points_per_event is not None and points > rule.max_points_per_event:
        points = rule.max_points_per_event
    if rule.cap_period:
        period_key = period_keys.get(rule.cap_period)
        if period_key is None:
            period_key = period_keys[rule.cap_period] = cap_period_key(rule.cap_period, when)
        used_points, used_times = usage.get((rule.id, period_key), (0, 0))
        if rule.cap_times is not None and used_times >= rule.cap_times:
            return 0, f"fired {used_times} of {rule.cap_times} times this {rule.cap_period}"
        if rule.cap_points is not None:
            left = max(rule.cap_points - used_points, 0)
            if left == 0:
                return 0, f"gave {used_points} of {rule.cap_points} points this {rule.cap_period}"
            points = min(points, left)
    return points, ""


def _line(rule: CompiledRule, outcome: int, points: int = 0, detail: str = "") -> list:
    """A trace line in its stored form (``rules.trace.trace_pack``): ``outcome`` is its number in
    ``OUTCOMES``, and ``points`` and ``detail`` are left out while they are 0 and ""."""
    if detail:
        return [rule.id, rule.name, outcome, points, detail]
    if points:
        return [rule.id, rule.name, outcome, points]
    return [rule.id, rule.name, outcome]


(_FIRED, _CONDITION_FALSE, _NOT_THIS_EVENT_TYPE, _OUTSIDE_WINDOW, _CAP_REACHED, _NO_POINTS, _BEATEN,
 _ERROR) = (OUTCOMES.index(outcome) for outcome in (
    "fired", "condition_false", "not_this_event_type", "outside_window", "cap_reached", "no_points",
    "beaten_by_exclusive", "error"))


_IN_ORDER = attrgetter("order")


def qualify(
    *, rules: list[CompiledRule], event: dict, member: dict, program: dict, now: dt.datetime,
    usage: dict[tuple[int, str], tuple[int, int]] | None = None,
) -> Qualification:
    """Awards for one event, and why each rule did or did not fire.

    ``event`` has ``type``, ``occurred_at`` (datetime) and ``properties``; ``usage`` maps
    (rule id, cap period key) to (points, times) already given to this member.
    """
    usage = usage or {}
    when = event.get("occurred_at") or now
    event_type = event.get("type")
    activation = Activation(event=event, member=member, program=program, now=now)
    values = activation.values
    period_keys: dict[str, str] = {}
    result = Qualification()
    trace = result.packed
    candidates: list[tuple[CompiledRule, int]] = []
    multipliers: list[CompiledRule] = []
    winner = None  # the first exclusive candidate, by priority

    for rule in rules if type(rules) is InOrder else sorted(rules, key=_IN_ORDER):
        if rule.event_type and rule.event_type != event_type:
            trace.append(_line(rule, _NOT_THIS_EVENT_TYPE, detail=f"applies to {rule.event_type}"))
            continue
        if (rule.active_from and when < rule.active_from) or (rule.active_until and when >= rule.active_until):
            trace.append(_line(rule, _OUTSIDE_WINDOW, detail="the event is outside the rule's active window"))
            continue
        try:
            if rule.condition is not None:
                try:
                    fires = rule.fast_condition(values)
                except Exception:  # noqa: BLE001 - Undecided, or Python refused: the CEL library decides
                    fires = None
                if fires is None:
                    fires = activation.by_library(rule.condition)
                if fires is not True and fires is not False:
                    raise TypeError(f"the condition gave {_shown(fires)}, not true or false")
                if not fires:
                    trace.append([rule.id, rule.name, _CONDITION_FALSE])
                    continue
            if rule.kind == "multiplier":
                multipliers.append(rule)
                continue
            points = rule.fixed_points if rule.fixed_points is not None else _base_points(rule, activation)
        except Exception as exc:  # noqa: BLE001 - any CEL failure (x / 0, overflow, bad index) skips the rule
            if exc is activation.failure:
                raise  # the event's values cannot be given to CEL at all
            trace.append(_line(rule, _ERROR, detail=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        if rule.capped:
            points, why = _cap(rule, points, usage, period_keys, when)
            if why:
                trace.append(_line(rule, _CAP_REACHED, detail=why))
                continue
        if points <= 0:
            trace.append([rule.id, rule.name, _NO_POINTS])
            continue
        candidates.append((rule, points))
        if winner is None and rule.exclusive:
            winner = rule

    if winner is not None:
        beaten = f"'{winner.name}' is exclusive"
        for rule, points in candidates:
            if rule is winner:
                result.awards.append(Award(rule.id, rule.name, points))
                trace.append(_line(rule, _FIRED, points))
            else:
                trace.append(_line(rule, _BEATEN, detail=beaten))
        for rule in multipliers:
            trace.append(_line(rule, _BEATEN, detail=beaten))
        return result

    base = 0
    for rule, points in candidates:
        result.awards.append(Award(rule.id, rule.name, points))
        trace.append(_line(rule, _FIRED, points))
        base += points
    decimal_base = Decimal(base)
    for rule in multipliers:
        extra = _round(decimal_base * (rule.multiplier - 1), "down") if base else 0
        extra, why = _cap(rule, extra, usage, period_keys, when)
        if why:
            trace.append(_line(rule, _CAP_REACHED, detail=why))
        elif extra <= 0:
            trace.append(_line(rule, _NO_POINTS, detail="nothing to multiply" if not base else ""))
        else:
            result.awards.append(Award(rule.id, rule.name, extra))
            trace.append(_line(rule, _FIRED, extra))
    return result


def usage_increments(
    rules: list[CompiledRule], qualification: Qualification, when: dt.datetime,
) -> dict[tuple[int, str], tuple[int, int]]:
    """What this event's awards add to the cap counters of capped rules."""
    by_id = {rule.id: rule for rule in rules}
    increments: dict[tuple[int, str], tuple[int, int]] = {}
    for award in qualification.awards:
        rule = by_id[award.rule_id]
        if not rule.cap_period:
            continue
        key = (rule.id, cap_period_key(rule.cap_period, when))
        points, times = increments.get(key, (0, 0))
        increments[key] = (points + award.points, times + 1)
    return increments
