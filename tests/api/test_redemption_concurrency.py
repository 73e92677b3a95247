"""Redemptions under concurrency, through the API: threads, each with its own database connection.

API_TEST_THREADS (default 50) bounds the threads (and so the connections) used at once; the
number of requests is what the test says whatever it is.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest
from django.db import connection

from campaigns.models import Redemption, Reward, VoucherCode
from ledger.audit import run_audit
from ledger.models import Balance, Entry
from tests.api.fixtures import bare_client, client_for, earn, in_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

THREADS = int(os.environ.get("API_TEST_THREADS", "50"))


def redeem(key: str, body: dict) -> tuple[int, dict]:
    response = bare_client(key).post("/api/v1/redemptions", body, format="json")
    return response.status_code, response.json()


class BalanceWatch:
    """Samples the committed balances of some members while the threads run."""

    def __init__(self, member_ids):
        self.member_ids = list(member_ids)
        self.lowest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            while not self._stop.is_set():
                values = list(Balance.objects.filter(member_id__in=self.member_ids)
                              .values_list("available", "held", "pending"))
                for value in (v for row in values for v in row):
                    self.lowest = value if self.lowest is None else min(self.lowest, value)
                self.samples += 1
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def test_50_redemptions_at_once_on_one_member_spend_only_what_is_there(make_program, make_member):
    program = make_program()
    member = make_member(program, external_id="c-1")
    earn(member, 600)
    earn(member, 400)
    key = client_for(program, "POS").api_key
    n_funded = 10  # 1000 points, 100 a redemption

    with BalanceWatch([member.pk]) as watch:
        results = in_threads(50, lambda i: redeem(key, {"member_id": "c-1", "points": 100}),
                             workers=min(THREADS, 50))

    statuses = Counter(status for status, _body in results)
    assert statuses == {201: n_funded, 422: 50 - n_funded}, statuses
    assert all(body["error"]["code"] == "insufficient_points" and body["error"]["type"] == "invalid_request_error"
               for status, body in results if status == 422)
    assert watch.samples > 0 and watch.lowest >= 0
    balance = Balance.objects.get(member=member)
    assert (balance.available, balance.held, balance.lifetime_redeemed) == (0, 0, 1000)
    assert Entry.objects.filter(member=member, kind="redeem").count() == n_funded
    assert Redemption.objects.filter(member=member, status="captured").count() == n_funded
    assert sorted(b["balance"]["available"] for s, b in results if s == 201) == list(range(0, 1000, 100))
    assert run_audit() == []


def test_50_holds_and_redemptions_mixed_on_one_member_never_overspend(make_program, make_member):
    program = make_program()
    member = make_member(program, external_id="c-1")
    earn(member, 1050)
    key = client_for(program, "POS").api_key

    def work(i):
        return redeem(key, {"member_id": "c-1", "points": 100, "capture": i % 2 == 0})

    with BalanceWatch([member.pk]) as watch:
        results = in_threads(50, work, workers=min(THREADS, 50))
    statuses = Counter(status for status, _body in results)
    assert statuses == {201: 10, 422: 40}, statuses
    assert watch.lowest >= 0
    balance = Balance.objects.get(member=member)
    held = sum(1 for s, b in results if s == 201 and b["status"] == "held")
    assert (balance.available, balance.held) == (50, held * 100)
    assert run_audit() == []


def test_50_members_redeem_a_reward_with_stock_10_at_once(make_program, make_member):
    program = make_program()
    members = [make_member(program, external_id=f"c-{i}") for i in range(50)]
    for member in members:
        earn(member, 500)
    reward = Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=300, stock=10)
    key = client_for(program, "POS").api_key

    with BalanceWatch([m.pk for m in members]) as watch:
        results = in_threads(50, lambda i: redeem(key, {"member_id": f"c-{i}", "reward": "tote-bag"}),
                             workers=min(THREADS, 50))

    statuses = Counter(status for status, _body in results)
    assert statuses == {201: 10, 409: 40}, statuses
    assert all(body["error"]["code"] == "out_of_stock" and body["error"]["type"] == "conflict"
               for status, body in results if status == 409)
    assert watch.lowest >= 0
    reward.refresh_from_db()
    assert reward.stock == 0
    winners = {f"c-{i}" for i, (status, _b) in enumerate(results) if status == 201}
    for member in members:
        balance = Balance.objects.get(member=member)
        expected = 200 if member.external_id in winners else 500
        assert balance.available == expected, member.external_id
    assert Redemption.objects.filter(reward=reward, status="captured").count() == 10
    assert Entry.objects.filter(program=program, kind="redeem").count() == 10
    assert run_audit() == []


@pytest.mark.parametrize("stock", [None, 10], ids=["pool-only", "pool-and-stock"])
def test_a_voucher_pool_of_10_codes_under_20_redemptions_gives_each_code_once(make_program, make_member, stock):
    program = make_program()
    members = [make_member(program, external_id=f"c-{i}") for i in range(20)]
    for member in members:
        earn(member, 100)
    reward = Reward.objects.create(program=program, code="gift-card", name="Gift card", cost=50, stock=stock,
                                   vouchers=Reward.Vouchers.POOL)
    codes = [f"GIFT-{i:04}" for i in range(10)]
    VoucherCode.objects.bulk_create([VoucherCode(reward=reward, code=code) for code in codes])
    key = client_for(program, "POS").api_key

    results = in_threads(20, lambda i: redeem(key, {"member_id": f"c-{i}", "reward": "gift-card"}),
                         workers=min(THREADS, 20))

    statuses = Counter(status for status, _body in results)
    assert statuses == {201: 10, 409: 10}, statuses
    assert all(body["error"]["code"] == "out_of_stock" for status, body in results if status == 409)
    given = [body["voucher_code"] for status, body in results if status == 201]
    assert sorted(given) == codes  # each code exactly once
    for code in VoucherCode.objects.filter(reward=reward):
        assert code.redemption_id is not None and code.given_at is not None
        assert code.redemption.voucher_code == code.code
    assert Redemption.objects.filter(reward=reward).count() == 10
    losers = [f"c-{i}" for i, (status, _b) in enumerate(results) if status == 409]
    assert all(Balance.objects.get(member__external_id=m).available == 100 for m in losers)
    assert run_audit() == []


@pytest.mark.parametrize(("stock", "vouchers"), [(10, "none"), (None, "pool"), (10, "pool")],
                         ids=["stock", "pool-only", "pool-and-stock"])
def test_timed_out_holds_give_their_units_to_20_redemptions_at_once_while_beat_voids_them(
        make_program, make_member, stock, vouchers):
    """Ten holds take all the units, then time out. Twenty redemptions at once, with the beat job
    voiding the holds at the same time: exactly ten get a unit, each pool code is given once, and
    no unit goes back to the stock twice."""
    from django.utils import timezone

    from campaigns.services import redemptions_void_expired
    from ledger.models import Hold

    program = make_program()
    holders = [make_member(program, external_id=f"h-{i}") for i in range(10)]
    members = [make_member(program, external_id=f"c-{i}") for i in range(20)]
    for member in holders + members:
        earn(member, 100)
    reward = Reward.objects.create(program=program, code="gift", name="Gift", cost=50, stock=stock, vouchers=vouchers)
    codes = [f"GIFT-{i:04}" for i in range(10)]
    if vouchers == "pool":
        VoucherCode.objects.bulk_create([VoucherCode(reward=reward, code=code) for code in codes])
    key = client_for(program, "POS").api_key
    held = [redeem(key, {"member_id": f"h-{i}", "reward": "gift", "capture": False}) for i in range(10)]
    assert [status for status, _body in held] == [201] * 10
    assert redeem(key, {"member_id": "c-0", "reward": "gift"})[1]["error"]["code"] == "out_of_stock"
    Hold.objects.filter(program=program).update(expires_at=timezone.now())

    def work(i):
        if i == 20:
            try:
                return "voided", redemptions_void_expired()
            finally:
                connection.close()
        return redeem(key, {"member_id": f"c-{i}", "reward": "gift"})

    results = in_threads(21, work, workers=min(THREADS, 21))

    statuses = Counter(status for status, _body in results[:20])
    assert statuses == {201: 10, 409: 10}, statuses
    assert results[20][1] <= 10
    redemptions_void_expired()  # whatever the concurrent run left
    assert Redemption.objects.filter(reward=reward, status="held").count() == 0
    assert Redemption.objects.filter(reward=reward, status="voided", stock_returned=True).count() == 10
    assert Redemption.objects.filter(reward=reward, status="captured").count() == 10
    reward.refresh_from_db()
    assert reward.stock == (0 if stock is not None else None)
    if vouchers == "pool":
        given = sorted(body["voucher_code"] for status, body in results[:20] if status == 201)
        assert given == codes
        assert not VoucherCode.objects.filter(reward=reward, redemption__isnull=True).exists()
    assert all(Balance.objects.get(member=m).available == 100 for m in holders)
    winners = {f"c-{i}" for i, (status, _b) in enumerate(results[:20]) if status == 201}
    assert all(Balance.objects.get(member=m).available == (50 if m.external_id in winners else 100)
               for m in members)
    assert run_audit() == []
