"""gunicorn's settings, as ``make run`` and the benchmarks start it: ``gunicorn -c loyalty/gunicorn_conf.py``.

``gthread`` workers keep client connections alive between requests, so a partner's client pays
for its TCP connection once, not per request. Each thread holds its own persistent database
connection (``DB_CONN_MAX_AGE``). Every figure can be set in the environment.

By default two processes per CPU of four threads each. One thread per process (8 x 1 on two
CPUs) served the balance read faster in three paired runs, but redemptions, whose requests
wait on row locks and so hold up a single-threaded process, at two thirds of the rate and with
twice the tail (``bench/API.md``).
"""

import os


def default_workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or max(2, (os.cpu_count() or 1) * 2))


def default_threads() -> int:
    return int(os.environ.get("WEB_THREADS") or 4)


wsgi_app = "loyalty.wsgi"
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = default_workers()
worker_class = "gthread"
threads = default_threads()
keepalive = int(os.environ.get("WEB_KEEPALIVE_SECONDS") or 30)
graceful_timeout = 10
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None


def post_worker_init(worker) -> None:
    """Import the URLconf, and through it every view, before the first request instead of in it
    (about 0.2-0.3 s of CPU a process, which the first clients of a new or restarted worker would
    otherwise wait for). Then move everything loaded so far out of the garbage collector's sight:
    each collection then walks only what requests create (fewer, shorter pauses)."""
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (the import is the point)
    gc.freeze()
