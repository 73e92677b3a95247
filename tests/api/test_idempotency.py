"""``Idempotency-Key`` on every POST (API.md, Basics):

the same key and body replays the first response (status and body) with
``Idempotent-Replayed: true`` and changes nothing; another body is 422
``idempotency_key_reused``; a key whose first request is still running is 409
``idempotency_key_in_use``; keys are 1..255 characters and kept at least 24 hours.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Member, Partner
from campaigns import services as campaigns
from campaigns.models import Redemption, Reward
from ledger.audit import run_audit
from ledger.models import Balance, Entry
from loyalty.api.idempotency import _request_hash, idempotency_records_clean
from loyalty.models import IdempotencyRecord
from tests.api.fixtures import assert_error, client_for, earn, in_thread, purchase, snapshot, spend_rule

REPLAYED = "Idempotent-Replayed"


@pytest.fixture
def world(program, make_member):
    spend_rule(program)
    member = make_member(program, external_id="c-1")
    earn(member, 1000)
    make_member(program, external_id="c-2")
    Reward.objects.create(program=program, code="mug", name="Mug", cost=100, stock=10, vouchers="generated")
    held = [campaigns.redemption_create(member=member, points=10, capture=False, key=f"held-{i}") for i in range(2)]
    captured = [campaigns.redemption_create(member=member, points=10, key=f"captured-{i}") for i in range(2)]
    return SimpleNamespace(program=program, member=member, api=client_for(program, "POS"),
                           held=[r.public_id for r in held], captured=[r.public_id for r in captured])


# (case, path, body, another body for the same key). {held}/{captured} name a redemption.
POSTS = [
    ("member", "/api/v1/members", {"external_id": "idem-1", "email": "a@b.c"}, {"external_id": "idem-2"}),
    ("adjustment", "/api/v1/adjustments", {"member_id": "c-1", "points": 50, "reason": "welcome"},
     {"member_id": "c-1", "points": 51, "reason": "welcome"}),
    ("redeem-reward", "/api/v1/redemptions", {"member_id": "c-1", "reward": "mug", "quantity": 1},
     {"member_id": "c-1", "reward": "mug", "quantity": 2}),
    ("redeem-points", "/api/v1/redemptions", {"member_id": "c-1", "points": 30, "description": "paid"},
     {"member_id": "c-2", "points": 30, "description": "paid"}),
    ("redeem-hold", "/api/v1/redemptions", {"member_id": "c-1", "points": 30, "capture": False},
     {"member_id": "c-1", "points": 30, "capture": True}),
    ("capture", "/api/v1/redemptions/{held0}/capture", None, "/api/v1/redemptions/{held1}/capture"),
    ("void", "/api/v1/redemptions/{held0}/void", None, "/api/v1/redemptions/{held1}/void"),
    ("cancel", "/api/v1/redemptions/{captured0}/cancel", None, "/api/v1/redemptions/{captured1}/cancel"),
    ("event", "/api/v1/events", purchase("idem-ev-1", "c-1", amount="10.00"),
     purchase("idem-ev-1", "c-1", amount="99.00")),
    ("event-batch", "/api/v1/events/batch", {"events": [purchase("idem-b-1", "c-1")]},
     {"events": [purchase("idem-b-2", "c-1")]}),
    ("webhook-endpoint", "/api/v1/webhook_endpoints", {"url": "https://example.com/a"},
     {"url": "https://example.com/b"}),
]
IDS = [case[0] for case in POSTS]


def path_of(world, path: str) -> str:
    return path.format(held0=world.held[0], held1=world.held[1], captured0=world.captured[0],
                       captured1=world.captured[1])


def post(client, path, body, key=None):
    extra = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    if body is None:
        return client.post(path, **extra)
    return client.post(path, body, format="json", **extra)


@pytest.mark.parametrize(("case", "path", "body", "other"), POSTS, ids=IDS)
def test_replay_returns_the_first_response_and_changes_nothing(world, case, path, body, other):
    path = path_of(world, path)
    first = post(world.api, path, body, key=f"k-{case}")
    assert first.status_code in (200, 201, 202), first.json()
    assert REPLAYED not in first
    after_first = snapshot(world.program)
    for _ in range(2):
        replay = post(world.api, path, body, key=f"k-{case}")
        assert replay.status_code == first.status_code, replay.json()
        assert replay.json() == first.json()
        assert replay.content == first.content  # the same bytes, keys in the same order
        assert replay["Content-Type"] == first["Content-Type"]
        assert replay[REPLAYED] == "true"
        assert snapshot(world.program) == after_first
    assert run_audit() == []


@pytest.mark.parametrize(("case", "path", "body", "other"), POSTS, ids=IDS)
def test_the_same_key_with_another_request_is_422(world, case, path, body, other):
    path = path_of(world, path)
    first = post(world.api, path, body, key=f"k-{case}")
    assert first.status_code in (200, 201, 202), first.json()
    before = snapshot(world.program)
    if isinstance(other, str):  # an action without a body: the same key on another redemption
        reused = post(world.api, path_of(world, other), None, key=f"k-{case}")
    else:
        reused = post(world.api, path, other, key=f"k-{case}")
    assert_error(reused, 422, "idempotency_key_reused", error_type="invalid_request_error")
    assert REPLAYED not in reused
    assert snapshot(world.program) == before


@pytest.mark.parametrize(("case", "path", "body", "other"), POSTS, ids=IDS)
@pytest.mark.parametrize("key", ["k" * 256, ""], ids=["256-chars", "empty"])
def test_a_key_outside_1_to_255_characters_is_400_and_changes_nothing(world, case, path, body, other, key):
    path = path_of(world, path)
    before = snapshot(world.program)
    response = post(world.api, path, body, key=key)
    assert_error(response, 400, param="Idempotency-Key")
    assert snapshot(world.program) == before


@pytest.mark.parametrize(("case", "path", "body", "other"), POSTS, ids=IDS)
@pytest.mark.parametrize("length", [1, 255])
def test_a_key_of_1_to_255_characters_works(world, case, path, body, other, length):
    path = path_of(world, path)
    key = "k" * length
    first = post(world.api, path, body, key=key)
    assert first.status_code in (200, 201, 202), first.json()
    after_first = snapshot(world.program)
    replay = post(world.api, path, body, key=key)
    assert (replay.status_code, replay.json(), replay.get(REPLAYED)) == (first.status_code, first.json(), "true")
    assert snapshot(world.program) == after_first


@pytest.mark.parametrize("length", [250, 251])
def test_a_long_key_works_on_ledger_writes(world, length):
    """Ledger operation keys are derived from the Idempotency-Key ("idem:" + key): a key of
    251..255 characters must not make the derived key too long for the ledger."""
    key = "k" * length
    response = post(world.api, "/api/v1/adjustments", {"member_id": "c-1", "points": 5, "reason": "x"}, key=key)
    assert response.status_code == 201, response.json()


def test_a_key_is_the_partners_own_not_the_programs(world):
    """Two partners of one program may use the same key: neither gets the other's response (a
    webhook endpoint's secret, say), and the ledger posts each one's request."""
    shop = client_for(world.program, "Web shop")
    pos_hook = post(world.api, "/api/v1/webhook_endpoints", {"url": "https://pos.example.com/hook"}, key="k-1")
    shop_hook = post(shop, "/api/v1/webhook_endpoints", {"url": "https://pos.example.com/hook"}, key="k-1")
    assert (pos_hook.status_code, shop_hook.status_code) == (201, 201)
    assert shop_hook.get(REPLAYED) is None
    assert shop_hook.json()["secret"] != pos_hook.json()["secret"]

    body = {"member_id": "c-1", "points": 7, "reason": "goodwill"}
    assert post(world.api, "/api/v1/adjustments", body, key="k-2").status_code == 201
    other_body = {**body, "points": 8}
    shop_adjust = post(shop, "/api/v1/adjustments", other_body, key="k-2")  # not "reused": not its key
    assert (shop_adjust.status_code, shop_adjust.get(REPLAYED)) == (201, None), shop_adjust.json()
    same_body = post(shop, "/api/v1/adjustments", body, key="k-3")
    again = post(world.api, "/api/v1/adjustments", body, key="k-3")
    assert (same_body.status_code, again.status_code, again.get(REPLAYED)) == (201, 201, None)
    points = sorted(Entry.objects.filter(member=world.member, kind="adjust").values_list("points", flat=True))
    assert points == [7, 7, 7, 8]
    assert run_audit() == []


def test_an_error_response_is_replayed_too(world):
    body = {"member_id": "c-1", "points": 10**6}
    first = post(world.api, "/api/v1/redemptions", body, key="too-much")
    assert_error(first, 422, "insufficient_points")
    earn(world.member, 10**6)
    replay = post(world.api, "/api/v1/redemptions", body, key="too-much")
    assert (replay.status_code, replay.content, replay[REPLAYED]) == (422, first.content, "true")
    assert not Redemption.objects.filter(points=10**6).exists()


def test_a_response_stored_as_a_json_value_is_still_replayed(world):
    """Records written before bodies were kept as text hold the body as a JSON value."""
    from loyalty.models import IdempotencyRecord

    body = {"member_id": "c-1", "points": 5, "reason": "x"}
    first = post(world.api, "/api/v1/adjustments", body, key="old-style")
    IdempotencyRecord.objects.filter(key="old-style").update(response_body=first.json())
    replay = post(world.api, "/api/v1/adjustments", body, key="old-style")
    assert (replay.status_code, replay.json(), replay[REPLAYED]) == (first.status_code, first.json(), "true")


def test_keys_are_per_program(world, make_program, make_member):
    other_program = make_program()
    make_member(other_program, external_id="c-1")
    other = client_for(other_program, "Other")
    mine = post(world.api, "/api/v1/members", {"external_id": "same-key"}, key="shared")
    theirs = post(other, "/api/v1/members", {"external_id": "different"}, key="shared")
    assert mine.status_code == theirs.status_code == 201
    assert REPLAYED not in theirs
    assert Member.objects.filter(program=other_program, external_id="different").exists()


def test_without_a_key_each_post_is_new(world):
    body = {"member_id": "c-1", "points": 10, "reason": "x"}
    assert post(world.api, "/api/v1/adjustments", body).status_code == 201
    assert post(world.api, "/api/v1/adjustments", body).status_code == 201
    assert Entry.objects.filter(member=world.member, kind="adjust").count() == 2


# --- in flight -----------------------------------------------------------------------------


def claim_row(world, path, body, key, *, locked_at):
    data = {} if body is None else body  # DRF's request.data of an empty POST is {}
    request_hash = _request_hash(SimpleNamespace(method="POST", path=path, data=data))
    partner = Partner.objects.get(program=world.program, name="POS")
    return IdempotencyRecord.objects.create(program=world.program, partner=partner, key=key,
                                            request_hash=request_hash, created_at=locked_at, locked_at=locked_at)


@pytest.mark.parametrize(("case", "path", "body", "other"), POSTS, ids=IDS)
def test_a_key_whose_first_request_is_still_running_is_409(world, case, path, body, other):
    path = path_of(world, path)
    record = claim_row(world, path, body, f"k-{case}", locked_at=timezone.now())
    before = snapshot(world.program)
    response = post(world.api, path, body, key=f"k-{case}")
    assert_error(response, 409, "idempotency_key_in_use", error_type="conflict")
    assert snapshot(world.program) == before
    record.refresh_from_db()
    assert record.state == IdempotencyRecord.State.IN_PROGRESS


def test_an_in_flight_key_with_another_body_is_422(world):
    claim_row(world, "/api/v1/adjustments", {"member_id": "c-1", "points": 5, "reason": "x"}, "k",
              locked_at=timezone.now())
    response = post(world.api, "/api/v1/adjustments", {"member_id": "c-1", "points": 6, "reason": "x"}, key="k")
    assert_error(response, 422, "idempotency_key_reused")


def test_a_stale_claim_is_taken_over(world):
    body = {"member_id": "c-1", "points": 50, "reason": "welcome"}
    stale = timezone.now() - dt.timedelta(seconds=django_settings.IDEMPOTENCY_LOCK_SECONDS + 1)
    claim_row(world, "/api/v1/adjustments", body, "dead", locked_at=stale)
    response = post(world.api, "/api/v1/adjustments", body, key="dead")
    assert response.status_code == 201, response.json()
    assert response.json()["balance"]["available"] == 1010  # 1000 - 4 x 10 redeemed or held + 50
    record = IdempotencyRecord.objects.get(key="dead")
    assert (record.state, record.response_status) == (IdempotencyRecord.State.DONE, 201)
    assert post(world.api, "/api/v1/adjustments", body, key="dead")[REPLAYED] == "true"


def test_a_claim_just_younger_than_the_lock_is_not_taken_over(world, settings):
    settings.IDEMPOTENCY_LOCK_SECONDS = 60
    body = {"member_id": "c-1", "points": 50, "reason": "welcome"}
    claim_row(world, "/api/v1/adjustments", body, "busy", locked_at=timezone.now() - dt.timedelta(seconds=55))
    assert_error(post(world.api, "/api/v1/adjustments", body, key="busy"), 409, "idempotency_key_in_use")


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/adjustments", {"member_id": "c-1", "points": 50, "reason": "welcome"}),
    ("/api/v1/redemptions", {"member_id": "c-1", "reward": "mug"}),
    ("/api/v1/redemptions", {"member_id": "c-1", "points": 25, "capture": False}),
], ids=["adjustment", "redeem-reward", "redeem-hold"])
def test_taking_over_a_claim_whose_request_did_its_work_never_posts_twice(world, path, body):
    """The first request committed its ledger work, then died before storing its response."""
    first = post(world.api, path, body, key="died")
    assert first.status_code == 201
    after_first = snapshot(world.program)
    stale = timezone.now() - dt.timedelta(seconds=django_settings.IDEMPOTENCY_LOCK_SECONDS + 1)
    IdempotencyRecord.objects.filter(key="died").update(
        state=IdempotencyRecord.State.IN_PROGRESS, response_status=None, response_body=None, locked_at=stale)
    again = post(world.api, path, body, key="died")
    assert again.status_code == 201, again.json()
    first_body, again_body = first.json(), again.json()
    assert again_body == first_body
    assert snapshot(world.program) == after_first
    assert run_audit() == []


# --- retention -----------------------------------------------------------------------------


def test_idempotency_records_clean_forgets_old_keys_and_keeps_newer_ones(world, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 24
    now = timezone.now()

    def record(key, age):
        return IdempotencyRecord.objects.create(program=world.program, key=key, request_hash="x",
                                                state="done", created_at=now - age, locked_at=now - age)

    record("old", dt.timedelta(hours=25))
    record("older", dt.timedelta(days=30))
    record("almost", dt.timedelta(hours=23, minutes=59))
    record("fresh", dt.timedelta(minutes=1))
    assert idempotency_records_clean() == 2
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["almost", "fresh"]
    assert idempotency_records_clean() == 0


def test_keys_are_kept_24_hours(world):
    """A replay just under 24 hours later still answers with the first response."""
    body = {"member_id": "c-1", "points": 5, "reason": "x"}
    first = post(world.api, "/api/v1/adjustments", body, key="day-old")
    IdempotencyRecord.objects.filter(key="day-old").update(
        created_at=timezone.now() - dt.timedelta(hours=23, minutes=50))
    idempotency_records_clean()
    replay = post(world.api, "/api/v1/adjustments", body, key="day-old")
    assert (replay.status_code, replay.json(), replay[REPLAYED]) == (201, first.json(), "true")


def test_a_forgotten_key_reused_for_another_member_never_returns_the_first_members_redemption(world):
    """After the record is cleaned (older than the TTL), a new request with an old key must be
    treated as new, or refused with 422; it must not answer with another request's redemption."""
    first = post(world.api, "/api/v1/redemptions", {"member_id": "c-1", "points": 10}, key="recycled")
    assert first.status_code == 201
    IdempotencyRecord.objects.filter(key="recycled").update(created_at=timezone.now() - dt.timedelta(days=2))
    assert idempotency_records_clean() == 1
    earn(Member.objects.get(external_id="c-2"), 100)
    again = post(world.api, "/api/v1/redemptions", {"member_id": "c-2", "points": 40}, key="recycled")
    if again.status_code == 422:
        assert again.json()["error"]["code"] == "idempotency_key_reused"
    else:
        assert again.status_code == 201, again.json()
        assert again.json()["id"] != first.json()["id"], "answered with member c-1's redemption"
        assert again.json()["points"] == 40
        assert Balance.objects.get(member__external_id="c-2").available == 60


