"""Shared helper of the ingest benchmarks: run the platform as ``make run`` does, in a throwaway database.

``BenchServer`` creates a dedicated database (``bench_ingest``, ``bench_realtime``...) on the
PostgreSQL server Django is configured for (``DATABASE_URL``, else the embedded server), migrates
it and creates the ledger partitions (``manage.py migrate`` / ``ledger_partitions``, as ``make run``),
then starts ``gunicorn -c loyalty/gunicorn_conf.py`` with ``make run``'s worker count and arguments and one Celery
worker with its concurrency, on a free local port, with ``DEBUG=0``, a generated ``SECRET_KEY`` and
``LOYALTY_PLAIN_HTTP=1``. Every child runs in its own process group, which ``stop()`` kills.

Differences from ``make run``, on purpose:

* no ``seed_demo`` (the benchmarks seed their own program) and no Celery beat unless asked
  (``beat=True``): nothing it schedules is needed within a benchmark's minutes;
* ``collectstatic`` only when the manifest is missing (the API does not serve static files);
* the Celery broker is a Redis database of its own (``redis_db``) on the same Redis, so no other
  worker on the machine can take the benchmark's tasks (nor the benchmark worker theirs);
* the children's output goes to log files (printed when something fails).

``seed()`` then writes the benchmark's program: members and balances by bulk SQL, the earning
rules through ``rules.services.rule_save`` and a partner key through ``accounts.services.partner_create``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from loyalty import gunicorn_conf  # noqa: E402 - after the path is set, for ``python bench/X.py``

# --- where the servers are ------------------------------------------------------------------


def server_urls() -> tuple[str, str]:
    """(PostgreSQL URL, Redis URL) Django would use: the environment's, else the embedded servers'."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url or not redis_url:
        from loyalty import embedded

        database_url = database_url or embedded.postgres_url()
        redis_url = redis_url or embedded.redis_url()
    return database_url, redis_url


def with_database(url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def redis_with_db(redis_url: str, db: int) -> tuple[str, str]:
    """(REDIS_URL, CELERY_BROKER_URL) for database ``db`` of the same Redis."""
    parts = urllib.parse.urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}?db={db}", f"redis+socket://{parts.path}?virtual_host={db}"
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))
    return url, url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the server -----------------------------------------------------------------------------


