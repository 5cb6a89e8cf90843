"""SQL storage for the gateway's records: SQLite files (the embedded default) or one
PostgreSQL database (clusters), behind one small blocking interface, with versioned
migrations. Imports nothing of the gateway's other packages."""

from storage._config import DatabaseConfig
from storage._database import (
    Database,
    DatabaseUnavailable,
    Dialect,
    PostgresDatabase,
    Session,
    SqliteDatabase,
    open_database,
)
from storage._migrations import Migration, migrate

__all__ = [
    "Database",
    "DatabaseConfig",
    "DatabaseUnavailable",
    "Dialect",
    "Migration",
    "PostgresDatabase",
    "Session",
    "SqliteDatabase",
    "migrate",
    "open_database",
]
