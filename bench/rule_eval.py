"""Rule evaluation: ``rules.engine.qualify`` for one purchase against 20 active rules.

In memory, no database: 20 rules of every kind (spend, product, event, multiplier; CEL
conditions, a points expression, caps, an exclusive rule, a rule outside its window, one for
another event type) compiled with ``CompiledRule.from_rule(Rule(...))``, and a pool of
realistic purchases (1-4 items) with member contexts like the pipeline's. Times ``qualify``
per event, and its parts: the event's values (``rules.context.Activation``) and the conditions
as the Python functions ``rules.cel_python`` compiles them to; for comparison, the same conditions
through the CEL library on its own context (what ``qualify`` paid before), and the bare cost of
one compiled CEL evaluation on a ready context. Before timing, every expression the Python
functions decide on the workload is checked against the CEL library's answer.

    .venv/bin/python -m bench.rule_eval                     # quick: 20,000 events x 5 rounds
    .venv/bin/python -m bench.rule_eval --events 100000     # full scale

Goal: at most 50 us per event with 20 rules. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# No database and no Redis are used: keep settings from starting the embedded servers.
os.environ.setdefault("DATABASE_URL", "postgres://bench@127.0.0.1:1/unused")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
os.environ.setdefault("SECRET_KEY", "bench-rule-eval-not-a-secret")
os.environ.setdefault("ALLOWED_HOSTS", "localhost")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")

import django  # noqa: E402

django.setup()

from bench._server import purchase_event  # noqa: E402
from rules import cel_python, context, engine  # noqa: E402
from rules.models import Rule  # noqa: E402

GOAL_US = 50.0
NOW = dt.datetime(2026, 11, 12, 9, 30, tzinfo=dt.UTC)  # a Thursday morning: the breakfast rule fires


def twenty_rules() -> list[Rule]:
    """The 10 rules of the ingest benchmarks and 10 more; ids 1-20."""
    def rule(name, kind, **fields):
        fields.setdefault("event_type", "purchase")
        return Rule(name=name, kind=kind, **fields)

    rules = [
        # the ingest benchmarks' ten (bench/_server.py: earning_rules)
        rule("Base: 1 point per USD", "spend", condition="event.properties.currency == 'USD'",
             points_per_unit=Decimal(1), priority=100),
        rule("Gold: +0.5 point per USD", "spend", condition="member.tier == 'gold'",
             points_per_unit=Decimal("0.5"), priority=90),
        rule("Coffee: 5 points per latte or mocha", "product", skus=["LATTE", "MOCHA"], points_per_item=5,
             condition="event.properties.channel in ['pos', 'app']", priority=80),
        rule("Bakery: double points", "product", categories=["bakery"], item_multiplier=Decimal(2),
             condition="size(event.properties.items) >= 2", priority=70),
        rule("Big basket: 50 points from 40 USD", "event", points=50,
             condition="event.properties.amount >= 40.0", priority=60),
        rule("App order: 10 points", "event", points=10, condition="event.properties.channel == 'app'",
             priority=50),
        rule("First purchase of the day: 5 points", "event", points=5, condition="member.status == 'active'",
             member_cap_period="day", member_cap_times=1, priority=40),
        rule("Lisbon shops: x2", "multiplier", multiplier=Decimal(2),
             condition="member.attributes.city == 'Lisbon' && event.properties.channel == 'pos'", priority=30),
        rule("Silver: x1.5", "multiplier", multiplier=Decimal("1.5"), condition="member.tier == 'silver'",
             priority=20),
        rule("Black Friday: flat 500 (exclusive)", "event", points=500, stacking="exclusive",
             condition="event.properties.order_id.startsWith('BF-')", priority=200),
        # ten more
        rule("Weekend: +1 point per USD", "spend", points_per_unit=Decimal(1),
             condition="now.getDayOfWeek() == 0 || now.getDayOfWeek() == 6", priority=15),
        rule("Big spender: 2 per USD from 100 USD", "spend", points_per_unit=Decimal(2), min_amount=Decimal(100),
             condition="member.lifetime_earned > 1000", priority=14),
        rule("Retail gear: 3x", "product", categories=["retail"], item_multiplier=Decimal(3),
             condition="member.tier != ''", priority=13),
        rule("Espresso: 2 per cup", "product", skus=["ESPRESSO"], points_per_item=2,
             condition="event.properties.items.exists(i, i.sku == 'ESPRESSO')", priority=12),
        rule("Breakfast: 15 points", "event", points=15,
             condition="now.getHours() >= 6 && now.getHours() < 11", priority=11),
        rule("Signup bonus", "event", event_type="signup", points=100, priority=10),
        rule("Member for a year: 25 points once", "event", points=25,
             condition="now - member.enrolled_at > duration('8760h')", member_cap_period="lifetime",
             member_cap_times=1, priority=9),
        rule("Web orders: a point per 10 USD", "event", points_expression="int(event.properties.amount / 10.0)",
             condition="event.properties.channel == 'web'", priority=8),
        rule("Spring promo: 30 points", "event", points=30, condition="event.properties.amount > 20.0",
             active_from=dt.datetime(2027, 3, 1, tzinfo=dt.UTC), active_until=dt.datetime(2027, 4, 1, tzinfo=dt.UTC),
             priority=7),
        rule("Gold in the app: x1.25", "multiplier", multiplier=Decimal("1.25"),
             condition="member.tier == 'gold' && event.properties.channel == 'app'", priority=6),
    ]
    for number, r in enumerate(rules, start=1):
        r.id = number
        engine.validate_rule(r)  # what rule_save checks
    return rules


def workload(count: int, seed: int) -> list[tuple[dict, dict]]:
    """(event, member) contexts as the pipeline builds them (event_context, member_context)."""
    rng = random.Random(seed)
    tiers = ("gold", "gold", "silver", "silver", "silver", "", "", "", "", "")
    pool = []
    for i in range(count):
        raw = purchase_event(f"e-{i}", rng, 100_000, NOW - dt.timedelta(minutes=rng.randint(0, 600)))
        event = {"id": raw["event_id"], "type": raw["type"],
                 "occurred_at": dt.datetime.fromisoformat(raw["occurred_at"]), "properties": raw["properties"]}
        earned = rng.randint(0, 5000)
        member = {
            "external_id": raw["member_id"], "email": f"{raw['member_id']}@example.com",
            "attributes": {"city": rng.choice(("Lisbon", "Porto", "Faro", "Braga"))},
            "tier": rng.choice(tiers), "status": "active",
            "enrolled_at": NOW - dt.timedelta(days=rng.randint(1, 700)),
            "lifetime_earned": earned, "lifetime_redeemed": earned // 3, "available": earned - earned // 3,
        }
        pool.append((event, member))
    return pool


PROGRAM = {"slug": "bench", "name": "Bench", "points_name": "points"}


class Clock:
    """CPU time of this process (what the work costs, even on a busy machine) and wall time."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def time_qualify(rules, pool, events: int) -> Clock:
    """``events`` qualifications (the pool cycled)."""
    n = len(pool)
    qualify = engine.qualify
    with Clock() as clock:
        for i in range(events):
            event, member = pool[i % n]
            qualify(rules=rules, event=event, member=member, program=PROGRAM, now=NOW, usage={})
    return clock


