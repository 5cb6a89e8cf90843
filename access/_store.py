"""Where keys, teams and spend live: a SQLite file or the cluster's PostgreSQL database
(`database:`), owned by the access state (one process writes it). Every change to a key or team
takes the next version number, so replicas fetch only what changed since the version they have.

Spend is counted in memory at once (the limits read it there) and written behind, in batches
every SAVE_EVERY_S by a thread of its own, so no request waits on the database, even a remote
one. In a database outage it stays in memory and is written once the database is back: an
outage loses no spend unless the state's process dies during it; a crash loses at most the
last SAVE_EVERY_S."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from access._records import Principal
from storage import (
    Database,
    DatabaseUnavailable,
    Migration,
    Session,
    SqliteDatabase,
    migrate,
)

logger = logging.getLogger("ray.serve")


def _tables(session: Session) -> None:
    real = session.dialect.real
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
SAVE_EVERY_S = 0.25
RETRY_MAX_S = 5.0
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
        self._unsaved: dict[tuple[str, str], float] = {}  # spend not yet in the database
        self._lock = threading.Lock()  # `_unsaved`: added to on the loop, saved by the thread
        self._stop = threading.Event()
        self._saver = threading.Thread(target=self._save_loop, name="spend-saver", daemon=True)
        self._saver.start()

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
        """Counted at once; in the database within SAVE_EVERY_S, or once it is back."""
        key = (entity, period)
        self._spend[key] = self._spend.get(key, 0.0) + usd
        with self._lock:
            self._unsaved[key] = self._unsaved.get(key, 0.0) + usd

    def _save_loop(self) -> None:
        wait = SAVE_EVERY_S
        while not self._stop.wait(wait):
            wait = SAVE_EVERY_S if self.save_spend() else min(RETRY_MAX_S, wait * 2)

    def save_spend(self) -> bool:
        """Write the spend not yet in the database; False in an outage (kept for later)."""
        with self._lock:
            pending, self._unsaved = self._unsaved, {}
        if not pending:
            return True
        now = time.time()
        rows = [(entity, period, usd, now) for (entity, period), usd in pending.items()]
        try:
            with self.db.transaction() as session:
                session.executemany(_ADD_SPEND, rows)
        except DatabaseUnavailable as exc:
            with self._lock:  # back, under what was added meanwhile
                for key, usd in pending.items():
                    self._unsaved[key] = self._unsaved.get(key, 0.0) + usd
            logger.warning("spend kept in memory until the database is back: %s", exc)
            return False
        return True

    def spend_of(self, entity: str) -> dict[str, Any]:
        return {period: usd for (who, period), usd in self._spend.items() if who == entity}

    def close(self) -> None:
        self._stop.set()
        self._saver.join(5)
        self.save_spend()
        self.db.close()
