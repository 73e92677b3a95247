"""What a reload of the web server (``kill -HUP``) costs clients: connections reset while it runs.

With ``SO_REUSEPORT`` (``WEB_REUSE_PORT=1``, the default on Linux) each gunicorn worker listens on a
socket of its own. On a reload the retiring workers close theirs, and connections the kernel had
already queued on them are reset, unless the kernel moves them to another worker's socket
(``net.ipv4.tcp_migrate_req=1``, Linux 5.14 and later). This benchmark runs the platform as
``make run`` does (``bench/_server.py``), opens new connections as fast as wrk can
(``Connection: close``, so every request is a new connection) to ``GET /healthz`` for
``--seconds``, sends the gunicorn master ``--reloads`` SIGHUPs spread over the run, and prints the
requests, the socket errors wrk saw and the answers that were not 2xx, for each value of the
sysctl asked for (``--migrate``; setting it needs root, and the value found is put back).

    .venv/bin/python -m bench.web_reload                       # the machine's own tcp_migrate_req
    .venv/bin/python -m bench.web_reload --migrate 0,1 --rounds 2

There is no goal: a reload should lose nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import BenchServer  # noqa: E402

SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def migrate_setting() -> str | None:
    return SYSCTL.read_text().strip() if SYSCTL.exists() else None


def run_wrk(wrk: str, port: int, *, seconds: int, connections: int) -> dict:
    proc = subprocess.run(
        [wrk, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-H", "Connection: close",
         f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    requests = int(re.search(r"(\d+) requests in", proc.stdout).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", proc.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", proc.stdout)
    return {"requests": requests, "errors": [int(n) for n in errors.groups()] if errors else [0, 0, 0, 0],
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def _reload(master: int, reloads: int, seconds: float) -> None:
    """SIGHUP to ``master`` ``reloads`` times, evenly over ``seconds``."""
    for _ in range(reloads):
        time.sleep(seconds / (reloads + 1))
        os.kill(master, signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_reload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--reloads", type=int, default=2, help="SIGHUPs sent during each run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--migrate", default="", help="comma-separated values of net.ipv4.tcp_migrate_req to run "
                        "with, in turn (needs root); default: the machine's own")
    parser.add_argument("--db", default="bench_web_reload")
    parser.add_argument("--redis-db", type=int, default=10, help="Redis database of the server's cache and broker")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if not wrk:
        parser.error("wrk is not installed (apt-get install wrk)")
    found = migrate_setting()
    settings = [value for value in args.migrate.split(",") if value] or [found]
    if args.migrate and (found is None or os.geteuid() != 0):
        parser.error("--migrate needs Linux 5.14 or later and root")

    server = BenchServer(args.db, redis_db=args.redis_db, keep=args.keep)
    try:
        server.prepare()
        server.start()
        master = server.children[0][1].pid
        reuse_port = os.environ.get("WEB_REUSE_PORT", "1") != "0"
        print(f"web_reload: GET /healthz, wrk 2 threads x {args.connections} connections, a new connection per "
              f"request, {args.seconds} s a run with {args.reloads} reload(s) (SIGHUP to the gunicorn master); "
              f"{server.web_workers} workers, WEB_REUSE_PORT={'1' if reuse_port else '0'}; "
              f"tcp_migrate_req on this machine: {found if found is not None else 'not available'}")
        for round_ in range(1, args.rounds + 1):
            for value in settings:
                if value is not None and value != migrate_setting():
                    SYSCTL.write_text(value)
                reloader = threading.Thread(target=_reload, args=(master, args.reloads, args.seconds))
                reloader.start()
                result = run_wrk(wrk, server.port, seconds=args.seconds, connections=args.connections)
                reloader.join()
                connect, read, write, timeout = result["errors"]
                print(f"  round {round_} tcp_migrate_req={value}: {result['requests']:,} requests, socket errors "
                      f"{sum(result['errors'])} (connect {connect}, read {read}, write {write}, timeout {timeout}), "
                      f"non-2xx {result['non_2xx']}")
                time.sleep(2)  # the retired workers gone before the next run
    finally:
        if found is not None and migrate_setting() != found:
            SYSCTL.write_text(found)
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
