"""Rate limits (real Redis, fixed one-minute windows): per API key, and per member for
redemptions when the program sets one (API.md: "over the limit, 429 with Retry-After; off by
default")."""

from __future__ import annotations

import time

import pytest

from accounts.models import PartnerAPIKey
from campaigns.models import Redemption
from ledger.models import Balance
from loyalty.api.ratelimit import WINDOW_SECONDS, _redis
from tests.api.fixtures import assert_error, client_for, earn


@pytest.fixture(autouse=True)
def whole_window():
    """Fixed windows: start with enough of the current minute left for the test to run in it."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < 8:
        time.sleep(left + 0.05)


def forget_bucket(bucket: str) -> None:
    """Buckets are named by database ids, which other test databases on this Redis reuse."""
    client = _redis()
    for key in client.scan_iter(match=f"loyalty:rl:{bucket}:*"):
        client.delete(key)


def assert_throttled(response) -> int:
    assert_error(response, 429, error_type="rate_limit_error")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS + 1
    return retry_after


def test_per_key_limit_is_429_with_retry_after(program, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    client = client_for(program, "Small")
    for _ in range(3):
        assert client.get("/api/v1/rewards").status_code == 200
    assert_throttled(client.get("/api/v1/rewards"))
    assert_throttled(client.get("/api/v1/members"))  # every endpoint shares the key's bucket


def test_per_key_limit_counts_each_key_alone(program, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    first, second = client_for(program, "One"), client_for(program, "Two")
    for _ in range(2):
        assert first.get("/api/v1/rewards").status_code == 200
    assert_throttled(first.get("/api/v1/rewards"))
    assert second.get("/api/v1/rewards").status_code == 200


def test_a_throttled_post_changes_nothing_and_its_key_stays_usable(program, make_member, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    member = make_member(program, external_id="c-1")
    earn(member, 100)
    client = client_for(program, "Small")
    assert client.get("/api/v1/rewards").status_code == 200
    body = {"member_id": "c-1", "points": 10, "reason": "x"}
    assert_throttled(client.post("/api/v1/adjustments", body, format="json", HTTP_IDEMPOTENCY_KEY="later"))
    assert Balance.objects.get(member=member).available == 100
    settings.API_RATE_LIMIT_PER_MINUTE = 0  # off
    response = client.post("/api/v1/adjustments", body, format="json", HTTP_IDEMPOTENCY_KEY="later")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response


def test_per_member_redemption_limit(program, make_member, api):
    program.redemption_limit_per_minute = 2
    program.save()
    member = make_member(program, external_id="c-1")
    other = make_member(program, external_id="c-2")
    forget_bucket(f"member-redeem:{program.pk}:c-1")
    forget_bucket(f"member-redeem:{program.pk}:c-2")
    earn(member, 1000)
    earn(other, 1000)
    second_partner = client_for(program, "Web shop")
    assert api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json").status_code == 201
    assert second_partner.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10},
                               format="json").status_code == 201
    third = api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json")
    assert_throttled(third)
    assert Balance.objects.get(member=member).available == 980
    assert Redemption.objects.filter(member=member).count() == 2
    # per member: another member of the program is not held back
    assert api.post("/api/v1/redemptions", {"member_id": "c-2", "points": 10}, format="json").status_code == 201
    # other endpoints for the same member are not redemptions
    assert api.get("/api/v1/members/c-1").status_code == 200
    assert api.post("/api/v1/adjustments", {"member_id": "c-1", "points": 5, "reason": "x"},
                    format="json").status_code == 201


def test_per_member_limit_is_off_by_default(program, make_member, api):
    assert program.redemption_limit_per_minute is None
    member = make_member(program, external_id="c-1")
    forget_bucket(f"member-redeem:{program.pk}:c-1")
    earn(member, 1000)
    for _ in range(12):
        assert api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json").status_code == 201
    assert Balance.objects.get(member=member).available == 880


def test_a_redemption_refused_by_the_member_limit_can_be_retried_with_its_key(program, make_member, api):
    """A 429 says "try again later": retrying with the same Idempotency-Key after Retry-After must
    redeem, not replay the 429 for the next 24 hours."""
    program.redemption_limit_per_minute = 1
    program.save()
    member = make_member(program, external_id="c-1")
    forget_bucket(f"member-redeem:{program.pk}:c-1")
    earn(member, 1000)
    assert api.post("/api/v1/redemptions", {"member_id": "c-1", "points": 10}, format="json").status_code == 201
    body = {"member_id": "c-1", "points": 20}
    assert_throttled(api.post("/api/v1/redemptions", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me"))
    forget_bucket(f"member-redeem:{program.pk}:c-1")  # the next window
    again = api.post("/api/v1/redemptions", body, format="json", HTTP_IDEMPOTENCY_KEY="retry-me")
    assert again.status_code == 201, (again.status_code, again.json(), again.get("Idempotent-Replayed"))
    assert Balance.objects.get(member=member).available == 970


def _hits(bucket: str, limit: int, window: int, n: int, results) -> None:
    from loyalty.api import ratelimit

    allowed = sum(ratelimit.rate_limit_hit(bucket, limit, window) is None for _ in range(n))
    results.put(allowed)


def test_busy_buckets_take_numbers_in_blocks_across_processes_and_never_go_over():
    """Three processes hit one bucket 2,500 times each against a limit of 5,000 a window: never
    more than 5,000 get through, at most a block per process fewer, and Redis is asked once per
    block of 5 numbers, not once per request."""
    import multiprocessing
    import uuid

    from loyalty.api import ratelimit

    bucket, limit, window = f"test-blocks-{uuid.uuid4().hex}", 5000, 10**9  # one window for decades
    block = limit // ratelimit.RESERVE_PARTS
    assert block == 5
    counted_before = _counting_calls()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_hits, args=(bucket, limit, window, 2500, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    allowed = sum(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    start = int(time.time()) - int(time.time()) % window
    taken = int(_redis().get(f"loyalty:rl:{bucket}:{start}"))
    counting_calls = _counting_calls() - counted_before
    forget_bucket(bucket)
    assert limit - 3 * (block - 1) <= allowed <= limit
    assert taken % block == 0 and 7500 <= taken <= 7500 + 3 * (block - 1)
    assert 1500 <= counting_calls <= 1600  # about 7,500 / 5 INCRBYs, not 7,500


def _counting_calls() -> int:
    """INCR and INCRBY commands Redis has run since it started."""
    stats = _redis().info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("incr", "incrby"))


def test_small_limits_count_every_request_in_redis():
    from loyalty.api import ratelimit

    bucket = "test-small-limit"
    forget_bucket(bucket)
    outcomes = [ratelimit.rate_limit_hit(bucket, 999) is None for _ in range(1001)]
    start = int(time.time()) - int(time.time()) % WINDOW_SECONDS
    taken = int(_redis().get(f"loyalty:rl:{bucket}:{start}"))
    forget_bucket(bucket)
    assert outcomes == [True] * 999 + [False] * 2
    assert taken == 1001


def test_each_thread_has_a_client_of_its_own():
    import threading

    from loyalty.api import ratelimit

    mine, theirs = ratelimit._redis(), []
    thread = threading.Thread(target=lambda: theirs.append(ratelimit._redis()))
    thread.start()
    thread.join()
    assert ratelimit._redis() is mine and theirs[0] is not mine


def test_a_limiter_that_fails_lets_the_request_through_and_its_client_is_replaced(settings, caplog):
    """A server on the Redis URL that does not speak Redis: the hit is let through, logged, and the
    thread's next hit starts from a new client."""
    import socket
    import threading

    from loyalty.api import ratelimit

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"this is not Redis\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        ratelimit._forget_client()
        broken = ratelimit._redis()
        assert ratelimit.rate_limit_hit("test-broken-limiter", 1) is None
        assert "rate limiter unavailable; letting test-broken-limiter through" in caplog.text
        assert ratelimit._redis() is not broken
    finally:
        stop.set()
        thread.join()
        server.close()
        ratelimit._forget_client()  # the next test's client talks to the real Redis again