def test_a_forgotten_key_reused_for_another_adjustment_is_new_or_422_on_the_idempotency_key(world):
    first = post(world.api, "/api/v1/adjustments", {"member_id": "c-1", "points": 10, "reason": "x"}, key="old")
    assert first.status_code == 201
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - dt.timedelta(days=2))
    assert idempotency_records_clean() == 1
    again = post(world.api, "/api/v1/adjustments", {"member_id": "c-1", "points": 20, "reason": "x"}, key="old")
    if again.status_code == 422:
        # the partner's header is what was reused; the ledger's internal key is not theirs to see
        assert_error(again, 422, "idempotency_key_reused", param="Idempotency-Key")
        assert "idem:" not in again.json()["error"]["message"]
    else:
        assert again.status_code == 201, again.json()
        assert again.json()["entry"]["points"] == 20


def test_a_5xx_is_not_kept_so_the_key_can_be_retried(world, monkeypatch):
    import accounts.api

    def boom(**kwargs):
        raise RuntimeError("database fell over")

    monkeypatch.setattr(accounts.api, "member_create", boom)
    failed = post(world.api, "/api/v1/members", {"external_id": "retry"}, key="five-hundred")
    assert_error(failed, 500, "internal_error", error_type="api_error")
    assert not IdempotencyRecord.objects.filter(key="five-hundred").exists()
    monkeypatch.undo()
    again = post(world.api, "/api/v1/members", {"external_id": "retry"}, key="five-hundred")
    assert again.status_code == 201 and REPLAYED not in again


