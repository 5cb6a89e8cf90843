"""Learned task prototypes (the embeddings of prompts whose task the client stated), kept so
that a restart does not forget them and every replica learns what any replica learned: one
table in the ledger's SQLite file or the cluster's PostgreSQL. Embeddings, not prompts, are
stored (raw unit vectors: each replica centres them on its own config's examples)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from storage import Database, Dialect, Migration, Session, SqliteDatabase, migrate


def _table(session: Session) -> None:
    if session.dialect == Dialect.SQLITE:
        key = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    else:
        key = "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    real = session.dialect.real
    session.execute(
        f"CREATE TABLE IF NOT EXISTS task_prototypes ({key}, task TEXT NOT NULL, "
        f"vector TEXT NOT NULL, created_at {real} NOT NULL)"
    )
    session.execute("CREATE INDEX IF NOT EXISTS task_prototypes_task ON task_prototypes (task, id)")


MIGRATIONS = (Migration(1, "task prototypes", _table),)
Learned = tuple[int, str, list[float]]  # id, task, vector


class PrototypeStore:
    """Blocking; `keep` per task: older ones are deleted as new ones come (a task's learned
    prototypes are a window, as in the classifier)."""

    def __init__(self, db: Database | Path, keep: int) -> None:
        self.db: Database = db if isinstance(db, Database) else SqliteDatabase(db)
        migrate(self.db, "tasks", MIGRATIONS)
        self.keep = keep

    def add(self, task: str, vector: Sequence[float]) -> int:
        """Store one; its id."""
        with self.db.transaction() as session:
            (found,) = session.execute(
                "INSERT INTO task_prototypes (task, vector, created_at) VALUES (?, ?, ?) "
                "RETURNING id",
                (task, orjson.dumps(list(vector)).decode(), time.time()),
            )
            session.execute(
                "DELETE FROM task_prototypes WHERE task = ? AND id <= ?",
                (task, int(found[0]) - self.keep),
            )
        return int(found[0])

    def latest(self) -> list[Learned]:
        """The newest `keep` of every task, oldest first (a replica that starts)."""
        with self.db.transaction(write=False) as session:
            found = session.execute(
                "SELECT id, task, vector FROM task_prototypes AS p WHERE id > COALESCE(("
                "SELECT MAX(id) FROM task_prototypes AS q WHERE q.task = p.task), 0) - ? "
                "ORDER BY id",
                (self.keep,),
            )
        return [(int(i), task, orjson.loads(vector)) for i, task, vector in found]

    def since(self, last_id: int) -> list[Learned]:
        """What was learned after `last_id`, by any replica, oldest first."""
        with self.db.transaction(write=False) as session:
            found = session.execute(
                "SELECT id, task, vector FROM task_prototypes WHERE id > ? ORDER BY id",
                (last_id,),
            )
        return [(int(i), task, orjson.loads(vector)) for i, task, vector in found]

    def close(self) -> None:
        self.db.close()
