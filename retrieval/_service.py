"""Files and vector stores as a service: plain Python, with how text is embedded injected
(`Embed`: the gateway passes its own pipeline, so the caller's key pays for and is recorded
with every embedding). Ingest is done when its request returns: a file is `completed` or
`failed` (with `last_error`), never left `in_progress` by a replica that stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from retrieval import _params as params
from retrieval._chunk import chunk, with_headers
from retrieval._config import Chunking, RetrievalConfig
from retrieval._errors import RetrievalError, invalid, not_found
from retrieval._extract import extract
from retrieval._filters import check_attributes
from retrieval._index import Index, unit
from retrieval._objects import (
    Passage,
    batch_object,
    deleted,
    file_object,
    new_id,
    page,
    store_file_object,
    store_object,
)
from retrieval._params import SearchOptions
from retrieval._store import Owner, SqlStore

Embed = Callable[[list[str], Any], Awaitable[list[list[float]]]]
PURPOSES = ("assistants", "user_data")


class VectorStores:
    def __init__(self, store: SqlStore, config: RetrievalConfig, embed: Embed) -> None:
        self.sql = store
        self.config = config
        self.embed = embed
        self._indexes: dict[str, tuple[int, Index]] = {}
        self._lock = asyncio.Lock()

    async def _run(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(call, *args)

    # -- files -------------------------------------------------------------------------
    async def create_file(
        self, owner: Owner, filename: str, purpose: str, data: bytes
    ) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise invalid(f"purpose must be one of {', '.join(PURPOSES)}.", "purpose")
        if len(data) > self.config.max_file_bytes:
            raise RetrievalError(
                f"The file has {len(data)} bytes; the most is {self.config.max_file_bytes}.",
                413,
                "file_too_large",
                "file",
            )
        used = await self._run(self.sql.stored_bytes, owner)
        if used + len(data) > self.config.quota_bytes:
            raise RetrievalError(
                f"Storing {len(data)} more bytes would exceed this key's quota of "
                f"{self.config.quota_bytes} bytes ({used} used).",
                413,
                "storage_quota_exceeded",
                "file",
            )
        row = {
            "id": new_id("file-"),
            "owner": owner.key,
            "team": owner.team,
            "filename": filename,
            "purpose": purpose,
            "bytes": len(data),
            "created_at": time.time(),
        }
        await self._run(self.sql.add_file, row, data)
        return file_object(row)

    async def _file(self, owner: Owner, file_id: str, param: str | None = None) -> dict[str, Any]:
        found = await self._run(self.sql.files, owner, [file_id])
        if not found:
            raise not_found("file", file_id, param)
        return dict(found[0])

    async def get_file(self, owner: Owner, file_id: str) -> dict[str, Any]:
        return file_object(await self._file(owner, file_id))

    async def list_files(self, owner: Owner, query: dict[str, Any]) -> dict[str, Any]:
        rows = await self._run(self.sql.files, owner, None, query.get("purpose"))
        return page([file_object(r) for r in rows], query)

    async def file_content(self, owner: Owner, file_id: str) -> bytes:
        content = await self._run(self.sql.content, owner, file_id)
        if content is None:
            raise not_found("file", file_id)
        return bytes(content)

    async def delete_file(self, owner: Owner, file_id: str) -> dict[str, Any]:
        if not await self._run(self.sql.delete_file, owner, file_id):
            raise not_found("file", file_id)
        return deleted(file_id, "file")

    # -- stores ------------------------------------------------------------------------
    async def create_store(
        self, owner: Owner, body: dict[str, Any], context: Any
    ) -> dict[str, Any]:
        file_ids = params.ids(body.get("file_ids"), "file_ids")
        metadata = params.metadata(body.get("metadata"))
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid("name must be a string.", "name")
        chunking = params.chunking(
            body.get("chunking_strategy"), self.config.chunking, "chunking_strategy"
        )
        files = [await self._file(owner, f, "file_ids") for f in file_ids]
        store_id = new_id("vs_")
        row: dict[str, Any] = {
            "id": store_id,
            "owner": owner.key,
            "team": owner.team,
            "name": name,
            "metadata": metadata,
            "created_at": time.time(),
        }
        await self._run(self.sql.add_store, row)
        for file in files:
            await self._ingest(owner, store_id, file, {}, chunking, None, context)
        return await self.get_store(owner, store_id)

    async def _store_row(self, owner: Owner, store_id: str) -> dict[str, Any]:
        found = await self._run(self.sql.stores, owner, [store_id])
        if not found:
            raise not_found("vector store", store_id)
        return dict(found[0])

    async def get_store(self, owner: Owner, store_id: str) -> dict[str, Any]:
        return store_object(await self._store_row(owner, store_id))

    async def list_stores(self, owner: Owner, query: dict[str, Any]) -> dict[str, Any]:
        rows = await self._run(self.sql.stores, owner, None)
        return page([store_object(r) for r in rows], query)

    async def modify_store(
        self, owner: Owner, store_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid("name must be a string.", "name")
        metadata = params.metadata(body.get("metadata")) if "metadata" in body else None
        if not await self._run(self.sql.update_store, owner, store_id, name, metadata):
            raise not_found("vector store", store_id)
        return await self.get_store(owner, store_id)

    async def delete_store(self, owner: Owner, store_id: str) -> dict[str, Any]:
        if not await self._run(self.sql.delete_store, owner, store_id):
            raise not_found("vector store", store_id)
        self._indexes.pop(store_id, None)
        return deleted(store_id, "vector_store.deleted")

    # -- a store's files -----------------------------------------------------------------
    async def add_file(
        self, owner: Owner, store_id: str, body: dict[str, Any], context: Any
    ) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        file_id = body.get("file_id")
        if not isinstance(file_id, str):
            raise invalid("file_id is required.", "file_id")
        file = await self._file(owner, file_id, "file_id")
        attributes = check_attributes(body.get("attributes"))
        chunking = params.chunking(
            body.get("chunking_strategy"), self.config.chunking, "chunking_strategy"
        )
        await self._ingest(owner, store_id, file, attributes, chunking, None, context)
        return await self.get_store_file(owner, store_id, file_id)

    async def add_batch(
        self, owner: Owner, store_id: str, body: dict[str, Any], context: Any
    ) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        specs = body.get("files")
        if specs is None:
            ids = params.ids(body.get("file_ids"), "file_ids")
            specs = [{"file_id": f, "attributes": body.get("attributes")} for f in ids]
        if not isinstance(specs, list) or not specs:
            raise invalid("Name the files: file_ids or files.", "file_ids")
        default = params.chunking(
            body.get("chunking_strategy"), self.config.chunking, "chunking_strategy"
        )
        batch_id, created = new_id("vsfb_"), time.time()
        plans = []
        for index, spec in enumerate(specs):
            param = f"files[{index}]"
            file = await self._file(owner, str(spec.get("file_id")), f"{param}.file_id")
            attributes = check_attributes(spec.get("attributes"), f"{param}.attributes")
            chunking = params.chunking(
                spec.get("chunking_strategy"), default, f"{param}.chunking_strategy"
            )
            plans.append((file, attributes, chunking))
        await self._run(self.sql.add_batch, batch_id, store_id, created)
        for file, attributes, chunking in plans:
            await self._ingest(owner, store_id, file, attributes, chunking, batch_id, context)
        return await self.get_batch(owner, store_id, batch_id)

    async def get_batch(self, owner: Owner, store_id: str, batch_id: str) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        created = await self._run(self.sql.batch, store_id, batch_id)
        if created is None:
            raise not_found("vector store file batch", batch_id)
        files = await self._run(self.sql.store_files, store_id, None, batch_id)
        return batch_object(batch_id, store_id, created, files)

    async def list_store_files(
        self, owner: Owner, store_id: str, query: dict[str, Any], batch_id: str | None = None
    ) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        rows = await self._run(self.sql.store_files, store_id, None, batch_id)
        if query.get("filter"):
            rows = [r for r in rows if r["status"] == query["filter"]]
        return page([store_file_object(store_id, r) for r in rows], query)

    async def get_store_file(self, owner: Owner, store_id: str, file_id: str) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        rows = await self._run(self.sql.store_files, store_id, file_id)
        if not rows:
            raise not_found("vector store file", file_id)
        return store_file_object(store_id, rows[0])

    async def update_store_file(
        self, owner: Owner, store_id: str, file_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self.get_store_file(owner, store_id, file_id)
        await self._run(
            self.sql.set_attributes, store_id, file_id, check_attributes(body.get("attributes"))
        )
        return await self.get_store_file(owner, store_id, file_id)

    async def remove_store_file(self, owner: Owner, store_id: str, file_id: str) -> dict[str, Any]:
        await self._store_row(owner, store_id)
        if not await self._run(self.sql.detach, store_id, file_id):
            raise not_found("vector store file", file_id)
        return deleted(file_id, "vector_store.file.deleted")

    async def _ingest(
        self,
        owner: Owner,
        store_id: str,
        file: dict[str, Any],
        attributes: dict[str, Any],
        chunking: Chunking,
        batch_id: str | None,
        context: Any,
    ) -> None:
        """Extract, cut, embed and keep one file's chunks; a failure is the file's status."""
        row = {
            "file_id": file["id"],
            "batch_id": batch_id,
            "attributes": attributes,
            "chunking": params.strategy(chunking),
            "created_at": time.time(),
            "usage_bytes": 0,
            "status": "completed",
            "last_error": None,
        }
        stored: list[tuple[int, str, bytes]] = []
        try:
            data = await self.file_content(owner, file["id"])
            pages = await self._run(extract, file["filename"], data)
            chunks = with_headers(chunk(pages, chunking), file["filename"], pages)
            for start in range(0, len(chunks), self.config.embed_batch):
                batch = chunks[start : start + self.config.embed_batch]
                vectors = unit(await self.embed([c.text for c in batch], context))
                stored += [
                    (c.page, c.text, v.tobytes()) for c, v in zip(batch, vectors, strict=True)
                ]
        except RetrievalError as exc:
            row.update(
                status="failed", last_error={"code": "unsupported_file", "message": exc.message}
            )
        except Exception as exc:  # the embedding route failed: the file says so, nothing half-kept
            message = getattr(exc, "message", None) or type(exc).__name__
            row.update(
                status="failed", last_error={"code": "server_error", "message": str(message)}
            )
            stored = []
        row["usage_bytes"] = sum(len(t.encode()) + len(v) for _, t, v in stored)
        await self._run(self.sql.attach, store_id, row, stored)

    # -- search ------------------------------------------------------------------------
    async def _index(self, store_id: str) -> Index:
        async with self._lock:  # one refresh at a time; searches of a fresh index run freely
            version = await self._run(self.sql.version, store_id)
            cached = self._indexes.get(store_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            index = cached[1] if cached is not None else Index()
            if not await self._run(self.sql.refresh, store_id, index):
                index = Index()
                await self._run(self.sql.refresh, store_id, index)
            self._indexes[store_id] = (version or 0, index)
            return index

    async def search_body(
        self, owner: Owner, store_id: str, body: dict[str, Any], context: Any
    ) -> dict[str, Any]:
        """`POST /v1/vector_stores/{id}/search`."""
        query = body.get("query")
        queries = [query] if isinstance(query, str) else query
        if (
            not isinstance(queries, list)
            or not queries
            or not all(isinstance(q, str) and q.strip() for q in queries)
        ):
            raise invalid("query is a non-empty string or list of strings.", "query")
        options = params.search_options(body, 10)
        await self._store_row(owner, store_id)
        found = await self.search([store_id], " ".join(queries), options, context)
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": [p.result() for p in found],
            "has_more": False,
            "next_page": None,
        }

    async def check_stores(self, owner: Owner, store_ids: Sequence[str], param: str) -> None:
        found = {r["id"] for r in await self._run(self.sql.stores, owner, list(store_ids))}
        for store_id in store_ids:
            if store_id not in found:
                raise not_found("vector store", store_id, param)

    async def search(
        self, store_ids: Sequence[str], query: str, options: SearchOptions, context: Any
    ) -> list[Passage]:
        """The best passages of the stores for `query` (the caller checked they may be read)."""
        vector = np.asarray((await self.embed([query], context))[0], np.float32)
        weight = self.config.text_weight if options.text_weight is None else options.text_weight
        match, limit = options.match, options.max_num_results
        passages: list[Passage] = []
        for store_id in dict.fromkeys(store_ids):
            index = await self._index(store_id)
            files = {f for f, a in index.attributes.items() if match is None or match(a)}
            if not index.chunk_ids or not files:
                continue
            for hit in index.search(vector, query, limit, files, weight):
                if hit.score >= options.threshold:
                    file_id = index.file_of[hit.row]
                    passages.append(
                        Passage(
                            file_id,
                            index.names.get(file_id, ""),
                            hit.score,
                            index.texts[hit.row],
                            index.attributes[file_id],
                        )
                    )
        passages.sort(key=lambda p: -p.score)
        return passages[:limit]

    def close(self) -> None:
        self.sql.close()
