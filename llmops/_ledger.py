"""The cost ledger: one SQLite row per request (WAL mode), written by the shared batch writer.

The columns are `RequestRecord`'s ledger fields, so renaming a field renames its column (an
older ledger file gains new columns on open) instead of silently writing NULL. Reads open
their own connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from llmops._batch import BatchWriter
from llmops._record import LEDGER_COLUMNS, RequestRecord

COLUMNS = LEDGER_COLUMNS
GROUPS = {
    "backend": "backend",
    "route": "route",
    "key": "key_id",
    "team": "team",
    "task": "task",
    "arm": "arm",
    "template": "template",
}
# What a group's rows also say about it.
_DESCRIBED = {"key": ("key_name", "team", "key_metadata")}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    {", ".join(COLUMNS)},
    PRIMARY KEY (request_id, ts)
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (request_id, ts, score REAL, label, comment);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""
BATCH_S = 0.25
_INSERT = (
    f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)


def _cell(value: Any) -> Any:
    """SQLite takes scalars; mappings (a key's metadata) are stored as JSON text."""
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else value


class LedgerReader(Protocol):
    """What the gateway's endpoints read: a `Ledger` on this host, or the cluster's owner."""

    def flush(self, timeout_s: float = 5.0) -> bool: ...

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]: ...

    def rows(self, since: float | None = None) -> list[dict[str, Any]]: ...

    def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None,
        comment: str | None,
        key_id: str | None = None,
    ) -> bool: ...

    def feedback(self, request_id: str) -> list[dict[str, Any]]: ...

    def feedback_scores(self) -> dict[str, float]: ...


class Ledger:
    """Append-only request ledger at `path` (created with its folder). A sink."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.executescript(_SCHEMA)
            known = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
            for column in COLUMNS:
                if column not in known:  # a ledger written by an older gateway
                    db.execute(f"ALTER TABLE requests ADD COLUMN {column}")
        self.journal_mode = str(mode)
        self._db: sqlite3.Connection | None = None  # the writer's own
        self._db_lock = threading.Lock()  # `insert` may run beside the writer thread
        self._writer: BatchWriter[tuple[Any, ...]] = BatchWriter("ledger", self._insert, BATCH_S)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        return db

    def write(self, record: RequestRecord) -> None:
        """Queue one request's row. Never blocks."""
        self._writer.add(tuple(getattr(record, column) for column in COLUMNS))

    def add(self, row: Mapping[str, Any]) -> None:
        """Queue a row given as a mapping (keys from COLUMNS; missing ones are NULL)."""
        self._writer.add(tuple(row.get(column) for column in COLUMNS))

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write rows (values in COLUMNS order) now, in one transaction (blocking)."""
        with self._db_lock:
            if self._db is None:
                self._db = self._connect()
            with self._db:
                self._db.executemany(_INSERT, [tuple(map(_cell, row)) for row in rows])

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        self.insert(rows)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued row is written (reads, tests, shutdown)."""
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        self._writer.close()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group since a Unix time (blocking: run in a thread).
        Per key, also its name, team and metadata (as of its latest request)."""
        column = GROUPS[group_by]
        described = _DESCRIBED.get(group_by, ())
        extra = "".join(f", MAX({name})" for name in described)
        query = (
            f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
            f"SUM(cost_usd), SUM(estimated_cost_usd), SUM(status >= 400){extra} "
            f"FROM requests WHERE ts >= ? GROUP BY {column} ORDER BY SUM(cost_usd) DESC"
        )
        with self._connect() as db:
            rows = db.execute(query, (since or 0.0,)).fetchall()
        totals = []
        for name, count, prompt, completion, cost, estimated, errors, *more in rows:
            entry = {
                group_by: name,
                "requests": count,
                "prompt_tokens": prompt or 0,
                "completion_tokens": completion or 0,
                "cost_usd": round(cost or 0.0, 10),
                "estimated_cost_usd": round(estimated or 0.0, 10),
                "errors": errors or 0,
            }
            for field_name, value in zip(described, more, strict=True):
                entry[field_name] = (
                    orjson.loads(value) if field_name == "key_metadata" and value else value
                )
            totals.append(entry)
        return totals

    def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None,
        comment: str | None,
        key_id: str | None = None,
    ) -> bool:
        """Attach an outcome to a logged request; False if no such request (blocking).
        `key_id`: only a request that key made (a key scores its own traffic only)."""
        self.flush(2.0)
        query = "SELECT 1 FROM requests WHERE request_id = ?"
        args: tuple[str, ...] = (request_id,)
        if key_id is not None:
            query, args = query + " AND key_id = ?", (request_id, key_id)
        with self._connect() as db:
            known = db.execute(query + " LIMIT 1", args).fetchone()
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
