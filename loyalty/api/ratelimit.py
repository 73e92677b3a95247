"""Rate limits shared by every process through Redis (fixed one-minute windows)."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _client


def rate_limit_hit(bucket: str, limit: int, window: int = WINDOW_SECONDS) -> int | None:
    """Count one hit; return the seconds to wait when ``bucket`` is over ``limit``, else None.

    If Redis cannot be reached the request is let through (and logged): a limiter outage
    must not take the API down with it.
    """
    now = int(time.time())
    start = now - now % window
    key = f"loyalty:rl:{bucket}:{start}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, window + 1)
        count = pipe.execute()[0]
    except redis.RedisError:
        logger.warning("rate limiter unavailable; letting %s through", bucket, exc_info=True)
        return None
    return (start + window - now) if count > limit else None


class PartnerKeyThrottle(BaseThrottle):
    """Per API key: API_RATE_LIMIT_PER_MINUTE requests a minute (0 turns it off)."""

    def allow_request(self, request, view) -> bool:
        limit = settings.API_RATE_LIMIT_PER_MINUTE
        if not limit or request.auth is None:
            return True
        self._wait = rate_limit_hit(f"key:{request.auth.pk}", limit)
        return self._wait is None

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