# --- a real race, threads with their own connections ---------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_concurrent_twin_gets_409_while_the_first_runs(make_program, make_member):
    """The first request is held inside its work by a row lock this test owns: its twin is
    409 idempotency_key_in_use; when the first finishes, a third is its replay."""
    program = make_program()
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    key = client_for(program, "POS").api_key
    body = {"member_id": "c-1", "points": 50, "reason": "race"}

    def request():
        from tests.api.fixtures import bare_client

        response = bare_client(key).post("/api/v1/adjustments", body, format="json", HTTP_IDEMPOTENCY_KEY="twin")
        return response.status_code, response.json(), response.get(REPLAYED)

    locked, release = threading.Event(), threading.Event()

    def hold_the_balance_row():
        with transaction.atomic():
            Balance.objects.select_for_update().get(member_id=member.pk)
            locked.set()
            assert release.wait(30)
        return "released"

    results: dict = {}
    locker = in_thread(hold_the_balance_row, results, "locker")
    try:
        assert locked.wait(10)
        first = in_thread(request, results, "first")
        deadline = time.monotonic() + 10
        while not IdempotencyRecord.objects.filter(program=program, key="twin").exists():
            assert time.monotonic() < deadline, "the first request never claimed its key"
            time.sleep(0.02)
        time.sleep(0.2)
        assert "first" not in results, results.get("first")  # still waiting for the row lock
        twin = in_thread(request, results, "twin")
        twin.join(30)
        status, twin_body, replayed = results["twin"]
        assert status == 409, twin_body
        assert twin_body["error"]["code"] == "idempotency_key_in_use" and replayed is None
    finally:
        release.set()
        locker.join(30)
    first.join(30)
    status, first_body, replayed = results["first"]
    assert status == 201 and replayed is None, first_body
    status, third_body, replayed = request()
    assert (status, third_body, replayed) == (201, first_body, "true")
    assert Entry.objects.filter(member=member, kind="adjust").count() == 1
    assert Balance.objects.get(member=member).available == 150
    assert run_audit() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_key_sent_by_many_threads_at_once_redeems_once(make_program, make_member):
    from tests.api.fixtures import bare_client, in_threads

    program = make_program()
    member = make_member(program, external_id="c-1")
    earn(member, 1000)
    key = client_for(program, "POS").api_key

    def request(_i):
        response = bare_client(key).post("/api/v1/redemptions", {"member_id": "c-1", "points": 100}, format="json",
                                         HTTP_IDEMPOTENCY_KEY="storm")
        return response.status_code, response.json(), response.get(REPLAYED)

    results = in_threads(12, request)
    fresh = [r for r in results if r[0] == 201 and r[2] is None]
    replays = [r for r in results if r[0] == 201 and r[2] == "true"]
    in_use = [r for r in results if r[0] == 409]
    assert len(fresh) == 1, results
    assert len(fresh) + len(replays) + len(in_use) == 12, results
    assert all(r[1] == fresh[0][1] for r in replays)
    assert all(r[1]["error"]["code"] == "idempotency_key_in_use" for r in in_use)
    assert Redemption.objects.filter(member=member).count() == 1
    assert Balance.objects.get(member=member).available == 900
    assert run_audit() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("body", [{"member_id": "c-1", "points": 40},
                                  {"member_id": "c-1", "reward": "mug"},
                                  {"member_id": "c-1", "points": 40, "capture": False}],
                         ids=["points", "reward", "hold"])
