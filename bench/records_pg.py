"""How fast one writer fills a PostgreSQL ledger (rows with their rollups, in the batches the
gateway writes), what the reads cost there, and how much each table takes per row: the
figures docs/scaling.md sizes a cluster's database with.

Starts its own PostgreSQL (Debian's, as the tests do: tests/postgres.py) in a temporary
folder and removes it afterwards.

Run: .venv/bin/python bench/records_pg.py [--rows 200000] [--batch 250]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.records import rows  # noqa: E402
from llmops import Ledger  # noqa: E402
from storage import PostgresDatabase  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

TABLES = ("requests", "usage_hourly", "usage_minute", "latency_hourly", "key_names")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    with PostgresServer() as server:
        ledger = Ledger(PostgresDatabase(server.url))
        started = time.perf_counter()
        batch: list[list[object]] = []
        for row in rows(args.rows, 7.0):
            batch.append([bool(v) if i == 2 else v for i, v in enumerate(row)])  # stream
            if len(batch) == args.batch:
                ledger.insert(batch)
                batch = []
        if batch:
            ledger.insert(batch)
        took = time.perf_counter() - started
        print(f"{args.rows} rows in {took:.1f} s: {args.rows / took:.0f} rows/s "
              f"(batches of {args.batch})")  # fmt: skip
        now = time.time()
        reads = {
            "usage 24h by backend": lambda: ledger.totals("backend", now - 86400),
            "usage 7d by key": lambda: ledger.totals("key", now - 7 * 86400),
            "series 7d by key (6 h)": lambda: ledger.series("key", now - 7 * 86400, 21600),
            "recent errors": lambda: ledger.recent_errors(now - 86400, 20),
            "experiment sums": lambda: ledger.experiment("concise", None),
        }
        for name, read in reads.items():
            started = time.perf_counter()
            read()
            print(f"{name}: {(time.perf_counter() - started) * 1000:.1f} ms")
        with psycopg.connect(server.url) as db:
            for table in TABLES:
                size = db.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
                count = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                assert size is not None and count is not None
                print(f"{table}: {count[0]} rows, {size[0] / 2**20:.1f} MB, "
                      f"{size[0] / max(1, count[0]):.0f} B/row")  # fmt: skip
        ledger.close()


if __name__ == "__main__":
    main()
