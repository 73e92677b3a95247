import pytest

from campaigns.models import Reward


@pytest.fixture
def funded(api, program, make_member):
    from ledger.services import points_earn

    member = make_member(program, external_id="c-1")
    points_earn(member=member, points=1000, key="seed")
    return member


def test_reward_redemption_and_hold_flow(api, program, funded):
    Reward.objects.create(program=program, code="free-coffee", name="Free coffee", cost=150)
    Reward.objects.create(program=program, code="tote-bag", name="Tote bag", cost=1000, stock=1, vouchers="generated")
    assert [r["id"] for r in api.get("/api/v1/rewards").json()["data"]] == ["free-coffee", "tote-bag"]
    captured = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "free-coffee"}, format="json")
    assert captured.status_code == 201, captured.json()
    assert captured.json()["status"] == "captured" and captured.json()["balance"]["available"] == 850
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 500, "capture": False}, format="json")
    assert held.json()["status"] == "held" and held.json()["balance"]["held"] == 500
    voided = api.post(f"/api/v1/redemptions/{held.json()['id']}/void")
    assert voided.status_code == 200, voided.json()
    assert voided.json()["status"] == "voided" and voided.json()["balance"]["available"] == 850
    short = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag"}, format="json")
    assert short.status_code == 422 and short.json()["error"]["code"] == "insufficient_points"
    cancelled = api.post(f"/api/v1/redemptions/{captured.json()['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["balance"]["available"] == 1000
    tote = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag"}, format="json")
    assert tote.status_code == 201 and len(tote.json()["voucher_code"]) == 19
    api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 1000, "reason": "x"}, format="json")
    out = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "tote-bag"}, format="json")
    assert out.status_code == 409 and out.json()["error"]["code"] == "out_of_stock"
    from ledger.audit import run_audit

    assert run_audit() == []


def test_pool_codes_are_reserved_by_holds_and_freed_by_voids(api, program, funded):
    from campaigns.models import VoucherCode

    reward = Reward.objects.create(program=program, code="cinema", name="Cinema", cost=100, vouchers="pool")
    VoucherCode.objects.create(reward=reward, code="ONLY-ONE")
    assert api.get("/api/v1/rewards").json()["data"][0]["stock"] == 1
    held = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "cinema", "capture": False}, format="json")
    assert held.status_code == 201 and held.json()["voucher_code"] is None
    assert api.get("/api/v1/rewards").json()["data"][0]["available"] is False
    second = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "cinema", "capture": False}, format="json")
    assert second.status_code == 409 and second.json()["error"]["code"] == "out_of_stock"
    api.post(f"/api/v1/redemptions/{held.json()['id']}/void")
    again = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "cinema"}, format="json")
    assert again.status_code == 201 and again.json()["voucher_code"] == "ONLY-ONE"


def test_a_redemption_finds_its_member_by_the_statement_that_locks_it_and_reads_its_reward_once(
        api, program, funded):
    from django.db import connection

    from tests.api.fixtures import Statements

    Reward.objects.create(program=program, code="free-coffee", name="Free coffee", cost=150)
    for body in ({"member_id": "c-1", "points": 10}, {"member_id": "c-1", "reward": "free-coffee"}):
        statements = Statements()
        with connection.execute_wrapper(statements):
            assert api.post("/api/v1/redemptions", body, format="json").status_code == 201
        lookups = [sql for sql in statements if "external_id = " in sql]
        assert len(lookups) == 1 and "JOIN ledger_balance" in lookups[0] and "FOR UPDATE OF b" in lookups[0]
        rewards = [sql for sql in statements if "campaigns_reward" in sql and sql.lstrip().startswith("SELECT")]
        assert len(rewards) == ("reward" in body)


def test_an_unknown_member_is_404_before_an_unknown_reward_and_nothing_is_written(api, program, funded):
    from ledger.models import Operation

    before = Operation.objects.count()
    for body in ({"member_id": "ghost", "reward": "nope"}, {"member_id": "ghost", "points": 5}):
        response = api.post("/api/v1/redemptions", body, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "member_not_found"
    response = api.post("/api/v1/redemptions", {"member_id": "c-1", "reward": "nope"}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "reward_not_found"
    assert Operation.objects.count() == before