def test_a_fast_balance_read_is_counted_once_and_drf_answers_its_429(program, make_member, settings, through_drf):
    """The balance read skips DRF when it can (``loyalty.api.fastpath``) but not the key's limit; a
    request it finds over the limit is answered by DRF's throttle without being counted again."""
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    make_member(program, external_id="fp-1")
    client = client_for(program, "Counted")
    key_pk = PartnerAPIKey.objects.get(prefix=client.api_key.partition(".")[0]).pk
    forget_bucket(f"key:{key_pk}")
    path = "/api/v1/members/fp-1/balance"
    assert [client.get(path).status_code for _ in range(3)] == [200, 200, 200]
    assert through_drf == []
    assert_throttled(client.get(path))
    assert through_drf == [path]
    counted = [int(_redis().get(name)) for name in _redis().scan_iter(match=f"loyalty:rl:key:{key_pk}:*")]
    assert counted == [4]  # the refused request once, not once by the fast path and again by DRF


def test_a_balance_read_of_an_unknown_member_is_counted_once(program, settings, through_drf):
    """The fast path counts the request, finds no member and hands it to DRF for the 404: DRF's
    throttle takes that count rather than counting the request again."""
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    client = client_for(program, "Lost")
    key_pk = PartnerAPIKey.objects.get(prefix=client.api_key.partition(".")[0]).pk
    forget_bucket(f"key:{key_pk}")
    for _ in range(2):
        assert client.get("/api/v1/members/nobody/balance").status_code == 404
    assert through_drf == ["/api/v1/members/nobody/balance"] * 2
    counted = [int(_redis().get(name)) for name in _redis().scan_iter(match=f"loyalty:rl:key:{key_pk}:*")]
    assert counted == [2]
