"""gunicorn's worker start-up (loyalty/gunicorn_conf.py): every view is imported before the first
request, and what start-up loaded is frozen out of the garbage collector's sight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter, set up as the WSGI module sets Django up, with nothing imported by a request.
SCRIPT = """
import gc, sys
import loyalty.wsgi
before = ("loyalty.urls" in sys.modules, "ledger.api" in sys.modules, gc.get_freeze_count())
from loyalty import gunicorn_conf
gunicorn_conf.post_worker_init(None)
after = ("loyalty.urls" in sys.modules, "ledger.api" in sys.modules, gc.get_freeze_count())
print(before, after)
"""


def test_post_worker_init_imports_the_urlconf_then_freezes():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loyalty.settings", "DEBUG": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().splitlines()[-1].split(") (")
    assert before == "(False, False, 0"
    urls, views, frozen = after.rstrip(")").split(", ")
    assert (urls, views) == ("True", "True")
    assert int(frozen) > 0


def _conf_value(name: str, **env) -> str:
    script = f"from loyalty import gunicorn_conf; print(gunicorn_conf.{name})"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_each_worker_listens_on_its_own_socket_on_linux_unless_turned_off():
    assert _conf_value("reuse_port") == str(sys.platform.startswith("linux"))
    assert _conf_value("reuse_port", WEB_REUSE_PORT="0") == "False"


def test_the_server_refuses_an_address_another_server_listens_on():
    """With SO_REUSEPORT the master binds nothing: without its own check, a second server on the
    same port would share it with the first, silently."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loyalty.settings", "DEBUG": "1", "WEB_CONCURRENCY": "1"}
        result = subprocess.run(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "loyalty" / "gunicorn_conf.py"),
             "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,  # a server that started runs on
        )
    assert result.returncode != 0
    if sys.platform.startswith("linux"):  # elsewhere gunicorn's own bind in the master refuses it
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT is used on Linux only")
def test_a_unix_socket_stays_one_socket_shared_by_the_workers(tmp_path):
    """Were each worker to bind the path itself, each would remove the file of the one before and only
    the last would get connections: the kernel would list one bound socket per worker."""
    import time

    path = str(tmp_path / "web.sock")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loyalty.settings", "DEBUG": "1", "WEB_CONCURRENCY": "3"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "loyalty" / "gunicorn_conf.py"),
         "--bind", f"unix:{path}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            workers = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _parent(int(pid)) == server.pid]
            if len(workers) == 3 and all(_listens(pid, path) for pid in workers):
                break
            assert server.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        bound = [line for line in Path("/proc/net/unix").read_text().splitlines() if line.endswith(" " + path)]
        assert len(bound) == 1, bound
    finally:
        server.terminate()
        server.wait(timeout=30)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _listens(pid: int, path: str) -> bool:
    """Whether the process has the socket bound at ``path`` open (by inode, from /proc/net/unix)."""
    inodes = {line.split()[6] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
              if line.endswith(" " + path)}
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link == f"socket:[{inode}]" for inode in inodes for link in fds)


def test_the_master_says_what_a_reload_costs_unless_the_kernel_moves_queued_connections(tmp_path):
    from loyalty.gunicorn_conf import reload_warning

    sysctl = tmp_path / "tcp_migrate_req"
    sysctl.write_text("0\n")
    assert "set the sysctl net.ipv4.tcp_migrate_req=1, or WEB_REUSE_PORT=0" in reload_warning(str(sysctl))
    sysctl.write_text("1\n")
    assert reload_warning(str(sysctl)) is None
    assert "this kernel cannot move them" in reload_warning(str(tmp_path / "missing"))
