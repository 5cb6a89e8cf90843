"""Where entries live: in this replica (`ReplicaEntries`: an LRU and a vector index in
memory), or in the `database:` (`DatabaseEntries`), which every ingress replica of a cluster
shares: an answer stored by one is a hit on all, a purge reaches all, and a model change one
sees retires the entries of every one. Semantic search over the database reads the vectors of
one partition (an index on it) and ranks them here: a partition is one conversation context,
so it holds few rows, and no vector extension is needed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import orjson

from cache._semantic import VectorIndex, nearest, unit
from cache._store import Entry, EntryStore
from storage import Database, Dialect, Migration, Session, migrate

PRUNE_EVERY = 200  # writes between deletions of expired and surplus entries
PARTITION_READ = 2000  # vectors of a partition read per search, newest first


class Entries(Protocol):
    """What the cache keeps its entries in (blocking calls; `blocking` says whether they do
    I/O and belong in a thread)."""

    blocking: bool

    def get(self, key: str) -> Entry | None: ...

    def put(self, entry: Entry, ttl_s: float, vector: list[float] | None) -> None: ...

    def search(
        self, partition: str, vector: list[float], least: float, limit: int
    ) -> list[tuple[float, Entry]]: ...

    def purge(self, route: str | None, backend: str | None) -> int: ...

    def saw_model(self, backend: str, model: str | None) -> None:
        """Note the model a live answer named: entries another model wrote are stale."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ReplicaEntries:
    """Entries in this process (the embedded default)."""

    blocking = False

    def __init__(
        self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.index = VectorIndex()
        self.store = EntryStore(max_entries, max_bytes, self._forget, clock)

    def _forget(self, entry: Entry) -> None:
        if entry.partition is not None:
            self.index.remove(entry.key)

    def __len__(self) -> int:
        return len(self.store)

    def get(self, key: str) -> Entry | None:
        return self.store.get(key)

    def put(self, entry: Entry, ttl_s: float, vector: list[float] | None) -> None:
        self.store.put(entry, ttl_s)
        if entry.partition is not None and vector is not None and self.store.get(entry.key):
            self.index.add(entry.partition, entry.key, vector)

    def search(
        self, partition: str, vector: list[float], least: float, limit: int
    ) -> list[tuple[float, Entry]]:
        found = []
        for similarity, key in self.index.search(partition, vector, least, limit):
            entry = self.store.get(key)
            if entry is not None:
                found.append((similarity, entry))
        return found

    def purge(self, route: str | None, backend: str | None) -> int:
        return self.store.purge(route, backend)

    def saw_model(self, backend: str, model: str | None) -> None:
        self.store.saw_model(backend, model)

    def describe(self) -> dict[str, Any]:
        return {"store": "replica", "entries": len(self.store), "bytes": self.store.bytes,
                "vectors": len(self.index)}  # fmt: skip

    def close(self) -> None:
        pass


def _tables(session: Session) -> None:
    blob = "BYTEA" if session.dialect == Dialect.POSTGRESQL else "BLOB"
    real, big = session.dialect.real, session.dialect.bigint
    session.execute(
        f"CREATE TABLE cache_entries (key TEXT PRIMARY KEY, route TEXT, backend TEXT NOT NULL, "
        f"model TEXT, native {big} NOT NULL, body {blob}, chunks {blob}, usage TEXT, "
        f"expires {real} NOT NULL, text TEXT, part TEXT, vector {blob}, size {big} NOT NULL)"
    )
    session.execute("CREATE INDEX cache_entries_part ON cache_entries (part, expires)")
    session.execute("CREATE INDEX cache_entries_expires ON cache_entries (expires)")
    session.execute("CREATE TABLE cache_models (backend TEXT PRIMARY KEY, model TEXT NOT NULL)")


MIGRATIONS = (Migration(1, "response cache entries and the models seen", _tables),)
_COLUMNS = "key, route, backend, model, native, body, chunks, usage, expires, text, part"
_UPSERT = (
    f"INSERT INTO cache_entries ({_COLUMNS}, vector, size) VALUES ({', '.join('?' * 13)}) "
    "ON CONFLICT (key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in [*_COLUMNS.split(", ")[1:], "vector", "size"])
)


def _pack(chunks: tuple[bytes, ...]) -> bytes:
    return b"".join(len(chunk).to_bytes(4, "big") + chunk for chunk in chunks)


def _unpack(data: bytes) -> tuple[bytes, ...]:
    chunks, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return tuple(chunks)


def _entry(row: Any) -> Entry:
    key, route, backend, model, native, body, chunks, usage, expires, text, part = row[:11]
    return Entry(
        key, route, backend, model, bool(native),
        body=bytes(body) if body is not None else None,
        chunks=_unpack(bytes(chunks)) if chunks else (),
        usage=orjson.loads(usage) if usage else {},
        expires=float(expires), text=text, partition=part,
    )  # fmt: skip


class DatabaseEntries:
    """Entries in the shared database (clusters). Times are wall-clock: replicas share them."""

    blocking = True

    def __init__(
        self,
        db: Database,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self.clock = clock
        self._writes = 0
        migrate(db, "cache", MIGRATIONS)

    def get(self, key: str) -> Entry | None:
        with self.db.transaction(write=False) as session:
            rows = session.execute(
                f"SELECT {', '.join('e.' + c for c in _COLUMNS.split(', '))}, m.model "
                "FROM cache_entries e LEFT JOIN cache_models m ON m.backend = e.backend "
                "WHERE e.key = ?",
                (key,),
            )
        if not rows:
            return None
        entry, latest = _entry(rows[0]), rows[0][11]
        if entry.expires <= self.clock() or (entry.model and latest and latest != entry.model):
            with self.db.transaction() as session:
                session.execute("DELETE FROM cache_entries WHERE key = ?", (key,))
            return None
        return entry

    def put(self, entry: Entry, ttl_s: float, vector: list[float] | None) -> None:
        if entry.size > self._max_bytes:
            return
        row = None if vector is None else unit(vector)
        packed = None if row is None else row.tobytes()  # unit rows, as the replica's index
        values = (
            entry.key, entry.route, entry.backend, entry.model, int(entry.native), entry.body,
            _pack(entry.chunks) if entry.chunks else None, orjson.dumps(entry.usage).decode(),
            self.clock() + ttl_s, entry.text, entry.partition, packed, entry.size,
        )  # fmt: skip
        with self.db.transaction() as session:
            session.execute(_UPSERT, values)
        self._writes += 1
        if self._writes % PRUNE_EVERY == 1:
            self.prune()

    def prune(self) -> None:
        """Expired entries out, then the oldest beyond the bounds (count, then bytes)."""
        with self.db.transaction() as session:
            session.execute("DELETE FROM cache_entries WHERE expires <= ?", (self.clock(),))
            count, size = session.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_entries"
            )[0]
            surplus = max(int(count) - self._max_entries, 0)
            if int(size) > self._max_bytes:
                surplus = max(surplus, int(count) // 10)  # a tenth at a time, oldest first
            if surplus:
                session.execute(
                    "DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries "
                    "ORDER BY expires LIMIT ?)",
                    (surplus,),
                )

    def search(
        self, partition: str, vector: list[float], least: float, limit: int
    ) -> list[tuple[float, Entry]]:
        with self.db.transaction(write=False) as session:
            rows = session.execute(
                "SELECT key, vector FROM cache_entries WHERE part = ? AND expires > ? "
                "AND vector IS NOT NULL ORDER BY expires DESC LIMIT ?",
                (partition, self.clock(), PARTITION_READ),
            )
        if not rows:
            return []
        matrix = np.vstack([np.frombuffer(bytes(v), dtype=np.float32) for _, v in rows])
        found = []
        for similarity, index in nearest(matrix, vector, least, limit):
            entry = self.get(rows[index][0])
            if entry is not None:
                found.append((similarity, entry))
        return found

    def purge(self, route: str | None, backend: str | None) -> int:
        where, params = [], []
        for column, value in (("route", route), ("backend", backend)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        with self.db.transaction() as session:
            session.execute(
                "DELETE FROM cache_entries" + (" WHERE " + " AND ".join(where) if where else ""),
                params,
            )
            return session.rowcount

    def saw_model(self, backend: str, model: str | None) -> None:
        """A write each time: the cache calls it when its backend's model changed only."""
        if not model:
            return
        with self.db.transaction() as session:
            session.execute(
                "INSERT INTO cache_models (backend, model) VALUES (?, ?) "
                "ON CONFLICT (backend) DO UPDATE SET model = excluded.model",
                (backend, model),
            )

    def describe(self) -> dict[str, Any]:
        with self.db.transaction(write=False) as session:
            count, size, vectors = session.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(vector) FROM cache_entries "
                "WHERE expires > ?",
                (self.clock(),),
            )[0]
        return {"store": "database", "entries": int(count), "bytes": int(size),
                "vectors": int(vectors)}  # fmt: skip

    def close(self) -> None:
        self.db.close()
