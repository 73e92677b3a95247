"""The ledger services against a tiny reference model, step by step (Hypothesis stateful).

The model keeps lots (remaining, maturity, expiry), holds, what each spend took from which
lot, and debt; the balance row, the lots, the allocations and the entries of every member
must match it after every step, and the audit must stay clean. A step the model refuses
must be refused by the services too, with nothing changed in the database.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import Counter, namedtuple

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Program
from accounts.services import member_create
from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.errors import IdempotencyKeyReused, InsufficientPoints, InvalidLedgerState, ReverseExceedsEarned
from ledger.models import Allocation, Balance, Entry, Hold, Lot, Operation
from tests.ledger.ledger_model import Account, MHold, Model
from tests.ledger.ledger_state import ledger_snapshot

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LAST = dt.datetime(2030, 10, 1, tzinfo=dt.UTC)  # the test partitions end with 2030-12
HOLD_TIMEOUT_MINUTES = 30

POLICIES = {
    "strict": {"pending_days": 2, "expiry_days": 30, "allow_negative_balance": False},
    "lenient": {"pending_days": 0, "expiry_days": 20, "allow_negative_balance": True},
    "no-expiry": {"pending_days": 3, "expiry_days": None, "allow_negative_balance": True},
}
MEMBER_POLICIES = ["strict", "strict", "lenient", "no-expiry"]

MEMBER = st.integers(0, len(MEMBER_POLICIES) - 1)
# percent of what can be spent or reversed (above 100 is refused); all of it, often
SHARE = st.one_of(st.just(100), st.integers(1, 120))
Ref = namedtuple("Ref", "m op_id hold_id", defaults=[None])


# --- the machine ------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    earns = Bundle("earns")
    spends = Bundle("spends")  # redeem and hold operations, for cancel
    holds = Bundle("holds")

    def __init__(self):
        super().__init__()
        self.savepoint = transaction.savepoint()
        self.now = START
        self.serial = 0
        self.last_call = None
        programs = {
            name: Program.objects.create(name=name, slug=f"sm-{name}", hold_timeout_minutes=HOLD_TIMEOUT_MINUTES,
                                         **policy)
            for name, policy in POLICIES.items()
        }
        self.members = [
            member_create(program=programs[name], external_id=f"m{i}", enrolled_at=START)
            for i, name in enumerate(MEMBER_POLICIES)
        ]
        self.model = Model(accounts=[
            Account(POLICIES[name]["pending_days"], POLICIES[name]["expiry_days"],
                    POLICIES[name]["allow_negative_balance"])
            for name in MEMBER_POLICIES
        ])

    def teardown(self):
        transaction.savepoint_rollback(self.savepoint)

    def set_expiry_policy(self, policy: str, expiry_days: int | None) -> None:
        """Lots keep the expiry they were given, so spending order and creation order part ways."""
        program = self.members[MEMBER_POLICIES.index(policy)].program  # the instance its members share
        program.expiry_days = expiry_days
        program.save(update_fields=["expiry_days"])
        for m, name in enumerate(MEMBER_POLICIES):
            if name == policy:
                self.model.accounts[m].expiry_days = expiry_days

    def amount(self, m: int, share: int) -> int:
        """``share`` percent of what the member could spend now (above 100: more than that)."""
        trial = copy.deepcopy(self.model)
        trial.settle(m, self.now)
        spendable = trial.available(m)
        return max(1, spendable * share // 100) if spendable > 0 else share

    def key(self) -> str:
        self.serial += 1
        return f"k{self.serial}"

    def attempt(self, model_step, service_call):
        """Run ``model_step`` on a copy of the model and ``service_call`` on the database;
        both succeed (the copy becomes the model) or both refuse (nothing changes)."""
        trial = copy.deepcopy(self.model)
        try:
            expected = model_step(trial)
        except (InsufficientPoints, InvalidLedgerState, ReverseExceedsEarned) as refusal:
            before = ledger_snapshot()
            with pytest.raises(type(refusal)) as raised:
                service_call()
            if refusal.expected_code:
                assert raised.value.code == refusal.expected_code
            assert ledger_snapshot() == before, f"a refused {type(refusal).__name__} changed the ledger"
            return None
        result = service_call()
        self.model = trial
        return expected, result

    def remember(self, m: int, function, **kwargs) -> None:
        self.last_call = (m, function, kwargs)

    # --- earning and spending ---

    @initialize(target=earns, lots=st.lists(
        st.tuples(MEMBER, st.integers(20, 200), st.sampled_from(["unchanged", None, 10, 30, 90])),
        min_size=4, max_size=10,
    ), days=st.integers(0, 5))
    def opening_balances(self, lots, days):
        """Every run starts with lots to spend (Hypothesis leaves some rules out of some runs)."""
        refs = [ref for m, points, expiry_days in lots for ref in self.credit_lots(m, [(points, expiry_days)])]
        self.now += dt.timedelta(days=days)
        return multiple(*refs)

    @rule(target=earns, m=MEMBER, lots=st.lists(
        st.tuples(st.integers(1, 200), st.sampled_from(["unchanged", "unchanged", None, 2, 10, 30, 90])),
        min_size=1, max_size=3,
    ))
    def earn(self, m, lots):
        """Earn one to three lots; the program's expiry policy may change before each."""
        return multiple(*self.credit_lots(m, lots))

    def credit_lots(self, m: int, lots: list[tuple]) -> list[Ref]:
        refs = []
        for points, expiry_days in lots:
            if expiry_days != "unchanged":
                self.set_expiry_policy(MEMBER_POLICIES[m], expiry_days)
            kwargs = {"member": self.members[m], "points": points, "key": self.key()}
            operation = services.points_earn(**kwargs, now=self.now)
            assert operation.replayed is False
            lot = Lot.objects.get(operation=operation)
            self.model.credit(m, lot.pk, points, self.now, "earn")
            self.model.kinds[operation.pk] = "earn"
            self.model.earns[operation.pk] = [lot.pk, 0, 0]
            self.remember(m, services.points_earn, **kwargs)
            refs.append(Ref(m, operation.pk))
        return refs

    @rule(target=spends, m=MEMBER, share=SHARE)
    def redeem(self, m, share):
        points = self.amount(m, share)
        kwargs = {"member": self.members[m], "points": points, "key": self.key()}
        outcome = self.attempt(lambda model: model.take(m, points, self.now, "redeem"),
                               lambda: services.points_redeem(**kwargs, now=self.now))
        if outcome is None:
            return multiple()
        taken, operation = outcome
        self.model.taken[operation.pk], self.model.kinds[operation.pk] = taken, "redeem"
        self.assert_soonest_expiry_first(m, operation)
        self.remember(m, services.points_redeem, **kwargs)
        return Ref(m, operation.pk)

    @rule(targets=(spends, holds), m=MEMBER, share=SHARE, hours=st.one_of(st.none(), st.integers(1, 48)))
    def hold(self, m, share, hours):
        points = self.amount(m, share)
        kwargs = {"member": self.members[m], "points": points, "key": self.key(),
                  "timeout": None if hours is None else dt.timedelta(hours=hours)}
        outcome = self.attempt(lambda model: model.take(m, points, self.now, "hold"),
                               lambda: services.points_hold(**kwargs, now=self.now))
        if outcome is None:
            return multiple()
        taken, hold = outcome
        timeout = dt.timedelta(minutes=HOLD_TIMEOUT_MINUTES) if hours is None else dt.timedelta(hours=hours)
        assert hold.expires_at == self.now + timeout
        self.model.taken[hold.operation_id], self.model.kinds[hold.operation_id] = taken, "hold"
        self.model.holds[hold.pk] = MHold(m, hold.operation_id, points, self.now + timeout)
        self.assert_soonest_expiry_first(m, hold.operation)
        self.remember(m, services.points_hold, **kwargs)
        return Ref(m, hold.operation_id, hold.pk)

    @rule(ref=holds, capture=st.booleans())
    def resolve(self, ref, capture):
        """Capture or void a hold (refused unless it is open, and a capture unless in time)."""
        kwargs = {"hold": Hold.objects.get(pk=ref.hold_id), "key": self.key()}
        if capture:
            model_step, service, status = Model.capture, services.hold_capture, Hold.Status.CAPTURED
        else:
            model_step, service, status = Model.void, services.hold_void, Hold.Status.VOIDED
        outcome = self.attempt(lambda model: model_step(model, ref.hold_id, self.now),
                               lambda: service(**kwargs, now=self.now))
        if outcome is not None:
            assert outcome[1].status == status
            self.remember(ref.m, service, **kwargs)

    @rule(ref=spends)
    def cancel(self, ref):
        kwargs = {"redemption": Operation.objects.get(pk=ref.op_id), "key": self.key()}
        outcome = self.attempt(lambda model: model.cancel(ref.m, ref.op_id, self.now),
                               lambda: services.redemption_cancel(**kwargs, now=self.now))
        if outcome is not None:
            expected, operation = outcome
            assert operation.result == {"redemption": ref.op_id, **expected}
            self.remember(ref.m, services.redemption_cancel, **kwargs)

    # --- corrections ---

    @rule(ref=earns, share=SHARE)
    def reverse(self, ref, share):
        self._reverse(ref, max(1, Lot.objects.get(operation_id=ref.op_id).points * share // 100))

    @rule(target=spends, ref=earns)
    def refund_after_spending(self, ref):
        """Spend everything, then take the whole earn back: what is missing becomes debt or uncollected."""
        spent = self.redeem(ref.m, 100)
        self.reverse(ref, 100)
        return spent

    def _reverse(self, ref, points):
        kwargs = {"earn": Operation.objects.get(pk=ref.op_id), "points": points, "key": self.key()}
        outcome = self.attempt(lambda model: model.reverse(ref.m, ref.op_id, points, self.now),
                               lambda: services.points_reverse(**kwargs, now=self.now))
        if outcome is not None:
            (expected, taken), operation = outcome
            assert operation.result == expected
            assert Operation.objects.get(pk=operation.pk).result == expected
            self.model.taken[operation.pk] = taken
            self.remember(ref.m, services.points_reverse, **kwargs)

    @rule(m=MEMBER, credit=st.booleans(), share=SHARE)
    def adjust(self, m, credit, share):
        points = share if credit else -self.amount(m, share)
        kwargs = {"member": self.members[m], "points": points, "key": self.key(), "reason": "correction"}
        if points > 0:  # a credit cannot be refused
            operation = services.points_adjust(**kwargs, now=self.now)
            self.model.settle(m, self.now)
            self.model.credit(m, Lot.objects.get(operation=operation).pk, points, self.now, "adjust")
        else:
            outcome = self.attempt(lambda model: model.take(m, -points, self.now, "adjust"),
                                   lambda: services.points_adjust(**kwargs, now=self.now))
            if outcome is None:
                return
            taken, operation = outcome
            self.model.taken[operation.pk] = taken
            self.assert_soonest_expiry_first(m, operation)
        self.model.kinds[operation.pk] = "adjust"
        self.remember(m, services.points_adjust, **kwargs)

    # --- idempotency ---

    @precondition(lambda self: self.last_call is not None)
    @rule(same_request=st.booleans())
    def same_key_again(self, same_request):
        """The same request again is a replay; another request with the key is refused."""
        m, function, kwargs = self.last_call
        before = ledger_snapshot()
        if same_request:
            result = function(**kwargs, now=self.now)
            if isinstance(result, Operation):
                assert result.replayed is True
            else:
                assert isinstance(result, Hold)
        else:
            with pytest.raises(IdempotencyKeyReused):
                services.points_adjust(member=self.members[m], points=1, key=kwargs["key"],
                                       reason="another request", now=self.now)
        assert ledger_snapshot() == before, f"{function.__name__} again with its key changed the ledger"

    # --- time and upkeep ---

    @precondition(lambda self: self.now < LAST)
    @rule(hours=st.one_of(st.integers(1, 48), st.integers(2, 10).map(lambda days: 24 * days),
                          st.integers(11, 60).map(lambda days: 24 * days)))
    def time_passes(self, hours):
        self.now += dt.timedelta(hours=hours)

    @rule(job=st.sampled_from(["expiry", "maturing", "timed-out holds"]))
    def beat_job(self, job):
        """The beat's jobs, over every member (batches of two members, to cross batch edges)."""
        if job == "expiry":
            touched = sum(self.model.expire(m, self.now) for m in range(len(self.members)))
            assert upkeep.lots_expire(now=self.now, batch_size=2) == touched
        elif job == "maturing":
            touched = sum(self.model.mature(m, self.now) for m in range(len(self.members)))
            assert upkeep.lots_mature(now=self.now, batch_size=2) == touched
        else:
            self.void_timed_out_holds()

    def void_timed_out_holds(self):
        due = sorted(pk for pk, hold in self.model.holds.items()
                     if hold.status == "open" and hold.expires_at <= self.now)
        for pk in due:
            self.model.void(pk, self.now)
        assert upkeep.holds_void_expired(now=self.now) == len(due)

    # --- checks ---

    def assert_soonest_expiry_first(self, m: int, operation: Operation) -> None:
        """No spendable lot that expires sooner than a lot this spend drew on is left with points."""
        drawn = set(Allocation.objects.filter(operation=operation).values_list("lot_id", flat=True))
        lots = self.model.accounts[m].lots
        assert drawn, "a spend took no lot"
        last_drawn = max(lots[lot_id].spend_order() for lot_id in drawn)
        for lot in Lot.objects.filter(member=self.members[m]).spendable().exclude(pk__in=drawn):
            assert lots[lot.pk].spend_order() > last_drawn, f"lot {lot.pk} expires sooner but was not spent"

    @invariant()
    def database_matches_model(self):
        balances = {b.member_id: b for b in Balance.objects.filter(member__in=self.members)}
        lots, entries = {}, {}
        for member_id, *lot in Lot.objects.filter(member__in=self.members).values_list(
            "member_id", "id", "remaining", "matured", "expired_at"
        ):
            lots.setdefault(member_id, {})[lot[0]] = (lot[1], lot[2], lot[3] is not None)
        # every entry of this run is dated in [START, now]: the bounds spare planning all partitions
        for member_id, *entry in Entry.objects.filter(
            member__in=self.members, created_at__gte=START, created_at__lte=self.now
        ).values_list("member_id", "kind", "points", "lot_id"):
            entries.setdefault(member_id, Counter())[tuple(entry)] += 1
        for m, member in enumerate(self.members):
            b, a = balances[member.pk], self.model.accounts[m]
            assert (b.available, b.pending, b.held, b.debt) == (
                self.model.available(m), self.model.pending(m), self.model.held(m), a.debt), f"member {m}"
            assert (b.lifetime_earned, b.lifetime_redeemed, b.lifetime_expired) == (
                a.earned, a.redeemed, a.expired), f"member {m}"
            assert lots.get(member.pk, {}) == {
                lot.id: (lot.remaining, lot.matured, lot.expired) for lot in a.lots.values()}, f"member {m}"
            assert entries.get(member.pk, Counter()) == +a.entries, f"member {m}"
        taken = {}
        for op_id, lot_id, points, returned, claimed in Allocation.objects.filter(
            operation__member__in=self.members
        ).values_list("operation_id", "lot_id", "points", "returned", "claimed").order_by("id"):
            assert returned in (0, points)
            taken.setdefault(op_id, []).append([lot_id, points, returned == points, claimed])
        assert taken == {op_id: t for op_id, t in self.model.taken.items() if t}
        assert run_audit() == []


@pytest.mark.slow
def test_ledger_matches_reference_model(db):
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
