"""What a database round trip costs a threaded web process while another of its threads computes.

A gunicorn ``gthread`` worker runs several requests at once in one Python process, and only one
thread runs Python at a time (the GIL). psycopg releases the GIL around each call into libpq (the
send, the wait for the answer, the read), and each time the computing thread holds it until
Python's switch interval (5 ms) makes it let go. This prints, on a connection of its own to the
configured PostgreSQL:

* a prepared statement through a psycopg cursor, alone and with one CPU-bound thread in the
  process;
* psycopg's ``send_query_prepared`` alone (the send only), the same two ways;
* libpq's blocking ``exec_prepared`` (send, wait and read in one release), the same two ways.

It explains why a request with a round trip costs more in a loaded server than in-process
(``bench/RESULTS.md``, twelfth measurement). There is no goal.

    DEBUG=1 .venv/bin/python -m bench.gil_handoff
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402


def main(argv=None) -> None:
    c.make_parser("gil_handoff", __doc__).parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")
    import psycopg
    from django.conf import settings

    conn = psycopg.connect(**c.connection_params(settings.DATABASES["default"]), autocommit=True)
    cursor = conn.cursor()
    pgconn = conn.pgconn
    pgconn.prepare(b"gil_handoff", b"SELECT $1::int")

    def through_psycopg():
        cursor.execute("SELECT %s::int", [1], prepare=True)
        cursor.fetchall()

    def send_only():
        started = time.perf_counter()
        pgconn.send_query_prepared(b"gil_handoff", [b"1"])
        spent = time.perf_counter() - started
        while True:  # read the answer without timing it
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
        while pgconn.get_result() is not None:
            pass
        return spent

    def through_libpq():
        pgconn.exec_prepared(b"gil_handoff", [b"1"])

    def timed(call, n: int) -> float:
        total = 0.0
        for _ in range(n):
            started = time.perf_counter()
            spent = call()
            total += spent if spent is not None else time.perf_counter() - started
        return total / n * 1e6

    computing = threading.Event()

    def compute():
        x = 0
        while computing.is_set():
            x += 1

    print(f"gil_handoff: one connection, Python's switch interval {sys.getswitchinterval() * 1000:.0f} ms")
    for name, call in (("psycopg cursor, prepared statement", through_psycopg),
                       ("psycopg send_query_prepared (send only)", send_only),
                       ("libpq exec_prepared (blocking)", through_libpq)):
        timed(call, 50)
        alone = timed(call, 500)
        computing.set()
        thread = threading.Thread(target=compute)
        thread.start()
        try:
            contended = timed(call, 40)
        finally:
            computing.clear()
            thread.join()
        print(f"  {name:42s} alone {alone:8.1f} us; with one computing thread {contended:9.1f} us "
              f"(about {contended / (sys.getswitchinterval() * 1e6):.1f} switch intervals)")
    conn.close()


if __name__ == "__main__":
    main()
