"""gunicorn's settings, as ``make run`` and the benchmarks start it: ``gunicorn -c loyalty/gunicorn_conf.py``.

``gthread`` workers keep client connections alive between requests, so a partner's client pays
for its TCP connection once, not per request. Each thread holds its own persistent database
connection (``DB_CONN_MAX_AGE``). Every figure can be set in the environment.

By default one process per CPU (at least two) of four threads each: a process cannot use more
than one CPU (Python's global lock), and its threads overlap their database round trips. On two
CPUs, 2 x 4 gave the closed-loop redemption benchmark a p99 of 80-105 ms in five runs against
99-168 ms for the earlier default of two processes per CPU (4 x 4), at the same throughput, with
the balance read, real-time events and batch ingest unchanged (``bench/RESULTS.md``, eleventh
measurement): the kernel spreads 50 kept-alive connections more evenly over two sockets than
over four, and fewer threads take turns at each process's lock. One thread per process served
redemptions, whose requests wait on row locks and so hold up a single-threaded process, at two
thirds of the rate and with twice the tail (``bench/API.md``). With a database further away than
this machine, a request waits longer on each round trip: raise ``WEB_THREADS``.

On Linux each worker listens on a socket of its own (``SO_REUSEPORT``, ``WEB_REUSE_PORT=0`` turns
it off), and the kernel spreads new connections over the workers. On one shared socket the worker
that wakes first takes them: 43 of 50 kept-alive connections of a burst went to one of four
workers, whose clients then queued while the others idled. The master then binds nothing, so it
first checks that no other server listens on the address (another one with ``SO_REUSEPORT`` would
otherwise share it, silently). A Unix socket, or sockets handed over by systemd, stay shared.
On a reload (``kill -HUP``) the retiring workers close their sockets, and the kernel resets the
connections it had queued on them (13 to 27 in two reloads under 3,000-4,000 new connections a
second; none on a shared socket), unless it moves them to the other workers' sockets: the sysctl
``net.ipv4.tcp_migrate_req=1`` (Linux 5.14 and later) does that, and then no connection was lost
in the same runs (``bench/web_reload.py``). The master says so at start when it is off. Restarting
the server costs the same either way; where reloads must lose nothing and the sysctl cannot be
set, set ``WEB_REUSE_PORT=0``.
"""

import os
import socket
import sys


def default_workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or max(2, os.cpu_count() or 1))


def default_threads() -> int:
    return int(os.environ.get("WEB_THREADS") or 4)


wsgi_app = "loyalty.wsgi"
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = default_workers()
worker_class = "gthread"
threads = default_threads()
keepalive = int(os.environ.get("WEB_KEEPALIVE_SECONDS") or 30)
reuse_port = sys.platform.startswith("linux") and os.environ.get("WEB_REUSE_PORT", "1") != "0"
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


MIGRATE_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req"


def reload_warning(sysctl: str = MIGRATE_SYSCTL) -> str | None:
    """What a reload would cost with a socket per worker, if the kernel does not move the
    connections queued on a retiring worker's socket to the others; None if it does."""
    try:
        with open(sysctl) as setting:
            if setting.read().strip() != "0":
                return None
        fix = "set the sysctl net.ipv4.tcp_migrate_req=1, or WEB_REUSE_PORT=0"
    except OSError:
        fix = "this kernel cannot move them (net.ipv4.tcp_migrate_req, Linux 5.14): set WEB_REUSE_PORT=0"
    return ("A reload (SIGHUP) resets the connections queued at each retiring worker: "
            f"where reloads must lose none, {fix}")


def on_starting(server) -> None:
    """``reuse_port`` applies to TCP addresses the workers bind themselves: it is turned off for a
    Unix socket (each worker would remove the previous one's file and bind its own) and for sockets
    handed over by systemd or a re-exec. Then refuse to start on an address another server listens
    on, and say where the workers listen (gunicorn's own "Listening at" line is empty)."""
    if not server.cfg.reuse_port:
        return
    handed_over = os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD")
    if handed_over or not all(isinstance(address, tuple) for address in server.cfg.address):
        server.cfg.set("reuse_port", False)
        return
    server.log.info("Workers listen at %s, each on a socket of its own (SO_REUSEPORT; WEB_REUSE_PORT=0 turns it off)",
                    ", ".join(server.cfg.bind))
    warning = reload_warning()
    if warning:
        server.log.warning(warning)
    for host, port, *_ in server.cfg.address:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                message = f"cannot listen on {host}:{port}: {exc.strerror} (another server is running there?)"
                raise SystemExit(message) from None
