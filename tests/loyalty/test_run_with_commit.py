"""Statements a transaction's ``COMMIT`` carries (``DatabaseWrapper.run_with_commit``): they run
last in the transaction and commit with it, or not at all."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.transaction import TransactionManagementError

from accounts.models import Member

pytestmark = pytest.mark.django_db(transaction=True)


def _rename(member: Member, email: str) -> bytes:
    return b"UPDATE accounts_member SET email = '%s' WHERE id = %d;" % (email.encode(), member.pk)


def _email(member: Member) -> str:
    return Member.objects.get(pk=member.pk).email


def test_carried_statements_commit_with_the_transaction(program, make_member):
    member = make_member(program, email="before@example.com")
    with transaction.atomic():
        Member.objects.filter(pk=member.pk).update(attributes={"seen": True})
        connection.run_with_commit(_rename(member, "first@example.com"))
        connection.run_with_commit(_rename(member, "last@example.com"))  # in the order given
        assert _email(member) == "before@example.com"  # not sent before the commit
    assert _email(member) == "last@example.com"
    assert Member.objects.get(pk=member.pk).attributes == {"seen": True}


def test_a_carried_statement_that_fails_rolls_the_transaction_back(program, make_member):
    member = make_member(program, email="before@example.com")
    with pytest.raises(DatabaseError, match="division by zero"):
        with transaction.atomic():
            Member.objects.filter(pk=member.pk).update(attributes={"seen": True})
            connection.run_with_commit(b"SELECT 1 / 0;")
    assert Member.objects.get(pk=member.pk).attributes == {}
    with transaction.atomic():  # the connection is usable, and carries nothing left over
        Member.objects.filter(pk=member.pk).update(email="after@example.com")
    assert _email(member) == "after@example.com"


def test_a_rolled_back_transaction_forgets_what_its_commit_was_to_carry(program, make_member):
    member = make_member(program, email="before@example.com")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            connection.run_with_commit(_rename(member, "never@example.com"))
            raise RuntimeError("refused")
    with transaction.atomic():
        Member.objects.filter(pk=member.pk).update(attributes={"next": 1})
    assert _email(member) == "before@example.com"


def test_in_a_nested_block_the_statements_run_at_once(program, make_member):
    member = make_member(program, email="before@example.com")
    with transaction.atomic():
        with transaction.atomic():
            connection.run_with_commit(_rename(member, "nested@example.com"))
            assert _email(member) == "nested@example.com"
        with pytest.raises(RuntimeError), transaction.atomic():
            connection.run_with_commit(_rename(member, "rolled-back@example.com"))
            raise RuntimeError("the savepoint rolls back")
        assert _email(member) == "nested@example.com"
    assert _email(member) == "nested@example.com"


def test_outside_a_transaction_it_is_refused(program, make_member):
    member = make_member(program, email="before@example.com")
    with pytest.raises(TransactionManagementError):
        connection.run_with_commit(_rename(member, "x@example.com"))
    assert _email(member) == "before@example.com"
