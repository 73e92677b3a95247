"""Run every benchmark in sequence, each in its own process (and its own database).

    DEBUG=1 .venv/bin/python -m bench.run_all              # quick sizes (make bench)
    DEBUG=1 .venv/bin/python -m bench.run_all --full       # the issues' sizes (long)
    DEBUG=1 .venv/bin/python -m bench.run_all --only expiry,balance_read

The ledger benchmarks come first, in a fixed order; any other ``bench/<name>.py`` (not starting
with ``_``) follows in name order. ``--full`` is passed to the benchmarks that take it; the others
run with their defaults. A benchmark that fails does not stop the others; the exit status is 1
if any failed. Speed never fails a run: the figures are printed next to their goals.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
FIRST = ["earn_throughput", "expiry", "balance_read"]


def discover() -> list[str]:
    others = sorted(
        path.stem for path in BENCH_DIR.glob("*.py")
        if not path.stem.startswith("_") and path.stem != "run_all" and path.stem not in FIRST
    )
    return [name for name in FIRST if (BENCH_DIR / f"{name}.py").exists()] + others


def takes_full(name: str) -> bool:
    return '"--full"' in (BENCH_DIR / f"{name}.py").read_text()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the issues' sizes")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--keep", action="store_true", help="keep each benchmark's database (those that take --keep)")
    args = parser.parse_args(argv)

    names = discover()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmarks: {', '.join(unknown)} (known: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    names = [n for n in names if n not in skip]

    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    results = []
    for name in names:
        command = [sys.executable, "-m", f"bench.{name}"]
        if args.full:
            if takes_full(name):
                command.append("--full")
            else:
                print(f"\n[run_all] bench.{name} has no --full option: running it with its defaults")
        if args.keep and '"--keep"' in (BENCH_DIR / f"{name}.py").read_text():
            command.append("--keep")
        print(f"\n[run_all] {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command, cwd=BASE_DIR, env=env)
        results.append((name, code, time.perf_counter() - started))

    print("\n[run_all] summary")
    for name, code, seconds in results:
        print(f"  {name:<20} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