def test_a_redemption_and_its_stored_response_commit_together(make_program, make_member, body):
    """A new redemption's response is stored by the redemption's own commit: the record is done
    with the bytes that were sent, and a replay is those bytes."""
    program = make_program()
    earn(make_member(program, external_id="c-1"), 500)
    Reward.objects.create(program=program, code="mug", name="Mug", cost=100, stock=5, vouchers="generated")
    api = client_for(program, "POS")
    first = post(api, "/api/v1/redemptions", body, key="together")
    assert first.status_code == 201 and REPLAYED not in first, first.json()
    record = IdempotencyRecord.objects.get(program=program, key="together")
    assert (record.state, record.response_status) == ("done", 201)
    assert record.response_body.encode() == first.content
    replay = post(api, "/api/v1/redemptions", body, key="together")
    assert (replay.status_code, replay.content, replay[REPLAYED]) == (201, first.content, "true")
    assert Redemption.objects.filter(program=program).count() == 1
    assert run_audit() == []


@pytest.mark.django_db(transaction=True)
def test_a_refused_redemption_stores_its_error_not_the_answer_it_did_not_get(make_program, make_member):
    program = make_program()
    earn(make_member(program, external_id="c-1"), 50)
    api = client_for(program, "POS")
    refused = post(api, "/api/v1/redemptions", {"member_id": "c-1", "points": 60}, key="short")
    assert_error(refused, 422, "insufficient_points")
    record = IdempotencyRecord.objects.get(program=program, key="short")
    assert (record.state, record.response_status, record.response_body.encode()) == ("done", 422, refused.content)
    assert not Redemption.objects.filter(program=program).exists()
    assert Balance.objects.get(member__external_id="c-1", member__program=program).available == 50


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("body", "status", "code"), [
    ({"member_id": "c-1", "reward": "mug", "quantity": 2}, 422, "insufficient_points"),
    ({"member_id": "nobody", "points": 10}, 404, "member_not_found"),
    ({"member_id": "c-1", "reward": "nothing"}, 404, "reward_not_found"),
], ids=["reward-short", "member-unknown", "reward-unknown"])
def test_a_refusal_found_before_any_write_commits_nothing_but_its_stored_answer(make_program, make_member,
                                                                               body, status, code):
    program = make_program()
    earn(make_member(program, external_id="c-1"), 150)
    Reward.objects.create(program=program, code="mug", name="Mug", cost=100, stock=5, vouchers="generated")
    api = client_for(program, "POS")
    before = snapshot(program)
    refused = post(api, "/api/v1/redemptions", body, key="refused")
    assert_error(refused, status, code)
    record = IdempotencyRecord.objects.get(program=program, key="refused")
    assert (record.state, record.response_status, record.response_body.encode()) == ("done", status, refused.content)
    assert snapshot(program) == {**before, "idempotency": 1}  # only the stored answer
    assert Reward.objects.get(program=program, code="mug").stock == 5
    replay = post(api, "/api/v1/redemptions", body, key="refused")
    assert (replay.status_code, replay.content, replay[REPLAYED]) == (status, refused.content, "true")
    # The member's lock is gone with the commit: the next redemption goes through.
    assert post(api, "/api/v1/redemptions", {"member_id": "c-1", "points": 150}, key="next").status_code == 201
    assert run_audit() == []