class BenchServer:
    """The platform on a dedicated database. Use as a context manager, or call ``stop()``."""

    def __init__(self, dbname: str, *, redis_db: int, keep: bool = False, beat: bool = False,
                 web_workers: int | None = None, celery_concurrency: int | None = None):
        self.dbname = dbname
        self.keep = keep
        self.beat = beat
        # As make run: loyalty/gunicorn_conf.py's workers and threads; CELERY_CONCURRENCY, else 2.
        self.web_workers = web_workers or gunicorn_conf.default_workers()
        self.web_threads = gunicorn_conf.default_threads()
        self.celery_concurrency = celery_concurrency or int(os.environ.get("CELERY_CONCURRENCY") or 2)
        server_url, redis_url = server_urls()
        self.admin_url = server_url
        self.db_url = with_database(server_url, dbname)
        self.redis_url, self.broker_url = redis_with_db(redis_url, redis_db)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{dbname}-"))
        self.children: list[tuple[str, subprocess.Popen]] = []
        self._created = False

    # environment -----------------------------------------------------------------------
    def environ(self) -> dict[str, str]:
        """The children's environment, and the benchmark's own Django (``django_setup``)."""
        env = dict(os.environ)
        env.update({
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
            "LOYALTY_PLAIN_HTTP": "1",
            "DJANGO_SETTINGS_MODULE": "loyalty.settings",
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
        })
        return env

    # database --------------------------------------------------------------------------
    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)

    def create_database(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self._created = True

    def drop_database(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def flush_broker(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def _manage(self, *args: str) -> None:
        log = self.log_dir / "manage.log"
        with open(log, "a") as out:
            result = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], cwd=BASE_DIR,
                                    env=self._env, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed; see {log}:\n{log.read_text()[-3000:]}")

    def prepare(self) -> None:
        """Create and migrate the database; point this process's Django at it."""
        self._env = self.environ()
        os.environ.update({k: self._env[k] for k in (
            "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "LOYALTY_PLAIN_HTTP", "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")})
        self.create_database()
        self.flush_broker()
        self._manage("migrate", "--no-input", "-v", "0")
        static = BASE_DIR / ".local" / "static" / "staticfiles.json"
        if not static.exists():
            self._manage("collectstatic", "--no-input", "-v", "0")
        self._manage("ledger_partitions")
        import django

        django.setup()

    # processes -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, cwd=BASE_DIR, env=self._env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.children.append((name, proc))
        return proc

    def start(self, timeout: float = 60) -> None:
        """gunicorn + one Celery worker (+ beat if asked), as ``make run`` starts them; wait until ready."""
        self._spawn("gunicorn", [
            str(BIN / "gunicorn"), "-c", str(BASE_DIR / "loyalty" / "gunicorn_conf.py"),
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.web_workers),
        ])
        self._spawn("celery-worker", [
            str(BIN / "celery"), "-A", "loyalty", "worker", "--loglevel", "INFO",
            "--concurrency", str(self.celery_concurrency), "-n", f"{self.dbname}@%h",
        ])
        if self.beat:
            self._spawn("celery-beat", [
                str(BIN / "celery"), "-A", "loyalty", "beat", "--loglevel", "INFO",
                "--schedule", str(self.log_dir / "celerybeat-schedule"),
            ])
        deadline = time.monotonic() + timeout
        web_ready = worker_ready = False
        while not (web_ready and worker_ready):
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {timeout:.0f} s; logs in {self.log_dir}")
            web_ready = web_ready or self._healthz()
            worker_ready = worker_ready or " ready." in (self.log_dir / "celery-worker.log").read_text()
            time.sleep(0.2)
        # Each gunicorn worker answers its first request slower (imports, connection): warm them all.
        for _ in range(self.web_workers * 4):
            self._healthz()

    def _healthz(self) -> bool:
        import http.client

        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text()[-chars:] if path.exists() else ""

    def pids(self) -> dict[str, list[int]]:
        """The process ids of each child's process group (for a profiler)."""
        import psutil

        result = {}
        for name, proc in self.children:
            try:
                parent = psutil.Process(proc.pid)
                result[name] = [proc.pid, *[c.pid for c in parent.children(recursive=True)]]
            except psutil.NoSuchProcess:
                result[name] = []
        return result

    # profiling (optional) ---------------------------------------------------------------
    def profile_start(self, py_spy: str, rate: int = 100) -> None:
        """Sample gunicorn and the Celery worker, children included, with py-spy (from a tool venv:
        ``python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy``; needs ptrace rights)."""
        self._spies = []
        for name, proc in self.children:
            out = self.log_dir / f"{name}.pyspy.txt"
            self._spies.append((out, subprocess.Popen(
                [py_spy, "record", "--pid", str(proc.pid), "--subprocesses", "--nonblocking", "--format", "raw",
                 "--rate", str(rate), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

    def profile_stop(self) -> list[Path]:
        paths = []
        for out, spy in getattr(self, "_spies", []):
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
            if out.exists():
                paths.append(out)
        self._spies = []
        return paths

    def stop_services(self) -> None:
        for _out, spy in getattr(self, "_spies", []):
            if spy.poll() is None:
                spy.kill()
        for _name, proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for _name, proc in self.children:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left of the group (a stuck worker child)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.children = []

    def stop(self) -> None:
        self.stop_services()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django was never set up
            pass
        if self._created and not self.keep:
            self.drop_database()
        try:
            self.flush_broker()
        except Exception:
            pass

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- CPU used by each part, whatever else runs on the machine --------------------------------


class CpuMeter:
    """CPU seconds (user + system) used since ``start()`` by the web server (gunicorn and its
    workers), the Celery worker (and its pool), the PostgreSQL backends serving the benchmark's
    database (their process title names it) and this process (the client). Time is a cost that
    does not depend on what else the machine is running, unlike wall time. Call ``sample()``
    now and then, so that a backend which exits between two samples is not lost entirely.
    PostgreSQL's shared processes (WAL writer, checkpointer...) are not counted."""

    def __init__(self, server: BenchServer, *, exclude_pids: tuple[int, ...] = ()):
        self.server = server
        self.exclude = set(exclude_pids)
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def _processes(self):
        import psutil

        for name, proc in self.server.children:
            role = "web" if name == "gunicorn" else "worker" if name == "celery-worker" else name
            try:
                parent = psutil.Process(proc.pid)
                yield role, parent
                for child in parent.children(recursive=True):
                    yield role, child
            except psutil.NoSuchProcess:
                continue
        marker = f" {self.server.dbname} "
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                if proc.info["name"] == "postgres" and marker in " ".join(proc.info["cmdline"] or ()) + " ":
                    if proc.pid not in self.exclude:
                        yield "db", proc
            except psutil.Error:
                continue
        yield "client", psutil.Process()

    def _read(self) -> dict[int, tuple[str, float]]:
        import psutil

        seen = {}
        for role, proc in self._processes():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            seen[proc.pid] = (role, times.user + times.system)
        return seen

    def start(self) -> None:
        self.first = {pid: used for pid, (_role, used) in self._read().items()}
        self.last = {}

    def sample(self) -> None:
        self.last.update(self._read())  # a process seen for the first time started since: from 0

    def used(self) -> dict[str, float]:
        self.sample()
        totals: dict[str, float] = {"web": 0.0, "worker": 0.0, "db": 0.0, "client": 0.0}
        for pid, (role, value) in self.last.items():
            totals[role] = totals.get(role, 0.0) + max(value - self.first.get(pid, 0.0), 0.0)
        return totals


# --- the benchmark's program ------------------------------------------------------------------

CATALOGUE = (  # sku, category, unit price
    ("LATTE", "coffee", "4.50"), ("MOCHA", "coffee", "4.90"), ("ESPRESSO", "coffee", "2.80"),
    ("CAPPUCCINO", "coffee", "4.20"), ("CROISSANT", "bakery", "3.20"), ("MUFFIN", "bakery", "3.60"),
    ("BAGEL", "bakery", "2.90"), ("BEANS-1KG", "retail", "24.00"), ("MUG", "retail", "12.00"),
    ("GRINDER", "retail", "89.00"),
)
CHANNELS = ("pos", "pos", "pos", "app", "app", "web")


def member_external_id(n: int) -> str:
    return f"m{n:07d}"


def purchase_event(event_id: str, rng: random.Random, members: int, now: dt.datetime) -> dict:
    """A realistic purchase: 1-4 lines of 1-3 units, the amount their total, a channel."""
    lines = rng.sample(CATALOGUE, rng.randint(1, 4))
    items, total = [], 0
    for sku, category, price in lines:
        quantity = rng.randint(1, 3)
        cents = int(price.replace(".", ""))
        total += quantity * cents
        items.append({"sku": sku, "category": category, "quantity": quantity, "unit_price": price})
    return {
        "event_id": event_id,
        "type": "purchase",
        "member_id": member_external_id(rng.randint(1, members)),
        "occurred_at": now.isoformat(),
        "properties": {
            "order_id": f"o-{event_id}",
            "amount": f"{total // 100}.{total % 100:02d}",
            "currency": "USD",
            "channel": rng.choice(CHANNELS),
            "items": items,
        },
    }


def earning_rules(program) -> list:
    """Ten active rules of every kind, each with a CEL condition; one capped, one exclusive."""
    from decimal import Decimal

    from rules.models import Rule

    def rule(name, kind, **fields):
        fields.setdefault("event_type", "purchase")
        return Rule(program=program, name=name, kind=kind, **fields)

    return [
        rule("Base: 1 point per USD", "spend", condition="event.properties.currency == 'USD'",
             points_per_unit=Decimal(1), priority=100),
        rule("Gold: +0.5 point per USD", "spend", condition="member.tier == 'gold'",
             points_per_unit=Decimal("0.5"), priority=90),
        rule("Coffee: 5 points per latte or mocha", "product", skus=["LATTE", "MOCHA"], points_per_item=5,
             condition="event.properties.channel in ['pos', 'app']", priority=80),
        rule("Bakery: double points", "product", categories=["bakery"], item_multiplier=Decimal(2),
             condition="size(event.properties.items) >= 2", priority=70),
        rule("Big basket: 50 points from 40 USD", "event", points=50,
             condition="event.properties.amount >= 40.0", priority=60),
        rule("App order: 10 points", "event", points=10, condition="event.properties.channel == 'app'",
             priority=50),
        rule("First purchase of the day: 5 points", "event", points=5, condition="member.status == 'active'",
             member_cap_period="day", member_cap_times=1, priority=40),
        rule("Lisbon shops: x2", "multiplier", multiplier=Decimal(2),
             condition="member.attributes.city == 'Lisbon' && event.properties.channel == 'pos'", priority=30),
        rule("Silver: x1.5", "multiplier", multiplier=Decimal("1.5"), condition="member.tier == 'silver'",
             priority=20),
        rule("Black Friday: flat 500 (exclusive)", "event", points=500, stacking="exclusive",
             condition="event.properties.order_id.startsWith('BF-')", priority=200),
    ]


@dataclass
class Seeded:
    program_id: int
    slug: str
    members: int
    rules: int
    key: str


def seed(*, members: int, slug: str = "bench") -> Seeded:
    """The benchmark's program: ``members`` members with balances (bulk SQL), 10 rules, a partner key."""
    from django.db import connection

    from accounts.models import Program
    from accounts.services import partner_create
    from rules.services import rule_save

    program = Program.objects.create(name=f"Bench {slug}", slug=slug, expiry_days=365, pending_days=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_member (program_id, external_id, email, attributes, status, tier, enrolled_at) "
            "SELECT %s, 'm' || lpad(g::text, 7, '0'), 'm' || g || '@example.com', "
            "jsonb_build_object('city', (ARRAY['Lisbon', 'Porto', 'Faro', 'Braga'])[1 + g %% 4]), 'active', "
            "CASE WHEN g %% 10 < 2 THEN 'gold' WHEN g %% 10 < 5 THEN 'silver' ELSE '' END, "
            "now() - (g %% 700) * interval '1 day' FROM generate_series(1, %s) AS g",
            [program.pk, members],
        )
        cursor.execute(
            "INSERT INTO ledger_balance (member_id, program_id, available, pending, held, debt, "
            "lifetime_earned, lifetime_redeemed, lifetime_expired) "
            "SELECT id, program_id, 0, 0, 0, 0, 0, 0, 0 FROM accounts_member WHERE program_id = %s",
            [program.pk],
        )
    rules = [rule_save(rule=rule) for rule in earning_rules(program)]
    _partner, key = partner_create(program=program, name="Bench partner")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) accounts_member")
        cursor.execute("VACUUM (ANALYZE) ledger_balance")
        cursor.execute("ANALYZE")
    return Seeded(program.pk, slug, members, len(rules), key)


# --- reading a py-spy profile --------------------------------------------------------------


def pyspy_summary(path: Path, *, top: int = 15, focus: str | None = None) -> str:
    """A py-spy raw profile in short: the functions with most samples of their own (any code), and
    the project's functions with most samples inside them (inclusive), as shares of the samples
    (of those whose stack contains ``focus``, when given)."""
    import collections
    import re

    frame = re.compile(r"^(.*?) \((.*?):\d+\)$")
    packages = {p.name for p in BASE_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")}

    def name(raw: str) -> tuple[str, bool]:
        match = frame.match(raw.strip())
        if not match:
            return raw.strip(), False
        where = match.group(2).split("site-packages/")[-1].replace(str(BASE_DIR) + "/", "")
        return f"{match.group(1)} ({where})", where.split("/")[0] in packages

    total, inclusive, own = 0, collections.Counter(), collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [name(f) for f in stack.split(";")[1:]]  # [0] is the process
        if focus and not any(focus in f for f, _ours in frames):
            continue
        n = int(count)
        total += n
        for f in {f for f, ours in frames if ours}:
            inclusive[f] += n
        if frames:
            own[frames[-1][0]] += n
    if not total:
        return f"{path.name}: no samples" + (f" under {focus}" if focus else "")
    lines = [f"{path.name}: {total} samples" + (f" under {focus}" if focus else "")]
    lines += ["  self time:"] + [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["  inside the project's functions:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


# --- small statistics -------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