def activation(event, member) -> context.Activation:
    return context.Activation(event=event, member=member, program=PROGRAM, now=NOW)


def time_activations(pool, events: int) -> Clock:
    """Only the event's values (``rules.context.Activation``)."""
    n = len(pool)
    with Clock() as clock:
        for i in range(events):
            event, member = pool[i % n]
            activation(event, member)
    return clock


def applicable_conditions(rules) -> list:
    return [r for r in rules if r.condition is not None and r.event_type in ("", "purchase")]


def time_python_conditions(rules, pool, events: int) -> Clock:
    """The values and every applicable rule's condition once per event, as qualify evaluates them."""
    functions = [r.fast_condition for r in applicable_conditions(rules)]
    n = len(pool)
    with Clock() as clock:
        for i in range(events):
            event, member = pool[i % n]
            values = activation(event, member).values
            for function in functions:
                function(values)
    return clock


def time_library_conditions(rules, pool, events: int) -> Clock:
    """The same through the CEL library: its context (the event's values converted on creation)
    and every applicable condition on it, as qualify did before its conditions were compiled to Python."""
    programs = [r.condition for r in applicable_conditions(rules)]
    n = len(pool)
    with Clock() as clock:
        for i in range(events):
            event, member = pool[i % n]
            cel_context = activation(event, member).cel_context()
            for program in programs:
                program.execute(cel_context)
    return clock


def time_one_cel(cel_context, iterations: int) -> Clock:
    program = engine.compile_cel("member.tier == 'gold'", field_name="condition")
    execute = program.execute
    with Clock() as clock:
        for _ in range(iterations):
            execute(cel_context)
    return clock


