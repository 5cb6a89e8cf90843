"""Where keys, teams and spend live: one SQLite file, owned by the access state (one process
writes it). Every change to a key or team takes the next version number, so replicas fetch
only what changed since the version they have."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from access._records import Principal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, hash TEXT UNIQUE, data TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS principals_version ON principals (version);
CREATE TABLE IF NOT EXISTS spend (
    entity TEXT NOT NULL, period TEXT NOT NULL, usd REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (entity, period)
);
"""


class Store:
    """Keys, teams and spend in SQLite (WAL), with everything read kept in memory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.principals: dict[str, Principal] = {}
        self.by_hash: dict[str, str] = {}
        for pid, key_hash, data in self.db.execute("SELECT id, hash, data FROM principals"):
            self.principals[pid] = Principal.model_validate(orjson.loads(data))
            if key_hash:
                self.by_hash[key_hash] = pid
        self.version = max((p.version for p in self.principals.values()), default=0)
        self._spend: dict[tuple[str, str], float] = {
            (entity, period): usd
            for entity, period, usd in self.db.execute("SELECT entity, period, usd FROM spend")
        }

    def put(self, principal: Principal, key_hash: str | None = None) -> Principal:
        """Insert or replace a record under the next version; returns the stored record."""
        self.version += 1
        stored = principal.model_copy(update={"version": self.version})
        self.db.execute(
            "INSERT INTO principals (id, kind, hash, data, version) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data, version = excluded.version",
            (stored.id, stored.kind, key_hash, orjson.dumps(stored.model_dump()), stored.version),
        )
        self.principals[stored.id] = stored
        if key_hash:
            self.by_hash[key_hash] = stored.id
        return stored

    def find_key(self, key_hash: str) -> Principal | None:
        pid = self.by_hash.get(key_hash)
        return self.principals.get(pid) if pid else None

    def changed_since(self, version: int) -> list[Principal]:
        return [p for p in self.principals.values() if p.version > version]

    def spent(self, entity: str, period: str) -> float:
        return self._spend.get((entity, period), 0.0)

    def add_spend(self, entity: str, period: str, usd: float) -> None:
        """Durable before it returns (WAL, one small transaction)."""
        key = (entity, period)
        self._spend[key] = self._spend.get(key, 0.0) + usd
        self.db.execute(
            "INSERT INTO spend (entity, period, usd, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(entity, period) DO UPDATE SET usd = usd + excluded.usd, "
            "updated = excluded.updated",
            (entity, period, usd, time.time()),
        )

    def spend_of(self, entity: str) -> dict[str, Any]:
        return {period: usd for (who, period), usd in self._spend.items() if who == entity}

    def close(self) -> None:
        self.db.close()
