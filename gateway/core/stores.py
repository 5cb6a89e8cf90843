"""Where each store opens: the cluster's PostgreSQL database when `database.url_env` is set,
else its own SQLite file. One place decides, so every store agrees."""

from __future__ import annotations

from pathlib import Path

from storage import Database, DatabaseConfig, open_database


def open_store(config: DatabaseConfig, sqlite_path: Path) -> Database:
    """Blocking (a pool is opened and waited for); raises `DatabaseUnavailable` when the
    database cannot be reached and ValueError when its variable is not set."""
    return open_database(
        config.url(),
        sqlite_path,
        pool_min=config.pool_min,
        pool_max=config.pool_max,
        connect_timeout_s=config.connect_timeout_s,
    )
