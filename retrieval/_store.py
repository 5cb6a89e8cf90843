"""Files, vector stores and their chunks in SQL (the ledger's SQLite file, or the cluster's
PostgreSQL database, where every replica sees what any replica stored). Blocking calls: the
service runs them in a thread. Each object records its owner (a key id, `""` without keys)
and the owner's team."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from retrieval._index import Index, Vector
from storage import Database, Migration, Session, migrate


def _tables(session: Session) -> None:
    dialect = session.dialect
    real, big, blob = dialect.real, dialect.bigint, dialect.blob
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    for sql in (
        f"CREATE TABLE IF NOT EXISTS rag_files (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        f"team TEXT, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes {big} NOT NULL, "
        f"created_at {real} NOT NULL, content {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rag_files_owner ON rag_files (owner, created_at)",
        f"CREATE TABLE IF NOT EXISTS rag_stores (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
        f"team TEXT, name TEXT, metadata TEXT NOT NULL, created_at {real} NOT NULL, "
        f"last_active_at {real} NOT NULL, version {big} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS rag_store_files (store_id TEXT NOT NULL, file_id TEXT NOT "
        f"NULL, batch_id TEXT, status TEXT NOT NULL, attributes TEXT NOT NULL, chunking TEXT NOT "
        f"NULL, usage_bytes {big} NOT NULL, last_error TEXT, created_at {real} NOT NULL, "
        "PRIMARY KEY (store_id, file_id))",
        "CREATE INDEX IF NOT EXISTS rag_store_files_file ON rag_store_files (file_id)",
        f"CREATE TABLE IF NOT EXISTS rag_chunks (id {serial}, store_id TEXT NOT NULL, file_id "
        f"TEXT NOT NULL, page INTEGER NOT NULL, text TEXT NOT NULL, vector {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rag_chunks_store ON rag_chunks (store_id, id)",
        f"CREATE TABLE IF NOT EXISTS rag_batches (id TEXT PRIMARY KEY, store_id TEXT NOT NULL, "
        f"created_at {real} NOT NULL)",
    ):
        session.execute(sql)


MIGRATIONS = (Migration(1, "files, vector stores, chunks", _tables),)


@dataclass(frozen=True)
class Owner:
    """Who asks: a key (`""` for a gateway without keys) and its team; an admin sees all."""

    key: str
    team: str | None = None
    admin: bool = False

    def clause(self, alias: str = "") -> tuple[str, tuple[Any, ...]]:
        """SQL limiting rows to what this owner may see."""
        if self.admin:
            return "1 = 1", ()
        prefix = f"{alias}." if alias else ""
        if self.team:
            return f"({prefix}owner = ? OR {prefix}team = ?)", (self.key, self.team)
        return f"{prefix}owner = ?", (self.key,)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, "retrieval", MIGRATIONS)

    # -- files -------------------------------------------------------------------------
    def add_file(self, row: dict[str, Any], content: bytes) -> None:
        with self.db.transaction() as s:
            s.execute(
                "INSERT INTO rag_files (id, owner, team, filename, purpose, bytes, created_at, "
                "content) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["id"],
                    row["owner"],
                    row["team"],
                    row["filename"],
                    row["purpose"],
                    row["bytes"],
                    row["created_at"],
                    content,
                ),
            )

    def stored_bytes(self, owner: Owner) -> int:
        where, params = Owner(owner.key, owner.team).clause()
        with self.db.transaction(write=False) as s:
            found = s.execute(
                f"SELECT COALESCE(SUM(bytes), 0) FROM rag_files WHERE {where}", params
            )
        return int(found[0][0])

    def files(
        self, owner: Owner, ids: Sequence[str] | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = owner.clause()
        sql = f"SELECT id, filename, purpose, bytes, created_at FROM rag_files WHERE {where}"
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            params += tuple(ids)
        if purpose:
            sql += " AND purpose = ?"
            params += (purpose,)
        with self.db.transaction(write=False) as s:
            rows = s.execute(sql + " ORDER BY created_at, id", params)
        keys = ("id", "filename", "purpose", "bytes", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def content(self, owner: Owner, file_id: str) -> bytes | None:
        where, params = owner.clause()
        with self.db.transaction(write=False) as s:
            found = s.execute(
                f"SELECT content FROM rag_files WHERE id = ? AND {where}", (file_id, *params)
            )
        return bytes(found[0][0]) if found else None

    def delete_file(self, owner: Owner, file_id: str) -> bool:
        """The file, and its chunks in every store it was in (their versions move on)."""
        where, params = owner.clause()
        with self.db.transaction() as s:
            s.execute(f"DELETE FROM rag_files WHERE id = ? AND {where}", (file_id, *params))
            if s.rowcount == 0:
                return False
            stores = [
                r[0]
                for r in s.execute(
                    "SELECT store_id FROM rag_store_files WHERE file_id = ?", (file_id,)
                )
            ]
            for store_id in stores:
                self._detach(s, store_id, file_id)
        return True

    # -- stores ------------------------------------------------------------------------
    def add_store(self, row: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            s.execute(
                "INSERT INTO rag_stores (id, owner, team, name, metadata, created_at, "
                "last_active_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    row["id"],
                    row["owner"],
                    row["team"],
                    row["name"],
                    _json(row["metadata"]),
                    row["created_at"],
                    row["created_at"],
                ),
            )

    def stores(self, owner: Owner, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        where, params = owner.clause("v")
        sql = (
            "SELECT v.id, v.name, v.metadata, v.created_at, v.last_active_at, v.version, "
            "COALESCE(SUM(f.usage_bytes), 0), "
            "COALESCE(SUM(CASE WHEN f.status = 'completed' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN f.status = 'failed' THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN f.status = 'in_progress' THEN 1 ELSE 0 END), 0) "
            f"FROM rag_stores v LEFT JOIN rag_store_files f ON f.store_id = v.id WHERE {where}"
        )
        if ids is not None:
            sql += f" AND v.id IN ({', '.join('?' * len(ids))})"
            params += tuple(ids)
        sql += " GROUP BY v.id, v.name, v.metadata, v.created_at, v.last_active_at, v.version"
        with self.db.transaction(write=False) as s:
            rows = s.execute(sql + " ORDER BY v.created_at, v.id", params)
        keys = (
            "id",
            "name",
            "metadata",
            "created_at",
            "last_active_at",
            "version",
            "usage_bytes",
            "completed",
            "failed",
            "in_progress",
        )
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for row in out:
            row["metadata"] = orjson.loads(row["metadata"])
        return out

    def update_store(self, owner: Owner, store_id: str, name: Any, metadata: Any) -> bool:
        where, params = owner.clause()
        sets, values = ["last_active_at = ?"], list[Any]([time.time()])
        if name is not None:
            sets.append("name = ?")
            values.append(name)
        if metadata is not None:
            sets.append("metadata = ?")
            values.append(_json(metadata))
        with self.db.transaction() as s:
            s.execute(
                f"UPDATE rag_stores SET {', '.join(sets)} WHERE id = ? AND {where}",
                (*values, store_id, *params),
            )
            return s.rowcount > 0

    def delete_store(self, owner: Owner, store_id: str) -> bool:
        where, params = owner.clause()
        with self.db.transaction() as s:
            s.execute(f"DELETE FROM rag_stores WHERE id = ? AND {where}", (store_id, *params))
            if s.rowcount == 0:
                return False
            for table in ("rag_store_files", "rag_chunks", "rag_batches"):
                s.execute(f"DELETE FROM {table} WHERE store_id = ?", (store_id,))
        return True

    # -- a store's files -----------------------------------------------------------------
    def attach(
        self, store_id: str, row: dict[str, Any], chunks: Sequence[tuple[int, str, bytes]]
    ) -> None:
        """A file's chunks in a store (any earlier copy of it replaced); the version moves."""
        with self.db.transaction() as s:
            self._detach(s, store_id, row["file_id"])
            s.execute(
                "INSERT INTO rag_store_files (store_id, file_id, batch_id, status, attributes, "
                "chunking, usage_bytes, last_error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    store_id,
                    row["file_id"],
                    row.get("batch_id"),
                    row["status"],
                    _json(row["attributes"]),
                    _json(row["chunking"]),
                    row["usage_bytes"],
                    _json(row["last_error"]) if row.get("last_error") else None,
                    row["created_at"],
                ),
            )
            s.executemany(
                "INSERT INTO rag_chunks (store_id, file_id, page, text, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                [(store_id, row["file_id"], page, text, vector) for page, text, vector in chunks],
            )
            s.execute(
                "UPDATE rag_stores SET version = version + 1, last_active_at = ? WHERE id = ?",
                (time.time(), store_id),
            )

    def _detach(self, s: Session, store_id: str, file_id: str) -> None:
        s.execute(
            "DELETE FROM rag_store_files WHERE store_id = ? AND file_id = ?", (store_id, file_id)
        )
        if s.rowcount:
            s.execute(
                "DELETE FROM rag_chunks WHERE store_id = ? AND file_id = ?", (store_id, file_id)
            )
            s.execute("UPDATE rag_stores SET version = version + 1 WHERE id = ?", (store_id,))

    def detach(self, store_id: str, file_id: str) -> bool:
        with self.db.transaction() as s:
            self._detach(s, store_id, file_id)
            return s.rowcount > 0

    def store_files(
        self, store_id: str, file_id: str | None = None, batch_id: str | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT f.file_id, f.batch_id, f.status, f.attributes, f.chunking, f.usage_bytes, "
            "f.last_error, f.created_at, r.filename FROM rag_store_files f LEFT JOIN rag_files r "
            "ON r.id = f.file_id WHERE f.store_id = ?"
        )
        params: tuple[Any, ...] = (store_id,)
        for column, value in (("file_id", file_id), ("batch_id", batch_id)):
            if value is not None:
                sql += f" AND f.{column} = ?"
                params += (value,)
        with self.db.transaction(write=False) as s:
            rows = s.execute(sql + " ORDER BY f.created_at, f.file_id", params)
        keys = (
            "file_id",
            "batch_id",
            "status",
            "attributes",
            "chunking",
            "usage_bytes",
            "last_error",
            "created_at",
            "filename",
        )
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for row in out:
            row["attributes"] = orjson.loads(row["attributes"])
            row["chunking"] = orjson.loads(row["chunking"])
            row["last_error"] = orjson.loads(row["last_error"]) if row["last_error"] else None
        return out

    def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            s.execute(
                "UPDATE rag_store_files SET attributes = ? WHERE store_id = ? AND file_id = ?",
                (_json(attributes), store_id, file_id),
            )
            s.execute("UPDATE rag_stores SET version = version + 1 WHERE id = ?", (store_id,))

    def add_batch(self, batch_id: str, store_id: str, created_at: float) -> None:
        with self.db.transaction() as s:
            s.execute(
                "INSERT INTO rag_batches (id, store_id, created_at) VALUES (?, ?, ?)",
                (batch_id, store_id, created_at),
            )

    def batch(self, store_id: str, batch_id: str) -> float | None:
        with self.db.transaction(write=False) as s:
            found = s.execute(
                "SELECT created_at FROM rag_batches WHERE id = ? AND store_id = ?",
                (batch_id, store_id),
            )
        return float(found[0][0]) if found else None

    # -- the index -----------------------------------------------------------------------
    def version(self, store_id: str) -> int | None:
        with self.db.transaction(write=False) as s:
            found = s.execute("SELECT version FROM rag_stores WHERE id = ?", (store_id,))
        return int(found[0][0]) if found else None

    def refresh(self, store_id: str, index: Index) -> bool:
        """What changed since `index` was read: new chunks appended, gone files masked. False
        when a file in it was replaced (its old rows cannot be told apart): read it anew."""
        with self.db.transaction(write=False) as s:
            rows = s.execute(
                "SELECT id, file_id, text, vector FROM rag_chunks WHERE store_id = ? AND id > ? "
                "ORDER BY id",
                (store_id, index.last_chunk),
            )
            files = s.execute(
                "SELECT f.file_id, f.attributes, r.filename FROM rag_store_files f LEFT JOIN "
                "rag_files r ON r.id = f.file_id WHERE f.store_id = ?",
                (store_id,),
            )
        index.attributes = {r[0]: orjson.loads(r[1]) for r in files}
        index.names = {r[0]: r[2] or "" for r in files}
        index.remove_files(set(index.file_of) - set(index.attributes))
        if {r[1] for r in rows} & set(index.file_of):
            return False
        if rows:
            vectors: Vector = np.stack([np.frombuffer(bytes(r[3]), np.float32) for r in rows])
            index.append(
                [int(r[0]) for r in rows], [r[1] for r in rows], [r[2] for r in rows], vectors
            )
        return True

    def close(self) -> None:
        self.db.close()
