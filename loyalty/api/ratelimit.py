"""Rate limits shared by every process through Redis (fixed one-minute windows)."""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
_local = threading.local()


def _redis() -> redis.Redis:
    """This thread's client. One shared by a process's threads broke under load: after a read timed
    out, another thread's fresh connection failed with "Bad file descriptor" or "I/O operation on a
    closed file" in redis-py, errors that are not ``RedisError`` (bench.api_redemptions, 50 clients
    on two saturated CPUs). A client per thread shares nothing."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return client


def _forget_client() -> None:
    client, _local.client = getattr(_local, "client", None), None
    if client is not None:
        try:
            client.close()
        except Exception:  # it is being thrown away
            pass


# A process takes the numbers of a busy bucket from Redis in blocks of limit / RESERVE_PARTS
# (at least 1): with the default 60,000 a minute, one Redis round trip per 60 requests of a key,
# not one per request. The numbers are unique across processes and a request whose number is
# above the limit is refused, so a bucket never lets more than its limit through. A process
# that does not use up its block before the window ends leaves those numbers unused, so a busy
# bucket may get up to (processes x block - 1) requests fewer than its limit: about 0.1% of it per
# process. Limits under RESERVE_PARTS take one number per request, exactly as they are counted.
RESERVE_PARTS = 1000
_blocks: dict[str, tuple[int, int, int]] = {}  # bucket -> (window start, next number, last number)
_blocks_lock = threading.Lock()
_MAX_BLOCKS = 10_000


def rate_limit_hit(bucket: str, limit: int, window: int = WINDOW_SECONDS) -> int | None:
    """Count one hit; return the seconds to wait when ``bucket`` is over ``limit``, else None.

    If Redis cannot be reached, or its client fails in any way, the request is let through (and
    logged), and this thread's client is replaced: a limiter outage must not take the API down
    with it.
    """
    now = int(time.time())
    start = now - now % window
    block = max(1, limit // RESERVE_PARTS)
    number = _from_block(bucket, start) if block > 1 else None
    if number is None:
        key = f"loyalty:rl:{bucket}:{start}"
        try:
            pipe = _redis().pipeline()
            pipe.incrby(key, block)
            pipe.expire(key, window + 1)
            last = pipe.execute()[0]
        except Exception:  # redis-py also fails with OSError and ValueError, not only RedisError
            logger.warning("rate limiter unavailable; letting %s through", bucket, exc_info=True)
            _forget_client()
            return None
        number = last - block + 1
        if block > 1:
            with _blocks_lock:
                if len(_blocks) >= _MAX_BLOCKS:
                    _blocks.clear()
                _blocks[bucket] = (start, number + 1, last)
    return (start + window - now) if number > limit else None


def _from_block(bucket: str, start: int) -> int | None:
    """The next number of this process's block for ``bucket`` in this window, if it has one left."""
    with _blocks_lock:
        held = _blocks.get(bucket)
        if held is None or held[0] != start or held[1] > held[2]:
            return None
        _blocks[bucket] = (start, held[1] + 1, held[2])
        return held[1]


# Set on a request that ``loyalty.api.fastpath`` counted against its key's limit before handing it to
# DRF: the seconds to wait, or None when it was within the limit.
RATE_LIMIT_COUNTED = "loyalty_rate_limit_counted"
_UNCOUNTED = object()


def key_rate_limit_hit(key) -> int | None:
    """Count one request of a partner key; the seconds to wait when it is over
    API_RATE_LIMIT_PER_MINUTE (0 turns the limit off), else None."""
    limit = settings.API_RATE_LIMIT_PER_MINUTE
    return rate_limit_hit(f"key:{key.pk}", limit) if limit else None


def member_redemption_limit_hit(program, member_external_id: str) -> int | None:
    """Count one redemption of a program's member, on any channel (the API, the member pages);
    the seconds to wait when over the program's ``redemption_limit_per_minute`` (empty: off), else None."""
    limit = program.redemption_limit_per_minute
    return rate_limit_hit(f"member-redeem:{program.pk}:{member_external_id}", limit) if limit else None


class PartnerKeyThrottle(BaseThrottle):
    """Per API key: API_RATE_LIMIT_PER_MINUTE requests a minute (0 turns it off)."""

    def allow_request(self, request, view) -> bool:
        if request.auth is None:
            return True
        counted = getattr(request, RATE_LIMIT_COUNTED, _UNCOUNTED)  # by the fast path: not counted twice
        self._wait = key_rate_limit_hit(request.auth) if counted is _UNCOUNTED else counted
        return self._wait is None

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
