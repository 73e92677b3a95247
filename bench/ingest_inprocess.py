"""The batch path in-process: CPU and statements of storing a batch and of the worker's
processing, without HTTP, Celery or Redis.

On a database of its own with the ingest benchmarks' 10 rules, batches of purchase events
(``bench._server.purchase_event``) are stored by ``events_submit_batch`` (the web side of
``POST /api/v1/events/batch``, its JSON already parsed) and then processed by
``events_process`` in the worker's chunks of 250, one after the other in this process (its garbage
collector set as a worker's pool process sets it, ``loyalty.celery``). For each
side it prints the CPU an event of this process (``time.process_time``) and of its PostgreSQL
backend (``/proc``, when the server is local), the median chunk and the lowest, and the
statements a chunk sends. There is no goal: ``bench.ingest_http`` measures the whole path, with
far more noise; this compares commits. Run it from two work trees, alternately.

    DEBUG=1 .venv/bin/python -m bench.ingest_inprocess
    DEBUG=1 .venv/bin/python -m bench.ingest_inprocess --batches 40 --profile 4
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

CHUNK = 250  # events a worker's task gets (``rules.pipeline.enqueue``)


def main(argv=None) -> None:
    parser = c.make_parser("ingest_inprocess", __doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="events a batch (default %(default)s)")
    parser.add_argument("--batches", type=int, default=24, help="timed batches (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches first (default %(default)s)")
    parser.add_argument("--chunks", type=int, default=6, help="chunks the timed batches are split into")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile N more batches' processing (cProfile) and print its top functions")
    args = parser.parse_args(argv)

    with c.bench_database(args):
        from django.db import connection

        from accounts.models import Partner, Program
        from bench._server import purchase_event, seed
        from rules import pipeline

        seeded = seed(members=args.members, slug="ingest-inprocess")
        program = Program.objects.get(pk=seeded.program_id)
        partner = Partner.objects.get(program=program)
        from loyalty.celery import _garbage_collector_for_batches

        _garbage_collector_for_batches()  # as each of the worker's pool processes does once started
        queued: list[int] = []
        pipeline.enqueue = queued.extend  # no broker: this process is the worker
        rng = random.Random(20261201)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()

        def payloads() -> list[dict]:
            now = dt.datetime.now(dt.UTC)
            return [purchase_event(uuid.uuid4().hex, rng, args.members, now) for _ in range(args.batch)]

        def store(batch: list[dict]) -> None:
            result = pipeline.events_submit_batch(program=program, partner=partner, payloads=batch)
            if result.accepted != len(batch):
                raise SystemExit(f"a batch accepted {result.accepted} of {len(batch)}: {result.rejected[:2]}")

        def process() -> None:
            ids = queued[:]
            queued.clear()
            for start in range(0, len(ids), CHUNK):
                done = pipeline.events_process(ids[start:start + CHUNK])
                if done != len(ids[start:start + CHUNK]):
                    raise SystemExit(f"a chunk processed {done} of {CHUNK}")

        print(f"ingest_inprocess: {args.members:,} members, the ingest benchmarks' {seeded.rules} rules; "
              f"{args.warmup} warm-up then {args.batches} batches of {args.batch:,} in {args.chunks} chunks; "
              f"the worker's tasks of {CHUNK}")
        for _ in range(args.warmup):
            store(payloads())
            process()
        statements = count_statements(lambda: (store(payloads()), process()), args.batch)
        per_chunk = max(args.batches // args.chunks, 1)
        figures = {"store": ([], []), "process": ([], [])}
        for _ in range(args.chunks):
            batches = [payloads() for _ in range(per_chunk)]
            for side, run in (("store", lambda batches=batches: [store(b) for b in batches]), ("process", process)):
                cpu, pg = time.process_time(), c.proc_cpu_seconds(backend)
                run()
                own, server = figures[side]
                own.append(1e6 * (time.process_time() - cpu) / (per_chunk * args.batch))
                if pg is not None:
                    server.append(1e6 * (c.proc_cpu_seconds(backend) - pg) / (per_chunk * args.batch))
        for side, (own, server) in figures.items():
            pg_text = (f"; PostgreSQL median {statistics.median(server):.1f} us, lowest {min(server):.1f} us"
                       if server else "")
            print(f"  {side:7s} CPU an event: this process median {statistics.median(own):.1f} us, lowest "
                  f"{min(own):.1f} us (chunks {', '.join(f'{x:.1f}' for x in own)}){pg_text}")
        print(f"  statements for one batch of {args.batch:,}, stored then processed:")
        for statement, count in statements:
            print(f"    {count:4d} x {statement}")
        if args.profile:
            import cProfile
            import pstats

            batches = [payloads() for _ in range(args.profile)]
            for batch in batches:
                store(batch)
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            process()
            profile.disable()
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(40)


def count_statements(run, batch: int) -> list[tuple[str, int]]:
    """The statements ``run`` sends (their first 90 characters), with how often each."""
    import collections

    from django.db import connection

    seen: collections.Counter = collections.Counter()

    def wrapper(execute, sql, params, many, context):
        seen[" ".join(sql.split())[:90]] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        run()
    return seen.most_common()


if __name__ == "__main__":
    main()
