"""Passing a batch's rows to PostgreSQL: arrays (one parameter per column, ``unnest``) against
one JSON text (``pg_json`` read by ``json_to_recordset``, or ``jsonb_to_recordset``).

The worker's batch earn (``ledger.services.points_earn_many``) writes its operations, lots,
entries and balances with one statement each, for 250 events at a time. This measures one such
statement's parameters, the shape of the lots and entries (two bigint, two int and three text
columns), on a prepared statement that reads the rows and sums a column:

* client CPU: this process's CPU time (psycopg writing the parameters, the round trip);
* server CPU: the CPU time of the connection's PostgreSQL backend, read from ``/proc`` (only when
  the server runs on this machine; otherwise "n/a").

    DEBUG=1 .venv/bin/python -m bench.row_params                # 250 rows, 300 statements a way
    DEBUG=1 .venv/bin/python -m bench.row_params --rows 1000

The figures are per row; the ways alternate, best of ``--rounds``. No goal: it is what chose the
JSON text for ``points_earn_many``.
"""

from __future__ import annotations

import time

from bench import _common as c

COLUMNS = "m bigint, o bigint, p int, r int, st text, si text, d text"
ARRAYS_SQL = ("SELECT count(*), sum(p) FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::int[], %s::text[], "
              "%s::text[], %s::text[]) AS v(m, o, p, r, st, si, d)")
JSON_SQL = f"SELECT count(*), sum(p) FROM json_to_recordset(%s::json) AS v({COLUMNS})"
JSONB_SQL = f"SELECT count(*), sum(p) FROM jsonb_to_recordset(%s::jsonb) AS v({COLUMNS})"


def main(argv=None) -> None:
    parser = c.make_parser("row_params", __doc__)
    parser.add_argument("--rows", type=int, default=250, help="rows per statement (default %(default)s)")
    parser.add_argument("--statements", type=int, default=300, help="statements a way and round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="(default %(default)s)")
    args = parser.parse_args(argv)
    n = args.rows
    c.banner(f"row parameters: {n} rows of 7 columns per statement, {args.statements} statements per way, "
             f"best of {args.rounds} rounds")
    with c.bench_database(args):
        from loyalty.db import prepared_cursor
        from loyalty.jsontext import pg_json

        columns = (list(range(10_000, 10_000 + n)), list(range(50_000, 50_000 + n)), [137 + i % 50 for i in range(n)],
                   [100 + i % 37 for i in range(n)], ["event"] * n, [f"evt-{i:08d}-purchase" for i in range(n)],
                   ["Spend rule: 1 point per EUR, rounded down"] * n)
        names = ("m", "o", "p", "r", "st", "si", "d")

        def rows() -> str:
            return pg_json([dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)])

        ways = {
            "arrays (a list per column)": lambda: (ARRAYS_SQL, [list(column) for column in columns]),
            "json_to_recordset(pg_json)": lambda: (JSON_SQL, [rows()]),
            "jsonb_to_recordset(pg_json)": lambda: (JSONB_SQL, [rows()]),
        }
        with prepared_cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        expected = (n, sum(columns[2]))
        best: dict[str, tuple[float, float | None]] = {}
        for _ in range(args.rounds):
            for name, make in ways.items():
                with prepared_cursor() as cursor:
                    cursor.execute(*make())  # prepared from here on
                    if cursor.fetchone() != expected:
                        raise SystemExit(f"{name}: wrong answer")
                server_before, client_before = c.proc_cpu_seconds(pid), time.process_time()
                for _ in range(args.statements):
                    with prepared_cursor() as cursor:
                        cursor.execute(*make())
                        cursor.fetchone()
                client = (time.process_time() - client_before) / args.statements / n * 1e6
                server_after = c.proc_cpu_seconds(pid)
                server = (None if server_before is None or server_after is None
                          else (server_after - server_before) / args.statements / n * 1e6)
                old = best.get(name)
                if old is None or client + (server or 0) < old[0] + (old[1] or 0):
                    best[name] = (client, server)
        for name, (client, server) in best.items():
            server_text = "n/a" if server is None else f"{server:5.2f}"
            total = "" if server is None else f"; together {client + server:5.2f} µs a row"
            print(f"  {name:<30} client CPU {client:5.2f} µs a row, server CPU {server_text} µs a row{total}")
        print("  (server CPU from /proc in clock ticks: read it as a rough figure on short runs)")


if __name__ == "__main__":
    main()
