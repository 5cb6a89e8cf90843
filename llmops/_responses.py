"""Stored Responses API responses (`store: true`), for `previous_response_id`, retrieval and
deletion: one table (in the ledger's SQLite file, or the cluster's PostgreSQL database, where
every replica finds what any replica stored), each row a response, the conversation up to and
including it, and who may read it (the key that made it). Rows older than the retention are
deleted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from storage import Database, Migration, Session, SqliteDatabase, migrate


def _table(session: Session) -> None:
    real = session.dialect.real
    session.execute(
        f"CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created_at {real} NOT "
        "NULL, owner TEXT, response TEXT NOT NULL, conversation TEXT NOT NULL)"
    )
    session.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at)")


MIGRATIONS = (Migration(1, "responses", _table),)
PURGE_EVERY_S = 60.0
ANYONE = ""  # the owner stored for a gateway without keys (NULL never matches `=`)


class ResponseStore:
    """Blocking calls: the gateway runs them in a thread. `owner` is a key id (None when
    the gateway has no keys): a response is found only by the owner that stored it."""

    def __init__(self, db: Database | Path | str, retention_s: float) -> None:
        self.db: Database = db if isinstance(db, Database) else SqliteDatabase(Path(db))
        migrate(self.db, "responses", MIGRATIONS)
        self.retention_s = retention_s
        self._purged_at = 0.0

    def save(
        self, response: dict[str, Any], conversation: list[dict[str, Any]], owner: str | None
    ) -> None:
        row = (
            response["id"],
            time.time(),
            owner or ANYONE,
            orjson.dumps(response).decode(),
            orjson.dumps(conversation).decode(),
        )
        with self.db.transaction() as session:
            session.execute(
                "INSERT INTO responses (id, created_at, owner, response, conversation) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET created_at = "
                "excluded.created_at, owner = excluded.owner, response = excluded.response, "
                "conversation = excluded.conversation",
                row,
            )
        self._purge()

    def get(
        self, response_id: str, owner: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        oldest = time.time() - self.retention_s
        with self.db.transaction(write=False) as session:
            found = session.execute(
                "SELECT response, conversation FROM responses WHERE id = ? AND "
                "COALESCE(owner, '') = ? AND created_at >= ?",
                (response_id, owner or ANYONE, oldest),
            )
        if not found:
            return None
        return orjson.loads(found[0][0]), orjson.loads(found[0][1])

    def delete(self, response_id: str, owner: str | None) -> bool:
        with self.db.transaction() as session:
            session.execute(
                "DELETE FROM responses WHERE id = ? AND COALESCE(owner, '') = ?",
                (response_id, owner or ANYONE),
            )
            return session.rowcount > 0

    def _purge(self) -> None:
        now = time.time()
        if now - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = now
        with self.db.transaction() as session:
            session.execute("DELETE FROM responses WHERE created_at < ?", (now - self.retention_s,))

    def close(self) -> None:
        self.db.close()
