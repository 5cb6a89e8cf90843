"""Versioned schema migrations: each store (ledger, access, responses, tasks) lists its steps;
`migrate` applies the ones a database lacks, in order, once, whoever runs it first. Steps run
when a store opens, that is at deploy: an older schema is upgraded in place before the first
request. Replicas that start together take turns (a PostgreSQL advisory lock; SQLite's write
lock), so a step never runs twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from storage._database import Database, Dialect, Session

# One number for every store's migrations in a database (`hashtext` is not stable API).
_LOCK_ID = 0x6761_7465  # "gate"
_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (component, version)
)"""

Step = str | Mapping[Dialect, str] | Callable[[Session], None]


@dataclass(frozen=True)
class Migration:
    """One step: SQL for every dialect (`;`-separated statements), SQL per dialect, or a
    function of the session (a step that depends on what the schema holds)."""

    version: int
    name: str
    step: Step

    def apply(self, session: Session) -> None:
        if callable(self.step):
            self.step(session)
            return
        sql = self.step if isinstance(self.step, str) else self.step[session.dialect]
        for statement in split(sql):
            session.execute(statement)


def split(sql: str) -> list[str]:
    """Statements of a script (no `;` inside our DDL's strings)."""
    return [part.strip() for part in sql.split(";") if part.strip()]


def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the steps of `component` this database has not had; the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migration versions must increase: {versions}")
    with db.transaction() as session:
        if session.dialect == Dialect.POSTGRESQL:
            session.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_ID,))
        session.execute(_TABLE)
        done = {
            version
            for (version,) in session.execute(
                "SELECT version FROM schema_migrations WHERE component = ?", (component,)
            )
        }
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            migration.apply(session)
            session.execute(
                "INSERT INTO schema_migrations (component, version, name, applied_at) "
                "VALUES (?, ?, ?, ?)",
                (component, migration.version, migration.name, time.time()),
            )
            applied.append(migration.version)
    return applied
