"""Where keys, teams and spend live: a SQLite file or the cluster's PostgreSQL database
(`database:`), owned by the access state (one process writes it). Every change to a key or team
takes the next version number, so replicas fetch only what changed since the version they have.

Spend is durable before `add_spend` returns. In a database outage it is kept in memory and
written with the next spend that gets through (the counters the limits read are in memory
either way), so an outage loses no spend unless the state's process dies during it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson

from access._records import Principal
from storage import (
    Database,
    DatabaseUnavailable,
    Dialect,
    Migration,
    Session,
    SqliteDatabase,
    migrate,
)

logger = logging.getLogger("ray.serve")


def _tables(session: Session) -> None:
    real = "REAL" if session.dialect == Dialect.SQLITE else "DOUBLE PRECISION"
    session.execute(
        "CREATE TABLE IF NOT EXISTS principals (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "hash TEXT UNIQUE, data TEXT NOT NULL, version INTEGER NOT NULL)"
    )
    session.execute("CREATE INDEX IF NOT EXISTS principals_version ON principals (version)")
    session.execute(
        f"CREATE TABLE IF NOT EXISTS spend (entity TEXT NOT NULL, period TEXT NOT NULL, "
        f"usd {real} NOT NULL, updated {real} NOT NULL, PRIMARY KEY (entity, period))"
    )


MIGRATIONS = (Migration(1, "principals and spend", _tables),)
_ADD_SPEND = (
    "INSERT INTO spend (entity, period, usd, updated) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (entity, period) DO UPDATE SET usd = spend.usd + excluded.usd, "
    "updated = excluded.updated"
)


class Store:
    """Keys, teams and spend in `db` (a path: a SQLite file), everything read kept in memory."""

    def __init__(self, db: Database | Path) -> None:
        self.db: Database = db if isinstance(db, Database) else SqliteDatabase(db)
        migrate(self.db, "access", MIGRATIONS)
        self.principals: dict[str, Principal] = {}
        self.by_hash: dict[str, str] = {}
        with self.db.transaction(write=False) as session:
            stored = session.execute("SELECT id, hash, data FROM principals")
            spend = session.execute("SELECT entity, period, usd FROM spend")
        for pid, key_hash, data in stored:
            self.principals[pid] = Principal.model_validate(orjson.loads(data))
            if key_hash:
                self.by_hash[key_hash] = pid
        self.version = max((p.version for p in self.principals.values()), default=0)
        self._spend: dict[tuple[str, str], float] = {
            (entity, period): float(usd) for entity, period, usd in spend
        }
        self._unsaved: dict[tuple[str, str], float] = {}  # spend an outage kept from the db

    def put(self, principal: Principal, key_hash: str | None = None) -> Principal:
        """Insert or replace a record under the next version; returns the stored record.
        Raises `DatabaseUnavailable` in an outage (nothing changes then)."""
        stored = principal.model_copy(update={"version": self.version + 1})
        with self.db.transaction() as session:
            session.execute(
                "INSERT INTO principals (id, kind, hash, data, version) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data, "
                "version = excluded.version",
                (stored.id, stored.kind, key_hash, orjson.dumps(stored.model_dump()).decode(),
                 stored.version),
            )  # fmt: skip
        self.version = stored.version
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
        """Counted at once; durable before it returns, or once the database is back."""
        key = (entity, period)
        self._spend[key] = self._spend.get(key, 0.0) + usd
        self._unsaved[key] = self._unsaved.get(key, 0.0) + usd
        self.save_spend()

    def save_spend(self) -> bool:
        """Write the spend not yet in the database; False in an outage (kept for later)."""
        if not self._unsaved:
            return True
        now = time.time()
        rows = [(entity, period, usd, now) for (entity, period), usd in self._unsaved.items()]
        try:
            with self.db.transaction() as session:
                session.executemany(_ADD_SPEND, rows)
        except DatabaseUnavailable as exc:
            logger.warning("spend kept in memory until the database is back: %s", exc)
            return False
        self._unsaved.clear()
        return True

    def spend_of(self, entity: str) -> dict[str, Any]:
        return {period: usd for (who, period), usd in self._spend.items() if who == entity}

    def close(self) -> None:
        self.save_spend()
        self.db.close()
