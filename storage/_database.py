"""One blocking interface over SQLite and PostgreSQL: a `Database` hands out transactions
(`Session`s); SQL is written once with `?` placeholders and portable syntax (`ON CONFLICT`,
`RETURNING`, `CASE`, `SAVEPOINT`), and PostgreSQL gets `%s` instead. Callers run it in threads."""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"

    @property
    def real(self) -> str:
        """The column type of a float."""
        return "REAL" if self is Dialect.SQLITE else "DOUBLE PRECISION"

    @property
    def bigint(self) -> str:
        """The column type of a count (SQLite's INTEGER is 64-bit already)."""
        return "INTEGER" if self is Dialect.SQLITE else "BIGINT"

    @property
    def blob(self) -> str:
        """The column type of bytes."""
        return "BLOB" if self is Dialect.SQLITE else "BYTEA"


class DatabaseUnavailable(Exception):
    """The database could not be reached or answered with an operational error (an outage,
    not a mistake in the SQL): writers spool, readers answer 503."""


class Session(ABC):
    """One transaction: committed when its block ends, rolled back if it raises."""

    dialect: Dialect

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; the rows it returns (none for most writes)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @property
    @abstractmethod
    def rowcount(self) -> int:
        """Rows the last statement changed."""


class Database(ABC):
    """Shared by the stores of a process: each holds a reference (`acquire`) and closes it;
    the connections close with the last one (one pool per process, not one per store)."""

    dialect: Dialect

    def __init__(self) -> None:
        self._users = 1
        self._users_lock = threading.Lock()

    def acquire(self) -> Database:
        """Another reference, for another store: close it when that store closes."""
        with self._users_lock:
            if self._users <= 0:
                raise RuntimeError(f"{self.name}: already closed")
            self._users += 1
        return self

    def close(self) -> None:
        with self._users_lock:
            self._users -= 1
            if self._users != 0:
                return
        self._close()

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Session]:
        """A transaction; `write=False` for reads (SQLite then takes no write lock).
        Raises `DatabaseUnavailable` when the database cannot be reached."""
        yield  # type: ignore[misc]

    @property
    @abstractmethod
    def name(self) -> str:
        """Where it is, without any secret (logs, errors, status)."""


# -- SQLite ------------------------------------------------------------------------------


class _SqliteSession(Session):
    dialect = Dialect.SQLITE

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._count = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._db.execute(sql, tuple(params))
        self._count = cursor.rowcount
        return cursor.fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._count = self._db.executemany(sql, rows).rowcount

    @property
    def rowcount(self) -> int:
        return self._count


class SqliteDatabase(Database):
    """A SQLite file in WAL mode. Each thread has its own connection; WAL lets readers run
    beside the one writer, and writers on one host (replicas sharing the file) take turns."""

    dialect = Dialect.SQLITE
    TIMEOUT_S = 30.0

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.journal_mode = str(self._connection().execute("PRAGMA journal_mode=WAL").fetchone()[0])

    @property
    def name(self) -> str:
        return str(self.path)

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=self.TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Session]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(f"{self.path}: {exc}") from exc
        try:
            yield _SqliteSession(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _close(self) -> None:
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
        self._local = threading.local()


# -- PostgreSQL --------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgSession(Session):
    dialect = Dialect.POSTGRESQL

    def __init__(self, connection: Any) -> None:
        self._cursor = connection.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(_pg(sql), tuple(params))
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(_pg(sql), rows)

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class PostgresDatabase(Database):
    """A pool of connections to one PostgreSQL database (psycopg 3). A connection is checked
    as it is taken, so one broken by a server restart is replaced, not handed out."""

    dialect = Dialect.POSTGRESQL
    # How long a transaction waits for a connection: longer is an outage (writers spool,
    # readers answer 503), never a stall of whoever asked.
    WAIT_S = 2.0

    def __init__(
        self, url: str, *, pool_min: int = 1, pool_max: int = 8, connect_timeout_s: float = 10.0
    ) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        super().__init__()
        self._errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        )
        self._timeout_s = connect_timeout_s
        self._pool = ConnectionPool(
            url,
            min_size=pool_min,
            max_size=max(pool_min, pool_max),
            open=False,
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, int(connect_timeout_s))},
            reconnect_timeout=365 * 86400.0,  # an outage is waited out, never given up on
            name="gateway",
        )
        self._host = _where(url)
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except Exception as exc:
            self._pool.close()
            raise DatabaseUnavailable(
                f"PostgreSQL at {self._host} not reachable within {connect_timeout_s:g} s "
                f"({type(exc).__name__})"
            ) from None

    @property
    def name(self) -> str:
        return f"postgresql://{self._host}"

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Session]:
        from psycopg_pool import PoolTimeout

        outages: tuple[type[BaseException], ...] = (PoolTimeout, *self._errors)
        try:
            with self._pool.connection(timeout=self.WAIT_S) as connection:
                yield _PgSession(connection)
        except outages as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self._host}: {type(exc).__name__}: {_first_line(exc)}"
            ) from None

    def _close(self) -> None:
        self._pool.close()


def _where(url: str) -> str:
    """host:port/db of a URL, never its user or password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


def _first_line(exc: BaseException) -> str:
    """The driver's message, first line only (libpq's messages name host and port, never the
    password)."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


def open_database(
    url: str | None,
    path: Path,
    *,
    pool_min: int = 1,
    pool_max: int = 8,
    connect_timeout_s: float = 10.0,
) -> Database:
    """PostgreSQL at `url`, or, without one, the SQLite file at `path`."""
    if url is None:
        return SqliteDatabase(path)
    return PostgresDatabase(
        url, pool_min=pool_min, pool_max=pool_max, connect_timeout_s=connect_timeout_s
    )
