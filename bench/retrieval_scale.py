"""Search at scale: one vector store of 10k and of 100k chunks (384-dimensional unit vectors,
as MiniLM makes, and ~100-word texts drawn from data/retrieval's documents), in a SQLite file
as the embedded default keeps them. Measured in process, without the query's embedding (one
MiniLM call, measured over HTTP by bench/retrieval_eval.py):

- load: the first search of a replica reads the store into memory (vectors and BM25);
- search p50 / p99 of `VectorStores.search` (the store's version checked, exact ranking of
  every chunk, filters, passages read), vectors only and hybrid (BM25's share 0.3).

Run: .venv/bin/python bench/retrieval_scale.py [--sizes 10000 100000 --queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval import (  # noqa: E402
    Owner,
    RetrievalConfig,
    SearchOptions,
    SqlStore,
    VectorStores,
    extract,
    unit,
)
from storage import SqliteDatabase  # noqa: E402

DIMENSIONS = 384


def corpus_words() -> list[str]:
    words: list[str] = []
    for path in sorted((ROOT / "data" / "retrieval" / "docs").iterdir()):
        words += re.findall(r"\S+", " ".join(extract(path.name, path.read_bytes())))
    return words


def fill(sql: SqlStore, store_id: str, chunks: int, rng: np.random.Generator) -> float:
    """`chunks` rows in files of 100 chunks; seconds taken."""
    words = corpus_words()
    started = time.perf_counter()
    for first in range(0, chunks, 100):
        file_id = f"file-{first:08d}"
        vectors = unit(rng.standard_normal((100, DIMENSIONS)).astype(np.float32))
        rows = []
        for n, vector in enumerate(vectors):
            start = (first + n) * 37 % (len(words) - 100)
            rows.append((1, " ".join(words[start : start + 100]), vector.tobytes()))
        sql.add_file(
            {
                "id": file_id,
                "owner": "",
                "team": None,
                "filename": f"{file_id}.txt",
                "purpose": "assistants",
                "bytes": 1,
                "created_at": time.time(),
            },
            b"x",
        )
        sql.attach(
            store_id,
            {
                "file_id": file_id,
                "attributes": {},
                "chunking": {},
                "usage_bytes": 0,
                "status": "completed",
                "created_at": time.time(),
            },
            rows,
        )
    return time.perf_counter() - started


async def measure(size: int, queries: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-retrieval-scale-"))
    rng = np.random.default_rng(size)
    query_vectors = unit(rng.standard_normal((queries, DIMENSIONS)).astype(np.float32))
    state = {"n": 0}

    async def embed(texts: list[str], context: Any) -> list[list[float]]:
        state["n"] += 1
        return [query_vectors[state["n"] % queries].tolist() for _ in texts]

    sql = SqlStore(SqliteDatabase(folder / "stores.sqlite"))
    sql.add_store(
        {
            "id": "vs_bench",
            "owner": "",
            "team": None,
            "name": "bench",
            "metadata": {},
            "created_at": time.time(),
        }
    )
    filled = fill(sql, "vs_bench", size, rng)
    stores = VectorStores(sql, RetrievalConfig(), embed)
    texts = random.Random(size).choices(corpus_words(), k=queries * 8)
    questions = [" ".join(texts[i * 8 : i * 8 + 8]) for i in range(queries)]
    started = time.perf_counter()
    await stores.search_body(Owner(""), "vs_bench", {"query": "first"}, None)
    loaded = time.perf_counter() - started
    result: dict[str, Any] = {
        "chunks": size,
        "write_s": round(filled, 1),
        "load_s": round(loaded, 2),
    }
    for name, weight in (("vectors", 0.0), ("hybrid", 0.3)):
        took = []
        for question in questions:
            started = time.perf_counter()
            await stores.search(["vs_bench"], question, SearchOptions(10, None, 0.0, weight), None)
            took.append((time.perf_counter() - started) * 1000)
        took.sort()
        result[name] = {
            "p50_ms": round(statistics.median(took), 2),
            "p99_ms": round(took[int(len(took) * 0.99) - 1], 2),
        }
    stores.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    results = [asyncio.run(measure(size, args.queries)) for size in args.sizes]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
