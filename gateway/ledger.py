"""The cost ledger: one SQLite row per request (WAL mode), written off the event loop.

Writes go through a queue to one writer thread, in batches; reads (`totals`) open their own
connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

COLUMNS = (
    "ts",
    "request_id",
    "key_id",
    "endpoint",
    "route",
    "task",
    "backend",
    "experiment",
    "arm",
    "template",
    "status",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "usage_source",
    "estimated_cost_usd",
    "cost_usd",
    "ttft_ms",
    "latency_ms",
)
GROUPS = {
    "backend": "backend",
    "route": "route",
    "key": "key_id",
    "task": "task",
    "arm": "arm",
    "template": "template",
}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    {", ".join(COLUMNS)},
    PRIMARY KEY (request_id, ts)
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (request_id, ts, score REAL, label, comment);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""
_STOP = object()
BATCH_S = 0.25


class Ledger:
    """Append-only request ledger at `path` (created with its folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.executescript(_SCHEMA)
        self.journal_mode = str(mode)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._writer = threading.Thread(target=self._write_forever, name="ledger", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        return db

    def add(self, row: dict[str, Any]) -> None:
        """Queue one request's row (keys from COLUMNS; missing ones are NULL). Never blocks."""
        self._idle.clear()
        self._queue.put(tuple(row.get(column) for column in COLUMNS))

    def _write_forever(self) -> None:
        db = self._connect()
        insert = (
            f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        while True:
            rows = [self._queue.get()]
            # Batch for a moment: fewer wake-ups of this thread, fewer GIL hand-overs that
            # would delay the ingress's event loop (by up to the 5 ms switch interval each).
            time.sleep(BATCH_S)
            while not self._queue.empty():
                rows.append(self._queue.get_nowait())
            stop = _STOP in rows
            rows = [row for row in rows if row is not _STOP]
            if rows:
                with db:
                    db.executemany(insert, rows)
            if self._queue.empty():
                self._idle.set()
            if stop:
                db.close()
                return

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued row is written (tests, shutdown)."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._writer.join(5)

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group since a Unix time (blocking: run in a thread)."""
        column = GROUPS[group_by]
        query = (
            f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(cost_usd), SUM(estimated_cost_usd), SUM(status >= 400) "
            f"FROM requests WHERE ts >= ? GROUP BY {column} ORDER BY SUM(cost_usd) DESC"
        )
        with self._connect() as db:
            rows = db.execute(query, (since or 0.0,)).fetchall()
        return [
            {
                group_by: name,
                "requests": count,
                "prompt_tokens": prompt or 0,
                "completion_tokens": completion or 0,
                "cost_usd": round(cost or 0.0, 10),
                "estimated_cost_usd": round(estimated or 0.0, 10),
                "errors": errors or 0,
            }
            for name, count, prompt, completion, cost, estimated, errors in rows
        ]

    def add_feedback(
        self, request_id: str, score: float, label: str | None, comment: str | None
    ) -> bool:
        """Attach an outcome to a logged request; False if no such request (blocking)."""
        self.flush(2.0)
        with self._connect() as db:
            known = db.execute(
                "SELECT 1 FROM requests WHERE request_id = ? LIMIT 1", (request_id,)
            ).fetchone()
            if known is None:
                return False
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?)",
                (request_id, time.time(), score, label, comment),
            )
        return True

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            found = db.execute(
                "SELECT score, label, comment, ts FROM feedback WHERE request_id = ? ORDER BY ts",
                (request_id,),
            ).fetchall()
        return [{"score": s, "label": lb, "comment": c, "ts": ts} for s, lb, c, ts in found]

    def feedback_scores(self) -> dict[str, float]:
        """Mean feedback score per request id."""
        with self._connect() as db:
            found = db.execute(
                "SELECT request_id, AVG(score) FROM feedback GROUP BY request_id"
            ).fetchall()
        return {request_id: float(score) for request_id, score in found}

    def rows(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every row since a Unix time, oldest first (reports, tests)."""
        with self._connect() as db:
            found = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM requests WHERE ts >= ? ORDER BY ts",
                (since or 0.0,),
            ).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in found]


def parse_since(value: str | None) -> float | None:
    """`since` as Unix seconds, ISO 8601, or a duration back from now (`15m`, `24h`, `7d`)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "since: expected Unix seconds, an ISO 8601 time or a duration like 24h"
        ) from None
    return parsed.timestamp()
