"""OpenAI's object shapes for files, vector stores, their files and batches, and lists."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from retrieval._errors import invalid


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Passage:
    """One search result."""

    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any]

    def result(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "filename": self.filename,
            "score": round(self.score, 6),
            "attributes": self.attributes,
            "content": [{"type": "text", "text": self.text}],
        }


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": int(row["created_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def counts(row: dict[str, Any]) -> dict[str, int]:
    done, failed, running = int(row["completed"]), int(row["failed"]), int(row["in_progress"])
    return {
        "in_progress": running,
        "completed": done,
        "failed": failed,
        "cancelled": 0,
        "total": done + failed + running,
    }


def store_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "vector_store",
        "created_at": int(row["created_at"]),
        "name": row["name"],
        "usage_bytes": int(row["usage_bytes"]),
        "file_counts": counts(row),
        "status": "in_progress" if int(row["in_progress"]) else "completed",
        "expires_after": None,
        "expires_at": None,
        "last_active_at": int(row["last_active_at"]),
        "metadata": row["metadata"],
    }


def store_file_object(store_id: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["file_id"],
        "object": "vector_store.file",
        "usage_bytes": int(row["usage_bytes"]),
        "created_at": int(row["created_at"]),
        "vector_store_id": store_id,
        "status": row["status"],
        "last_error": row["last_error"],
        "chunking_strategy": row["chunking"],
        "attributes": row["attributes"],
    }


def batch_object(
    batch_id: str, store_id: str, created_at: float, files: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    done = sum(f["status"] == "completed" for f in files)
    failed = sum(f["status"] == "failed" for f in files)
    return {
        "id": batch_id,
        "object": "vector_store.file_batch",
        "created_at": int(created_at),
        "vector_store_id": store_id,
        "status": "completed",
        "file_counts": {
            "in_progress": 0,
            "completed": done,
            "failed": failed,
            "cancelled": 0,
            "total": len(files),
        },
    }


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "deleted": True}


def page(items: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """One page of a list, as OpenAI pages: `limit` (1-100, default 20), `order` (`desc` by
    default), `after` / `before` an id of the list."""
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise invalid("limit must be an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise invalid("limit must be between 1 and 100.", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("order must be 'asc' or 'desc'.", "order")
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    if query.get("after") in ids:
        ordered = ordered[ids.index(query["after"]) + 1 :]
    elif query.get("before") in ids:
        ordered = ordered[: ids.index(query["before"])]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
