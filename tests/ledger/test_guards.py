"""What the database itself refuses, what running twice does, and what a key buys."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, ProgrammingError, connection, transaction

from ledger import services, upkeep
from ledger.audit import run_audit
from ledger.errors import IdempotencyKeyReused, InsufficientPoints, InvalidLedgerState
from ledger.models import Balance, Entry, Hold, Lot, Operation
from ledger.partitions import ENTRY_TABLE, partition_name
from tests.ledger.ledger_state import ledger_snapshot

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def balance_of(member) -> tuple[int, int, int, int]:
    b = Balance.objects.get(member=member)
    return b.available, b.pending, b.held, b.lifetime_expired


# --- the journal is append-only --------------------------------------------------------
# The trigger RAISEs (SQLSTATE P0001), which psycopg and so Django class as ProgrammingError.
REFUSED = "pgtrigger: Cannot update or delete rows"


@pytest.fixture
def entry(member):
    services.points_earn(member=member, points=10, key="earn", now=NOW)
    return Entry.objects.get(member=member)


@pytest.mark.parametrize("table", [ENTRY_TABLE, partition_name(NOW.date())], ids=["parent", "partition"])
def test_raw_update_of_an_entry_is_refused(entry, table):
    with pytest.raises(ProgrammingError, match=REFUSED), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET points = 1000 WHERE id = %s", [entry.pk])
    assert Entry.objects.get(pk=entry.pk).points == 10


@pytest.mark.parametrize("table", [ENTRY_TABLE, partition_name(NOW.date())], ids=["parent", "partition"])
def test_raw_delete_of_an_entry_is_refused(entry, table):
    with pytest.raises(ProgrammingError, match=REFUSED), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [entry.pk])
    assert Entry.objects.filter(pk=entry.pk).exists()


def test_orm_update_and_delete_of_entries_are_refused(entry):
    with pytest.raises(ProgrammingError, match=REFUSED), transaction.atomic():
        Entry.objects.filter(pk=entry.pk).update(description="edited")
    with pytest.raises(ProgrammingError, match=REFUSED), transaction.atomic():
        Entry.objects.filter(pk=entry.pk).delete()
    assert Entry.objects.filter(pk=entry.pk, description="").exists()


# --- no catch-all partition ------------------------------------------------------------


def test_entry_table_is_range_partitioned_without_a_default_partition(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT partstrat, partdefid::int FROM pg_partitioned_table WHERE partrelid = %s::regclass",
            [ENTRY_TABLE],
        )
        assert cursor.fetchone() == ("r", 0)
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT') "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [ENTRY_TABLE],
        )
        partitions, defaults = cursor.fetchone()
    assert partitions >= 12 * 6 and defaults == 0


def test_a_row_for_a_month_without_partition_is_refused(member):
    with pytest.raises(IntegrityError, match="no partition"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points) "
            "VALUES ('2040-06-15 12:00:00+00', %s, %s, 'earn', 5)",
            [member.program_id, member.pk],
        )
    assert not Entry.objects.filter(member=member).exists()


def test_a_service_dated_in_a_month_without_partition_changes_nothing(member):
    before = ledger_snapshot()
    with pytest.raises(IntegrityError, match="no partition"):
        services.points_earn(member=member, points=5, key="far-future", now=dt.datetime(2040, 6, 15, tzinfo=dt.UTC))
    assert ledger_snapshot() == before


# --- upkeep twice is upkeep once -------------------------------------------------------


def test_expiry_twice_equals_once(make_program, make_member):
    program = make_program(expiry_days=30)
    first, second = make_member(program), make_member(program)
    for member in (first, second):
        services.points_earn(member=member, points=100, key=f"old-{member.pk}", now=NOW)
        services.points_earn(member=member, points=40, key=f"new-{member.pk}", now=NOW + 20 * DAY)
    services.points_redeem(member=first, points=30, key="redeem", now=NOW + 21 * DAY)
    due = NOW + 30 * DAY

    assert upkeep.lots_expire(now=due, batch_size=1) == 2
    once = ledger_snapshot()
    assert upkeep.lots_expire(now=due, batch_size=1) == 0
    assert upkeep.lots_expire(now=due + DAY) == 0
    assert ledger_snapshot() == once

    expired = Entry.objects.filter(kind="expire").order_by("member_id")
    assert [(e.member_id, e.points) for e in expired] == [(first.pk, -70), (second.pk, -100)]
    assert balance_of(first) == (40, 0, 0, 70)
    assert balance_of(second) == (40, 0, 0, 100)
    # a spend path at the same moment settles nothing more
    services.points_redeem(member=first, points=40, key="after", now=due)
    assert Entry.objects.filter(kind="expire").count() == 2
    assert run_audit() == []


def test_maturing_twice_equals_once(make_program, make_member):
    program = make_program(pending_days=2)
    member = make_member(program)
    services.points_earn(member=member, points=25, key="a", now=NOW)
    services.points_earn(member=member, points=15, key="b", now=NOW + DAY)
    assert balance_of(member) == (0, 40, 0, 0)

    assert upkeep.lots_mature(now=NOW + 2 * DAY) == 1
    once = ledger_snapshot()
    assert balance_of(member) == (25, 15, 0, 0)
    assert upkeep.lots_mature(now=NOW + 2 * DAY) == 0
    assert ledger_snapshot() == once
    assert upkeep.lots_mature(now=NOW + 3 * DAY) == 1
    assert upkeep.lots_mature(now=NOW + 3 * DAY) == 0
    assert balance_of(member) == (40, 0, 0, 0)
    assert list(Lot.objects.filter(member=member).values_list("matured", flat=True)) == [True, True]
    assert run_audit() == []


# --- idempotency keys ------------------------------------------------------------------


@pytest.fixture
def funded(member):
    services.points_earn(member=member, points=500, key="funding", now=NOW)
    return member


def _earn(member, points):
    return services.points_earn(member=member, points=points, key="k", now=NOW)


def _redeem(member, points):
    return services.points_redeem(member=member, points=points, key="k", now=NOW)


def _hold(member, points):
    return services.points_hold(member=member, points=points, key="k", now=NOW)


def _adjust(member, points):
    return services.points_adjust(member=member, points=-points, key="k", reason="fix", now=NOW)


def _reverse(member, points):
    earn = Operation.objects.get(program_id=member.program_id, key="funding")
    return services.points_reverse(earn=earn, points=points, key="k", now=NOW)


def _hold_then(action):
    def call(member, points):
        return action(hold=Hold.objects.get(member=member, points=points), key="k", now=NOW)
    return call


def _cancel(member, points):
    redemption = Operation.objects.get(program_id=member.program_id, key=f"redeem-{points}")
    return services.redemption_cancel(redemption=redemption, key="k", now=NOW)


KEYED = {
    "earn": _earn, "redeem": _redeem, "hold": _hold, "adjust": _adjust, "reverse": _reverse,
    "capture": _hold_then(services.hold_capture), "void": _hold_then(services.hold_void), "cancel": _cancel,
}


@pytest.fixture
def busy(funded):
    """Holds and redemptions of 20 and of 21 points, for the calls that act on one."""
    for points in (20, 21):
        services.points_hold(member=funded, points=points, key=f"hold-{points}", now=NOW)
        services.points_redeem(member=funded, points=points, key=f"redeem-{points}", now=NOW)
    return funded


@pytest.mark.parametrize("call", KEYED.values(), ids=KEYED.keys())
def test_same_key_same_request_replays_the_first_operation(busy, call):
    first = call(busy, 20)
    once = ledger_snapshot()
    later = call(busy, 20)
    assert later.pk == first.pk
    if isinstance(first, Operation):
        assert first.replayed is False and later.replayed is True
    assert ledger_snapshot() == once
    assert Operation.objects.filter(program_id=busy.program_id, key="k").count() == 1
    assert run_audit() == []


@pytest.mark.parametrize("call", KEYED.values(), ids=KEYED.keys())
def test_same_key_other_request_is_refused(busy, call):
    call(busy, 20)
    once = ledger_snapshot()
    with pytest.raises(IdempotencyKeyReused):
        call(busy, 21)
    assert ledger_snapshot() == once


def test_same_key_for_another_member_or_kind_is_refused_but_another_program_is_free(funded, make_program,
                                                                                    make_member, program):
    services.points_earn(member=funded, points=20, key="k", now=NOW)
    neighbour, stranger = make_member(program), make_member(make_program())
    once = ledger_snapshot()
    with pytest.raises(IdempotencyKeyReused):
        services.points_earn(member=neighbour, points=20, key="k", now=NOW)
    with pytest.raises(IdempotencyKeyReused):
        services.points_redeem(member=funded, points=20, key="k", now=NOW)
    assert ledger_snapshot() == once
    assert services.points_earn(member=stranger, points=20, key="k", now=NOW).replayed is False


def test_a_refused_service_leaves_no_operation_and_frees_its_key(funded):
    before = ledger_snapshot()
    with pytest.raises(InsufficientPoints):
        services.points_redeem(member=funded, points=501, key="too-much", now=NOW)
    assert ledger_snapshot() == before
    assert not Operation.objects.filter(key="too-much").exists()

    redeemed = services.points_redeem(member=funded, points=500, key="too-much", now=NOW)
    assert redeemed.replayed is False
    assert balance_of(funded) == (0, 0, 0, 0)


def test_a_refused_state_change_leaves_no_operation(funded):
    hold = services.points_hold(member=funded, points=50, key="hold", now=NOW)
    services.hold_void(hold=hold, key="void", now=NOW)
    before = ledger_snapshot()
    with pytest.raises(InvalidLedgerState):
        services.hold_capture(hold=hold, key="capture", now=NOW)
    assert ledger_snapshot() == before
    assert not Operation.objects.filter(key="capture").exists()


def test_an_earn_cannot_be_cancelled_nor_a_redemption_reversed(funded):
    earn = Operation.objects.get(key="funding")
    redemption = services.points_redeem(member=funded, points=30, key="redeem", now=NOW)
    before = ledger_snapshot()
    with pytest.raises(InvalidLedgerState) as cancelled:
        services.redemption_cancel(redemption=earn, key="cancel", now=NOW)
    with pytest.raises(InvalidLedgerState) as reversed_:
        services.points_reverse(earn=redemption, points=1, key="reverse", now=NOW)
    assert (cancelled.value.code, reversed_.value.code) == ("not_a_redemption", "not_an_earn")
    assert ledger_snapshot() == before


def test_a_hold_cannot_be_captured_at_its_deadline_but_can_be_voided(funded):
    hold = services.points_hold(member=funded, points=50, key="hold", timeout=dt.timedelta(hours=2), now=NOW)
    deadline = NOW + dt.timedelta(hours=2)
    with pytest.raises(InvalidLedgerState) as refused:
        services.hold_capture(hold=hold, key="capture", now=deadline)
    assert refused.value.code == "hold_expired"
    assert upkeep.holds_void_expired(now=deadline - dt.timedelta(seconds=1)) == 0
    assert upkeep.holds_void_expired(now=deadline) == 1
    assert upkeep.holds_void_expired(now=deadline) == 0
    assert Hold.objects.get(pk=hold.pk).status == Hold.Status.VOIDED
    assert balance_of(funded) == (500, 0, 0, 0)
    assert run_audit() == []


# --- references without foreign keys: the audit checks them ------------------------------
# Operations, lots and entries refer to members and programs without database foreign keys
# (ledger.models.Operation). Rows written around the services must show up in the audit.


def _audit_checks() -> set[str]:
    return {d.check for d in run_audit()}


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_references_written_by_the_services_pass_the_audit(funded):
    assert run_audit() == []


def test_an_entry_of_a_member_that_does_not_exist_is_reported(member):
    services.points_earn(member=member, points=10, key="earn", now=NOW)
    _raw("INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, description) "
         "VALUES (%s, %s, %s, 'adjust', 5, 'written around the services')",
         [NOW, member.program_id, member.pk + 10_000])
    problems = [d for d in run_audit() if d.check == "entry_references"]
    assert len(problems) == 1 and "no such member" in problems[0].actual


def test_an_entry_pointing_at_another_members_lot_is_reported(make_program, make_member):
    program = make_program()
    mine, theirs = make_member(program), make_member(program)
    services.points_earn(member=mine, points=10, key="mine", now=NOW)
    services.points_earn(member=theirs, points=10, key="theirs", now=NOW)
    their_lot = Lot.objects.get(member=theirs)
    _raw("INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, lot_id, description) "
         "VALUES (%s, %s, %s, 'adjust', 5, %s, 'written around the services')",
         [NOW, program.pk, mine.pk, their_lot.pk])
    problems = [d for d in run_audit() if d.check == "entry_references"]
    assert len(problems) == 1 and f"lot {their_lot.pk} of member {theirs.pk}" in problems[0].actual
    # The sums are off too, by those 5 points: the member-level checks see it as well.
    assert "entries_equal_balance" in _audit_checks()


def test_an_entry_in_the_wrong_program_and_an_unknown_operation_are_reported(make_program, member):
    other = make_program()
    services.points_earn(member=member, points=10, key="earn", now=NOW)
    _raw("INSERT INTO ledger_entry (created_at, program_id, member_id, kind, points, operation_id, description) "
         "VALUES (%s, %s, %s, 'adjust', 5, %s, 'written around the services')",
         [NOW, other.pk, member.pk, 987_654_321])
    problems = [d for d in run_audit() if d.check == "entry_references"]
    assert len(problems) == 1
    assert f"member of program {member.program_id}" in problems[0].actual
    assert "no operation 987654321" in problems[0].actual


def test_an_operation_for_a_member_of_another_program_is_reported(make_program, member):
    other = make_program()
    _raw("INSERT INTO ledger_operation (program_id, member_id, key, kind, request_hash, result, created_at) "
         "VALUES (%s, %s, 'stray', 'adjust', '', '{}', %s)", [other.pk, member.pk, NOW])
    assert "operation_references" in _audit_checks()


def test_a_lot_that_is_not_its_operations_members_is_reported(make_program, make_member):
    program = make_program()
    mine, theirs = make_member(program), make_member(program)
    operation = services.points_earn(member=mine, points=10, key="mine", now=NOW)
    _raw("INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured, "
         "created_at, source_type, source_id) VALUES (%s, %s, %s, 1, 0, %s, true, %s, '', '')",
         [program.pk, theirs.pk, operation.pk, NOW, NOW])
    assert "lot_references" in _audit_checks()


def test_a_lot_without_its_operation_is_reported(member):
    program = member.program
    _raw("INSERT INTO ledger_lot (program_id, member_id, operation_id, points, remaining, available_at, matured, "
         "created_at, source_type, source_id) VALUES (%s, %s, 987654321, 1, 0, %s, true, %s, '', '')",
         [program.pk, member.pk, NOW, NOW])
    problems = [d for d in run_audit() if d.check == "lot_references"]
    assert len(problems) == 1 and problems[0].actual == "no operation 987654321"


def test_a_member_with_ledger_rows_still_cannot_be_deleted_through_django(member):
    from django.db.models import ProtectedError

    services.points_earn(member=member, points=10, key="earn", now=NOW)
    with pytest.raises(ProtectedError), transaction.atomic():
        member.delete()
    assert Entry.objects.filter(member=member).exists()


def test_an_earn_for_a_member_without_a_balance_row_creates_it(member):
    Balance.objects.filter(member=member).delete()
    operation = services.points_earn(member=member, points=25, key="first", now=NOW)
    assert not operation.replayed
    assert balance_of(member) == (25, 0, 0, 0)
    assert Lot.objects.get(member=member).operation_id == operation.pk
    assert Entry.objects.get(member=member).points == 25
    assert services.points_earn(member=member, points=25, key="first", now=NOW).pk == operation.pk  # replayed
    assert balance_of(member) == (25, 0, 0, 0)
    assert run_audit() == []


def test_an_earn_settles_debt_first(make_program, make_member):
    program = make_program(allow_negative_balance=True)
    member = make_member(program)
    earn = services.points_earn(member=member, points=10, key="earn", now=NOW)
    services.points_redeem(member=member, points=10, key="spend", now=NOW)
    services.points_reverse(earn=earn, points=10, key="reverse", now=NOW)
    debt = Balance.objects.get(member=member).debt
    assert debt == 10, "the reversal of spent points leaves a debt"
    services.points_earn(member=member, points=25, key="later", now=NOW)
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.debt, balance.lifetime_earned) == (15, 0, 35)
    assert Lot.objects.get(operation__key="later").remaining == 15
    assert run_audit() == []


# --- the single earn's statement is prepared once per connection --------------------------


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_single_earn_statement_is_prepared_and_reused(member):
    for n in range(4):
        services.points_earn(member=member, points=10, key=f"earn-{n}", now=NOW)
    # Other tests on this connection may have prepared other statements (they outlive rollbacks).
    prepared = [s for s in _prepared_statements() if "SELECT program, member, key, 'earn', hash" in s]
    assert len(prepared) == 1, prepared
    assert balance_of(member) == (40, 0, 0, 0)
    assert run_audit() == []


@pytest.mark.django_db(transaction=True)  # a new connection: not inside the test's transaction
def test_without_prepared_statements_the_earn_is_the_same(member, settings):
    connection.close()  # the next connection is opened with prepared statements off
    options = settings.DATABASES["default"]["OPTIONS"]
    saved = options.get("prepare_threshold")
    options["prepare_threshold"] = None
    try:
        for n in range(4):
            services.points_earn(member=member, points=10, key=f"earn-{n}", now=NOW)
        assert not [s for s in _prepared_statements() if "INSERT INTO ledger_operation" in s]
        assert balance_of(member) == (40, 0, 0, 0)
        assert run_audit() == []
    finally:
        options["prepare_threshold"] = saved
        connection.close()


# --- a caller that locks before it spends ------------------------------------------------


def test_lock_for_spending_finds_the_operation_already_made_with_a_key(member):
    spent = services.points_earn(member=member, points=50, key="earn", now=NOW)
    with transaction.atomic():
        balance, earlier = services.lock_for_spending(member, key="earn", now=NOW)
        assert (balance.member_id, balance.available, earlier) == (member.pk, 50, spent.pk)
        assert services.lock_for_spending(member, key="never-used", now=NOW)[1] is None


def test_lock_for_spending_settles_what_is_due_and_the_spend_uses_that_balance(make_program, make_member):
    program = make_program(expiry_days=30)
    member = make_member(program)
    services.points_earn(member=member, points=40, key="old", now=NOW - 40 * DAY)  # expired 10 days ago
    services.points_earn(member=member, points=25, key="new", now=NOW)
    with transaction.atomic():
        balance, _ = services.lock_for_spending(member, key="spend", now=NOW)
        assert (balance.available, balance.lifetime_expired) == (25, 40)
        with pytest.raises(InsufficientPoints):
            services.points_redeem(member=member, points=30, key="spend", now=NOW, savepoint=True, locked=balance)
        services.points_redeem(member=member, points=20, key="spend-less", now=NOW, locked=balance)
    assert balance_of(member) == (5, 0, 0, 40)
    assert run_audit() == []


def test_a_balance_locked_for_another_member_is_refused(program, make_member):
    alice, bob = make_member(program), make_member(program)
    services.points_earn(member=alice, points=10, key="a", now=NOW)
    services.points_earn(member=bob, points=10, key="b", now=NOW)
    with transaction.atomic():
        bobs, _ = services.lock_for_spending(bob, key="k", now=NOW)
        with pytest.raises(ValueError, match="not"):
            services.points_redeem(member=alice, points=5, key="k", now=NOW, locked=bobs)
        with pytest.raises(ValueError, match="not"):
            services.points_hold(member=alice, points=5, key="k2", now=NOW, locked=bobs)
    assert balance_of(alice) == (10, 0, 0, 0) and balance_of(bob) == (10, 0, 0, 0)
