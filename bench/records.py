"""What an operator's reads cost on a ledger that holds real traffic (issue 21).

Fills a SQLite ledger with `--rows` requests spread over `--days` (default 10M over 7 days:
~16 req/s; the gateway's own throughput would be 60 times more), 1% of them with feedback and
a fifth in an A/B experiment. Then serves it as users run the gateway (`python -m gateway
serve`, fake backends, auth off) and times, `--samples` times each, what operators ask:
`GET /v1/gateway/usage` (24h and 7d, by backend and by key), the console pages and the
experiment report. It also records how much the ingress replica's memory grew over the run.
A request that takes longer than `--timeout-s` is recorded as timed out and the run goes on.

Run: .venv/bin/python bench/records.py [--rows 10000000] [--ledger PATH (kept, reused)]
     [--reads usage,console]
Prints JSON and a table; docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import serve_app, start  # noqa: E402
from llmops import LEDGER_COLUMNS, LEDGER_MIGRATIONS, Ledger  # noqa: E402
from storage import SqliteDatabase, migrate  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

BACKENDS = ("local", "cheap", "dear")
KEYS = 50
CHUNK = 100_000
READS = {
    "usage 24h by backend": "/v1/gateway/usage?group_by=backend&since=24h",
    "usage 7d by backend": "/v1/gateway/usage?group_by=backend&since=7d",
    "usage 24h by key": "/v1/gateway/usage?group_by=key&since=24h",
    "usage 7d by key": "/v1/gateway/usage?group_by=key&since=7d",
    "console overview": "/console",
    "console usage 24h": "/console/usage?by=backend&since=24h",
    "console usage 7d": "/console/usage?by=key&since=7d",
    "console experiments (the report)": "/console/experiments",
}


def rows(count: int, days: float, seed: int = 0) -> Iterator[tuple[Any, ...]]:
    """Ledger rows in `LEDGER_COLUMNS` order, ts uniform over the last `days`."""
    rng = random.Random(seed)
    now = time.time()
    span = days * 86400
    for index in range(count):
        backend = BACKENDS[index % 3]
        key = index % KEYS
        in_experiment = index % 5 == 0
        failed = rng.random() < 0.02
        prompt, output = rng.randint(10, 2000), rng.randint(1, 500)
        values = {
            "request_id": f"req-{index:09d}",
            "endpoint": "chat/completions",
            "stream": index % 2,
            "key_id": f"key_{key:04d}",
            "key_name": f"service-{key}",
            "team": f"team-{key % 5}",
            "ts": now - rng.random() * span,
            "route": "smart",
            "task": ("chat", "code", "extraction")[index % 3],
            "backend": backend,
            "experiment": "concise" if in_experiment else None,
            "arm": ("plain", "concise")[index % 2] if in_experiment else None,
            "ingress": "bench/replica",
            "status": 500 if failed else 200,
            "error_code": "upstream_error" if failed else None,
            "prompt_tokens": prompt,
            "completion_tokens": 0 if failed else output,
            "usage_source": "upstream",
            "cost_usd": (prompt * 1e-7 + output * 4e-7) * (1 + BACKENDS.index(backend)),
            "ttft_ms": rng.uniform(20, 400),
            "latency_ms": rng.uniform(100, 4000),
        }
        yield tuple(values.get(column) for column in LEDGER_COLUMNS)


def fill(path: Path, count: int, days: float) -> tuple[float, float]:
    """Write the ledger's rows as a gateway before issue 21 did (its first schema, raw rows),
    then open it as a `Ledger`, which upgrades it in place (rolls the rows up); the seconds
    each took."""
    started = time.perf_counter()
    migrate(SqliteDatabase(path), "ledger", LEDGER_MIGRATIONS[:1])
    insert = (
        f"INSERT INTO requests ({', '.join(LEDGER_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"
    )
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    batch: list[tuple[Any, ...]] = []
    feedback: list[tuple[Any, ...]] = []
    for row in rows(count, days):
        batch.append(row)
        if len(batch) >= CHUNK:
            _write(db, insert, batch, feedback)
    _write(db, insert, batch, feedback)
    db.close()
    filled = time.perf_counter()
    Ledger(path).close()
    return filled - started, time.perf_counter() - filled


def _write(db: sqlite3.Connection, insert: str, batch: list[Any], feedback: list[Any]) -> None:
    request_id, ts = LEDGER_COLUMNS.index("request_id"), LEDGER_COLUMNS.index("ts")
    feedback.extend((row[request_id], row[ts] + 5, 0.8, None, None) for row in batch[::100])
    with db:
        db.executemany(insert, batch)
        db.executemany("INSERT INTO feedback VALUES (?, ?, ?, ?, ?)", feedback)
    batch.clear()
    feedback.clear()


def gateway_config(port: int, ledger: Path, folder: Path) -> dict[str, Any]:
    backends = {name: {"kind": "fake", "model": f"{name}-1"} for name in BACKENDS}
    arms = {
        "plain": {"backend": "cheap", "weight": 0.5},
        "concise": {"backend": "dear", "weight": 0.5},
    }
    args = {
        "backends": backends,
        "routes": {"smart": {"candidates": list(BACKENDS)}},
        "experiments": {"concise": {"route": "smart", "arms": arms}},
        "ledger": {"path": str(ledger)},
        "request_log": {"path": str(folder / "requests.jsonl")},
    }
    return serve_app(port, args)


def ingress_pss_mb() -> float:
    """PSS of the ingress replica's process (a Ray worker)."""
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any("GatewayIngress" in part for part in process.info["cmdline"] or ()):
                return round(process.memory_full_info().pss / 2**20, 1)
    return float("nan")


