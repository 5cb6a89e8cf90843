"""Stored Responses API responses (`store: true`), for `previous_response_id`, retrieval and
deletion: one SQLite table, each row a response, the conversation up to and including it,
and who may read it (the key that made it). Rows older than the retention are deleted."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    owner TEXT,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL
)
"""
PURGE_EVERY_S = 60.0


class ResponseStore:
    """Blocking calls: the gateway runs them in a thread. `owner` is a key id (None when
    the gateway has no keys): a response is found only by the owner that stored it."""

    def __init__(self, path: str | Path, retention_s: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._purged_at = 0.0

    def save(
        self, response: dict[str, Any], conversation: list[dict[str, Any]], owner: str | None
    ) -> None:
        row = (
            response["id"],
            time.time(),
            owner,
            orjson.dumps(response).decode(),
            orjson.dumps(conversation).decode(),
        )
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
            self._db.commit()
        self._purge()

    def get(
        self, response_id: str, owner: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        oldest = time.time() - self.retention_s
        with self._lock:
            row = self._db.execute(
                "SELECT response, conversation FROM responses WHERE id = ? AND owner IS ? "
                "AND created_at >= ?",
                (response_id, owner, oldest),
            ).fetchone()
        if row is None:
            return None
        return orjson.loads(row[0]), orjson.loads(row[1])

    def delete(self, response_id: str, owner: str | None) -> bool:
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            ).rowcount
            self._db.commit()
        return deleted > 0

    def _purge(self) -> None:
        now = time.time()
        if now - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = now
        with self._lock:
            self._db.execute(
                "DELETE FROM responses WHERE created_at < ?", (now - self.retention_s,)
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
