"""The response cache's stores, in process: what a lookup, a store and a semantic search cost
in the replica's memory, in a SQLite file and in PostgreSQL (`cache.store`), with N entries
already held. PostgreSQL is started here (Debian's server, `make postgres`), as the tests do.

    .venv/bin/python bench/cache_store.py [--entries 10000 --reads 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cache import DatabaseEntries, Entries, Entry, ReplicaEntries  # noqa: E402
from storage import open_database  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

BODY = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"' + b"x" * 400 + b'"}}]}'


def timed(call: Any, count: int) -> tuple[float, float]:
    took = []
    for n in range(count):
        started = time.perf_counter()
        call(n)
        took.append((time.perf_counter() - started) * 1e6)
    return statistics.median(took), sorted(took)[int(count * 0.99) - 1]


def run(name: str, entries: Entries, held: int, reads: int) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((held, 384)).astype(np.float32)
    for n in range(held):
        entry = Entry(f"k{n}", "auto", "b", "m", False, body=BODY, usage={"prompt_tokens": 5},
                      text=f"question {n}", partition=f"p{n % 100}")  # fmt: skip
        entries.put(entry, 3600, list(vectors[n]))
    get = timed(lambda n: entries.get(f"k{n % held}"), reads)
    miss = timed(lambda n: entries.get(f"absent{n}"), reads)
    fresh = Entry("new", "auto", "b", "m", False, body=BODY)
    put = timed(lambda n: entries.put(fresh, 3600, None), reads)
    query = list(vectors[7])
    search = timed(lambda n: entries.search(f"p{n % 100}", query, 0.9, 4), min(reads, 500))
    print(f"| {name} | {held} | {get[0]:.0f} / {get[1]:.0f} | {miss[0]:.0f} / {miss[1]:.0f} | "
          f"{put[0]:.0f} / {put[1]:.0f} | {search[0]:.0f} / {search[1]:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-store-"))
    print(
        "| store | entries | hit get µs p50 / p99 | miss get | put | semantic search "
        "(partition of entries/100) |\n|---|---|---|---|---|---|"
    )
    run("replica", ReplicaEntries(10**6, 2**31), args.entries, args.reads)
    sqlite = DatabaseEntries(open_database(None, folder / "c.sqlite"), 10**6, 2**31)
    run("sqlite", sqlite, args.entries, args.reads)
    sqlite.close()
    server = PostgresServer()
    server.start()
    try:
        pg = DatabaseEntries(open_database(server.url, folder / "x"), 10**6, 2**31)
        run("postgresql", pg, args.entries, args.reads)
        pg.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
