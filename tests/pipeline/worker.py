"""A real Celery worker in a subprocess, for tests that need the whole pipeline.

The worker runs ``celery -A loyalty worker --pool prefork`` in its own session (so its
process group is its pid and a signal to the group reaches every pool child), against the
pytest test database and the same Redis, consuming only the queue it is given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parents[2]
CELERY = BASE_DIR / ".venv" / "bin" / "celery"
READY = re.compile(r"@\S+ ready\.")


def wait_until(predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.1,
               message: Callable[[], str] | str = "condition not met"):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        time.sleep(interval)


def worker_database_url() -> str:
    """URL of the database the test process is connected to (the test database), on the same server.

    dj_database_url puts ``?host=<socket dir>&port=`` (the embedded server's form) into OPTIONS,
    not HOST/PORT, so both places are read; an empty host would silently mean libpq's default
    socket, which may be another server.
    """
    from django.db import connection

    s = connection.settings_dict
    options = dict(s.get("OPTIONS") or {})
    host = s.get("HOST") or options.pop("host", "") or ""
    port = s.get("PORT") or options.pop("port", "") or ""
    options.pop("host", None), options.pop("port", None)
    auth = quote(s.get("USER") or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    name = quote(s["NAME"], safe="")
    query = {k: v for k, v in options.items() if isinstance(v, (str, int))}
    if not host or str(host).startswith("/"):  # a Unix socket directory
        query = {**({"host": host} if host else {}), **({"port": port} if port else {}), **query}
        url = f"postgres://{auth}@/{name}"
    else:
        url = f"postgres://{auth}@{host}{f':{port}' if port else ''}/{name}"
    if query:
        url += "?" + "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items())
    return url


def same_server_and_database(url: str) -> tuple[tuple, tuple]:
    """(what the test process is connected to, what ``url`` reaches), as Django sees the URL."""
    import dj_database_url
    from django.db import connection
    from django.db.utils import ConnectionHandler

    sql = "SELECT current_database(), pg_postmaster_start_time()"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        ours = cursor.fetchone()
    handler = ConnectionHandler({"default": dj_database_url.parse(url)})
    other = handler["default"]
    try:
        with other.cursor() as cursor:
            cursor.execute(sql)
            theirs = cursor.fetchone()
    finally:
        other.close()
    return ours, theirs


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class CeleryWorker:
    def __init__(self, *, queue: str, name: str, log_path: Path, env: dict[str, str], concurrency: int = 2):
        self.queue, self.name, self.log_path, self.env = queue, name, log_path, env
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start_new_session: the worker leads its own group

    def start(self, timeout: float = 90) -> CeleryWorker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(CELERY), "-A", "loyalty", "worker", "--pool", "prefork", "--concurrency", str(self.concurrency),
                 "-Q", self.queue, "-n", f"{self.name}@%h", "--loglevel", "INFO",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(lambda: self.proc.poll() is not None or READY.search(self.log()), timeout=timeout,
                   message=lambda: f"worker {self.name} not ready\n{self.log_tail()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
        banner = self.log()
        assert f".> {self.queue} " in banner, f"worker does not consume {self.queue}\n{self.log_tail()}"
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def tasks_received(self) -> int:
        return len(re.findall(r"Task rules\.tasks\.process_events\[[^\]]+\] received", self.log()))

    def task_results(self) -> Counter:
        """How many finished tasks returned each value (process_events returns how many it processed)."""
        return Counter(int(n) for n in re.findall(
            r"Task rules\.tasks\.process_events\[[^\]]+\] succeeded in [0-9.e-]+s: (\d+)", self.log()))

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Signal the whole process group (main process and pool children); wait until all are gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        wait_until(lambda: not _group_members(self.pgid), timeout=timeout, interval=0.05,
                   message=lambda: f"processes of group {self.pgid} still alive: {_group_members(self.pgid)}")

    def stop(self) -> None:
        """Teardown: a warm shutdown if it is quick, else SIGKILL for everything left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if _group_members(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        wait_until(lambda: not _group_members(self.pgid), timeout=30, interval=0.05,
                   message=lambda: f"processes of group {self.pgid} still alive: {_group_members(self.pgid)}")


def redis_cleanup(redis_url: str, queue: str) -> None:
    """Remove what a test queue leaves in Redis: its lists, its binding, its unacked messages
    (a SIGKILLed worker leaves its reserved messages in the global ``unacked`` hash)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(queue, *(f"{queue}\x06\x16{pri}" for pri in (3, 6, 9)),
                      f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        for tag, raw in client.hgetall("unacked").items():
            try:
                _message, exchange, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if queue in (exchange, routing_key):
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()
