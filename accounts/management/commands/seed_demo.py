"""Demo data: a program, members with some history, a customer login and an admin login.

Idempotent: rows are looked up before they are created, and the history goes through the
ledger services with fixed operation keys, so a second run replays it and changes nothing.
History is dated relative to each member's enrolment, so a later run asks for the same
dates (and the same partitions) as the first one.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from accounts.models import Member, Program
from accounts.services import member_create
from ledger import services as ledger
from ledger.partitions import ensure_partitions
from loyalty.errors import DomainError

DEFAULT_ADMIN_PASSWORD = "demo-admin-password"
DEFAULT_CUSTOMER_PASSWORD = "demo-customer-password"
SIGNUP_POINTS = 100


@dataclass(frozen=True)
class Step:
    day: int  # days after enrolment
    label: str  # unique per member: part of the operation key
    kind: str  # "earn", "redeem" or "adjust"
    points: int
    description: str


def signup(day: int = 0) -> Step:
    return Step(day, "signup", "earn", SIGNUP_POINTS, "Welcome bonus")


def purchase(day: int, n: int, amount: str) -> Step:
    # What the ``purchase`` rule will award: 1 point per whole unit of the amount.
    return Step(day, f"purchase-{n}", "earn", int(Decimal(amount)), f"Purchase of {amount} USD")


@dataclass(frozen=True)
class DemoMember:
    external_id: str
    email: str
    attributes: dict
    enrolled_days_ago: int
    history: tuple[Step, ...]


DEMO_MEMBERS = (
    DemoMember("demo-1", "ada@example.com", {"first_name": "Ada", "city": "Lisbon", "favourite": "flat white"}, 180, (
        signup(), purchase(2, 1, "42.50"), purchase(21, 2, "18.90"), purchase(47, 3, "65.00"),
        purchase(88, 4, "230.40"), purchase(150, 5, "37.25"),
        Step(160, "redeem-1", "redeem", 150, "Free coffee"),
    )),
    DemoMember("demo-2", "ben@example.com", {"first_name": "Ben", "city": "Porto"}, 150, (
        signup(), purchase(9, 1, "12.00"), purchase(70, 2, "88.75"),
        Step(71, "adjust-1", "adjust", 50, "Goodwill: order arrived late"),
    )),
    DemoMember("demo-3", "chloe@example.com", {"first_name": "Chloe", "city": "Lisbon", "company": True}, 120, (
        signup(), purchase(30, 1, "1200.00"), purchase(100, 2, "75.10"),
    )),
    DemoMember("demo-4", "dev@example.com", {"first_name": "Dev", "city": "Faro"}, 60, (
        signup(), purchase(5, 1, "9.80"),
    )),
    DemoMember("demo-5", "eva@example.com", {"first_name": "Eva", "city": "Braga"}, 14, (signup(),)),
)


class Command(BaseCommand):
    help = (
        "Seed a demo program (default slug: demo) with five members and their history, a customer "
        "login linked to demo-1 (user demo, or demo-SLUG) and a superuser login (admin); print both. "
        "Safe to run again: nothing changes. "
        "Passwords come from DEMO_ADMIN_PASSWORD / DEMO_CUSTOMER_PASSWORD, else demo defaults; an "
        "existing password is only reset when its variable is set. Also seeds the earning rules "
        "(purchase: 1 point per whole unit of amount; signup: 100 points once) and the rewards "
        "free-coffee (150, unlimited) and tote-bag (1000, stock 50)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--slug", default="demo", help="Program slug (default: demo).")

    def handle(self, *args, slug: str, **options):
        max_length = Program._meta.get_field("slug").max_length
        try:
            validate_slug(slug)
            if len(slug) > max_length:
                raise ValidationError("too long")
        except ValidationError as exc:
            raise CommandError(f"--slug {slug!r} is not a valid slug (up to {max_length} letters, digits, "
                               "- and _).") from exc
        now = timezone.now()
        program, program_created = seed_program(slug)
        admin, admin_password = seed_login(
            username="admin", env_var="DEMO_ADMIN_PASSWORD", default=DEFAULT_ADMIN_PASSWORD, superuser=True,
        )
        customer, customer_password = seed_login(
            username="demo" if slug == "demo" else f"demo-{slug}", env_var="DEMO_CUSTOMER_PASSWORD",
            default=DEFAULT_CUSTOMER_PASSWORD,
        )
        members = [seed_member(program, spec, now=now) for spec in DEMO_MEMBERS]
        self.link_customer(customer, members[0][0])
        if not admin.is_superuser:
            self.stderr.write(self.style.WARNING(f"User {admin.username!r} exists but is not a superuser: left as is."))
        seed_partitions(start=min(member.enrolled_at for member, _ in members), now=now)
        new_operations = 0
        try:
            for (member, _), spec in zip(members, DEMO_MEMBERS, strict=True):
                new_operations += seed_history(member, spec.history, now=now)
        except DomainError as exc:
            raise CommandError(f"The demo history could not be posted: {exc.message}") from exc
        rules, rewards = seed_earning_rules(program), seed_rewards(program)
        self.summary(program, program_created, members, new_operations, rules, rewards,
                     logins=[(admin, admin_password, "superuser, /admin/"),
                             (customer, customer_password, f"member {members[0][0].external_id}")])

    def link_customer(self, user, member: Member) -> None:
        if member.user_id == user.pk:
            return
        if member.user_id is not None or Member.objects.filter(user=user).exists():
            self.stderr.write(self.style.WARNING(
                f"Login {user.username!r} is not linked to {member.external_id}: one of them has another link."
            ))
            return
        member.user = user
        member.save(update_fields=["user"])

    def summary(self, program, program_created, members, new_operations, rules, rewards, *, logins) -> None:
        expiry = f"points expire {program.expiry_days} days after they are earned" if program.expiry_days \
            else "points never expire"
        new_members = sum(created for _, created in members)
        total_operations = sum(len(spec.history) for spec in DEMO_MEMBERS)
        write = self.stdout.write
        write(f"Program {program.name!r} ({program.slug}): {'created' if program_created else 'already there'}; "
              f"{expiry}, pending {program.pending_days} days.")
        write(f"Members: {', '.join(m.external_id for m, _ in members)} ({new_members} new); "
              f"history: {total_operations} operations ({new_operations} new).")
        for what, seeded in (("Earning rules (purchase, signup)", rules), ("Rewards (free-coffee, tote-bag)", rewards)):
            write(f"{what}: " + (", ".join(seeded) if seeded is not None else "not seeded by this command yet."))
        write("Logins:")
        for user, password, note in logins:
            write(f"  {user.username} / {password}  ({note})")


def seed_program(slug: str) -> tuple[Program, bool]:
    name = "Demo Coffee" if slug == "demo" else slug.replace("-", " ").replace("_", " ").title()
    return Program.objects.get_or_create(
        slug=slug, defaults={"name": name, "expiry_days": 365, "pending_days": 0},
    )


def seed_member(program: Program, spec: DemoMember, *, now: dt.datetime) -> tuple[Member, bool]:
    member = Member.objects.select_related("program").filter(program=program, external_id=spec.external_id).first()
    if member is not None:
        return member, False
    member = member_create(
        program=program, external_id=spec.external_id, email=spec.email, attributes=spec.attributes,
        enrolled_at=now - dt.timedelta(days=spec.enrolled_days_ago),
    )
    return member, True


def seed_partitions(*, start: dt.datetime, now: dt.datetime) -> None:
    """Entries are partitioned by month, and partitions exist only from last month on."""
    months = (now.year - start.year) * 12 + now.month - start.month
    ensure_partitions(start=start.date(), months_ahead=months + settings.LEDGER_PARTITION_MONTHS_AHEAD)


def seed_history(member: Member, steps: tuple[Step, ...], *, now: dt.datetime) -> int:
    """Post ``steps`` oldest first, all or nothing; returns how many were new (not replays)."""
    new = 0
    with transaction.atomic():
        for step in sorted(steps, key=lambda s: s.day):
            at = min(member.enrolled_at + dt.timedelta(days=step.day), now)
            key = f"demo-seed:{member.external_id}:{step.label}"
            source = ledger.Source("demo-seed", step.label)
            if step.kind == "earn":
                operation = ledger.points_earn(member=member, points=step.points, key=key,
                                               description=step.description, source=source, now=at)
            elif step.kind == "redeem":
                operation = ledger.points_redeem(member=member, points=step.points, key=key,
                                                 description=step.description, source=source, now=at)
            else:
                operation = ledger.points_adjust(member=member, points=step.points, key=key,
                                                 reason=step.description, now=at)
            new += not operation.replayed
    return new


# --- Earning rules and rewards (API.md, "Operator commands") ----------------------------------
# purchase: 1 point per whole unit of ``amount``, rounded down; signup: 100 points once per member;
# free-coffee: cost 150, unlimited; tote-bag: cost 1000, stock 50. Found by a stable name or code,
# so re-runs change nothing (and leave a marketer's later edits alone).


def seed_earning_rules(program: Program) -> list[str]:
    from rules.models import Rule
    from rules.services import rule_save

    specs = [
        Rule(program=program, name="Purchase: 1 point per unit spent", kind=Rule.Kind.SPEND, event_type="purchase",
             points_per_unit=1, rounding=Rule.Rounding.DOWN),
        Rule(program=program, name="Signup bonus", kind=Rule.Kind.EVENT, event_type="signup", points=100,
             member_cap_period=Rule.CapPeriod.LIFETIME, member_cap_times=1),
    ]
    for rule in specs:
        if not Rule.objects.filter(program=program, name=rule.name).exists():
            rule_save(rule=rule)
    return [rule.name for rule in specs]


def seed_rewards(program: Program) -> list[str]:
    from campaigns.models import Reward

    specs = [
        {"code": "free-coffee", "name": "Free coffee", "cost": 150, "stock": None},
        {"code": "tote-bag", "name": "Tote bag", "cost": 1000, "stock": 50},
    ]
    for spec in specs:
        Reward.objects.get_or_create(program=program, code=spec["code"], defaults=spec)
    return [spec["code"] for spec in specs]


# --- Logins ----------------------------------------------------------------------------------


def seed_login(*, username: str, env_var: str, default: str, superuser: bool = False) -> tuple[object, str]:
    """The user ``username``, created if missing; returns it and the password to print.

    A new user gets the password from ``env_var`` or ``default``. An existing user keeps a
    password someone changed, unless ``env_var`` is set.
    """
    User = get_user_model()
    from_env = os.environ.get(env_var) or None
    user = User.objects.filter(username=username).first()
    if user is None:
        create = User.objects.create_superuser if superuser else User.objects.create_user
        user = create(username=username, email=f"{username}@example.com", password=from_env or default)
    elif from_env and not user.check_password(from_env):
        user.set_password(from_env)
        user.save(update_fields=["password"])
    if from_env:
        return user, f"(the password in {env_var})"
    if user.check_password(default):
        return user, default
    return user, f"(changed since seeding; set {env_var} to reset it)"