def time_reads(
    base: str, samples: int, timeout_s: float, only: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base, timeout=timeout_s) as client:
        for name, path in READS.items():
            if not name.startswith(only):
                continue
            took: list[float] = []
            for _ in range(samples):
                started = time.perf_counter()
                try:
                    response = client.get(path)
                except httpx.TimeoutException:
                    results[name] = {"timed_out_after_s": timeout_s, "samples_ms": took}
                    break
                took.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
            else:
                results[name] = {"p50_ms": round(statistics.median(took), 1), "samples_ms": took}
            print(name, results[name], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--ledger", type=Path, default=None, help="kept; filled if missing")
    parser.add_argument(
        "--reads",
        default="usage,console",
        help="which reads, by the start of their names",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-records-"))
    ledger = args.ledger or folder / "ledger.sqlite"
    filled_s = upgraded_s = None
    if not ledger.exists():
        filled_s, upgraded_s = (round(s, 1) for s in fill(ledger, args.rows, args.days))
    port = free_port()
    config = folder / "serve.yaml"
    config.write_text(yaml.safe_dump(gateway_config(port, ledger, folder)))
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
    gateway = start([sys.executable, "-m", "gateway", "serve", str(config)],
                    folder / "serve.log", env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200, 300, "up")
        before = ingress_pss_mb()
        reads = time_reads(base, args.samples, args.timeout_s, tuple(args.reads.split(",")))
        after = ingress_pss_mb()
    finally:
        stop_process(gateway, grace_s=60)
    summary = {
        "rows": args.rows,
        "days": args.days,
        "ledger_mb": round(ledger.stat().st_size / 2**20),
        "filled_s": filled_s,
        "upgraded_s": upgraded_s,
        "ingress_pss_mb": {"before": before, "after": after, "grew": round(after - before, 1)},
        "reads": reads,
    }
    print(json.dumps(summary, indent=1))
    print(table(summary))


def table(summary: dict[str, Any]) -> str:
    lines = ["| read | p50 ms |", "|---|---|"]
    for name, result in summary["reads"].items():
        shown = (
            f"{result['p50_ms']:.0f}" if "p50_ms" in result
            else f"> {result['timed_out_after_s']:.0f} s (timed out)"
        )  # fmt: skip
        lines.append(f"| {name} | {shown} |")
    memory = summary["ingress_pss_mb"]
    lines.append(f"\ningress PSS {memory['before']} -> {memory['after']} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