def check_against_library(rules, pool) -> tuple[int, int]:
    """Every expression evaluation the Python functions decide on the pool, compared with the CEL
    library's value; raises on the first difference. Returns (decided, left to the library)."""
    decided = undecided = 0
    for event, member in pool:
        values = activation(event, member)
        for rule in rules:
            for program, function in ((rule.condition, rule.fast_condition),
                                      (rule.points_expression, rule.fast_points)):
                if program is None:
                    continue
                try:
                    fast = function(values.values)
                except Exception:  # noqa: BLE001 - undecided: the library decides in qualify
                    undecided += 1
                    continue
                expected = program.execute(values.cel_context())
                if fast != expected or type(fast) is not type(expected):
                    raise AssertionError(f"{program.source!r} on {event['id']}: Python {fast!r}, CEL {expected!r}")
                decided += 1
    return decided, undecided


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="qualifications per round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--pool", type=int, default=1000, help="distinct events cycled (default 1,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rules = [engine.CompiledRule.from_rule(r) for r in twenty_rules()]
    rules = engine.InOrder(sorted(rules, key=lambda r: (-r.priority, r.id)))  # as rules_for gives them
    pool = workload(args.pool, args.seed)
    cel_contexts = [activation(e, m).cel_context() for e, m in pool]
    decided, undecided = check_against_library(rules, pool)
    expressions = [p for r in rules for p in (r.condition, r.points_expression) if p is not None]
    in_python = sum(f is not cel_python.undecided for r in rules for f, p in
                    ((r.fast_condition, r.condition), (r.fast_points, r.points_expression)) if p is not None)

    # What the rules do on this workload (and a warm-up).
    fired = outcomes = 0
    tally: dict[str, int] = {}
    points = []
    for event, member in pool:
        q = engine.qualify(rules=rules, event=event, member=member, program=PROGRAM, now=NOW, usage={})
        fired += len(q.awards)
        points.append(q.points)
        for step in q.trace:
            tally[step["outcome"]] = tally.get(step["outcome"], 0) + 1
            outcomes += 1
    errors = tally.get("error", 0)

    load_before = os.getloadavg()[0]
    runs: dict[str, list[Clock]] = {"qualify": [], "values": [], "python": [], "library": [], "one": []}
    one_iterations = args.events * 10
    for _ in range(args.rounds):
        runs["qualify"].append(time_qualify(rules, pool, args.events))
        runs["values"].append(time_activations(pool, args.events))
        runs["python"].append(time_python_conditions(rules, pool, args.events))
        runs["library"].append(time_library_conditions(rules, pool, args.events))
        runs["one"].append(time_one_cel(cel_contexts[0], one_iterations))
    load_after = os.getloadavg()[0]

    def us(name: str, what: str = "cpu", per: int = args.events) -> float:
        return statistics.median(getattr(c, what) for c in runs[name]) / per * 1e6

    from importlib.metadata import version

    n_conditions = len(applicable_conditions(rules))
    q_cpu, q_wall = us("qualify"), us("qualify", "wall")
    values_cpu, python_cpu, library_cpu = us("values"), us("python"), us("library")
    one_cpu = us("one", per=one_iterations)
    print(f"rule_eval: engine.qualify, {len(rules)} active rules (spend 4, product 4, event 9, multiplier 3; "
          f"{sum(r.condition is not None for r in rules)} CEL conditions, 1 points expression), "
          f"{args.pool:,} distinct purchases of 1-4 items cycled; {args.rounds} rounds of {args.events:,} events, "
          f"median; Python {sys.version.split()[0]}, "
          f"common-expression-language {version('common-expression-language')}; "
          f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
    print(f"  qualify:    {q_cpu:.1f} us CPU per event (goal <= {GOAL_US:.0f} us with 20 rules) = "
          f"{1e6 / q_cpu:,.0f} events/s per core; wall {q_wall:.1f} us; "
          f"CPU by round {', '.join(f'{c.cpu / args.events * 1e6:.0f}' for c in runs['qualify'])}")
    print(f"  of which:   the event's values {values_cpu:.1f} us; + {n_conditions} conditions as Python functions "
          f"{python_cpu - values_cpu:.1f} us ({(python_cpu - values_cpu) / n_conditions:.2f} us each); the rest "
          f"(kinds, Decimal, caps, trace) {q_cpu - python_cpu:.1f} us")
    print(f"  python:     {in_python} of {len(expressions)} expressions compiled to Python; on the workload "
          f"{decided:,} evaluations decided in Python, all equal to the CEL library's, {undecided:,} left to it")
    print(f"  library:    the same {n_conditions} conditions through the CEL library (its context + evaluations, "
          f"as qualify did before) {library_cpu - values_cpu:.1f} us per event")
    print(f"  baseline:   one compiled CEL evaluation (member.tier == 'gold', context ready) {one_cpu:.2f} us CPU "
          f"(wall {us('one', 'wall', one_iterations):.2f} us) -> qualify costs {q_cpu / one_cpu:,.0f} bare evaluations")
    print(f"  workload:   {fired / len(pool):.1f} awards and {sum(points) / len(points):.0f} points per event; "
          f"trace outcomes {dict(sorted(tally.items()))}; errors {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
