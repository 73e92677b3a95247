"""``make run``: set up and run the whole platform in the foreground.

Starts (or reuses) the embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are
set, migrates, creates the ledger partitions ahead, seeds the demo program, then runs the
web server (gunicorn), one Celery worker and Celery beat. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _local_defaults(state_dir: Path) -> None:
    """Defaults for a local, plain-HTTP server; anything already in the environment wins."""
    os.environ.setdefault("DEBUG", "0")
    if not os.environ.get("SECRET_KEY"):
        key_file = state_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
    os.environ.setdefault("LOYALTY_PLAIN_HTTP", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")
    # Web and worker processes share their Prometheus metrics through this folder.
    metrics_dir = state_dir / "prometheus"
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def _embedded_services() -> list:
    """Start the embedded servers that are needed; return how to stop the ones we started."""
    from loyalty import embedded

    stops = []
    if not os.environ.get("DATABASE_URL"):
        running = (embedded.STATE_DIR / "pgdata" / "postmaster.pid").exists()
        os.environ["DATABASE_URL"] = embedded.postgres_url()
        if not running:
            stops.append(embedded.postgres_stop)
    if not os.environ.get("REDIS_URL"):
        running = embedded._redis_alive(embedded._redis_socket())
        os.environ["REDIS_URL"] = embedded.redis_url()
        if not running:
            stops.append(embedded.redis_stop)
    return stops


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    from loyalty.embedded import STATE_DIR

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _local_defaults(STATE_DIR)
    stops = _embedded_services()
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    children: list[subprocess.Popen] = []

    def shutdown(*_args) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
        for stop in stops:
            stop()

    try:
        _manage("migrate", "--no-input", "-v", "0")
        _manage("collectstatic", "--no-input", "-v", "0")
        _manage("ledger_partitions")
        _manage("seed_demo")
        children.append(subprocess.Popen([
            str(BIN / "gunicorn"), "-c", str(BASE_DIR / "loyalty" / "gunicorn_conf.py"), "--bind", f"{host}:{port}",
        ], cwd=BASE_DIR))
        children.append(subprocess.Popen([
            str(BIN / "celery"), "-A", "loyalty", "worker", "--loglevel", "INFO",
            "--concurrency", os.environ.get("CELERY_CONCURRENCY", "2"),
        ], cwd=BASE_DIR))
        children.append(subprocess.Popen([
            str(BIN / "celery"), "-A", "loyalty", "beat", "--loglevel", "INFO",
            "--schedule", str(STATE_DIR / "celerybeat-schedule"),
        ], cwd=BASE_DIR))
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
        print(
            f"\n  Loyalty platform running\n"
            f"    site:      {base}/\n"
            f"    admin:     {base}/admin/\n"
            f"    API docs:  {base}/api/docs/\n"
            f"    metrics:   {base}/metrics\n"
            f"  Ctrl-C stops the web server, the worker and beat"
            f"{' and the embedded databases' if stops else ''}.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [child.args[0] for child in children if child.poll() not in (None, 0)]
        if failed:
            print(f"stopped: {', '.join(map(str, failed))} exited", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"make run: {' '.join(map(str, exc.cmd))} failed", file=sys.stderr)
        return 1
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
