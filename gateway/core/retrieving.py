"""The gateway's files and vector stores (`retrieval/`), wired to its pipeline: chunks and
queries are embedded by the configured embedding model through `Gateway.handle`, so the
caller's key is checked, charged and recorded for them; and a route's `retrieval:` adds
passages to each of its requests before the guardrails, the cache and any backend see it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from access import Caller
from deployments import BackendError
from gateway.config import mixed_vectors
from gateway.core.front import Native
from gateway.core.replies import Reply
from gateway.core.routing import Routed
from llmops import RequestRecord
from retrieval import (
    Owner,
    Passage,
    RetrievalConfig,
    RetrievalError,
    SearchOptions,
    SqlStore,
    VectorStores,
)
from router import RouteConfig, RouteRetrieval
from storage import Database, SqliteDatabase

Handle = Callable[..., Awaitable[Any]]
_AUTH = ("authorization", "x-api-key")
PREAMBLE = (
    "Answer from these passages of the user's documents. If they do not hold the answer, "
    "say that you do not know."
)


def owner_of(caller: Caller | None) -> Owner:
    """Whose objects a caller sees: its key's and its team's; an admin sees all; without
    keys every caller is the same owner."""
    if caller is None:
        return Owner("")
    key = caller.key.id if caller.key is not None else "master"
    team = caller.team.id if caller.team is not None else None
    return Owner(key, team, admin=caller.admin)


def context_text(passages: Sequence[Passage], limit: int) -> str:
    parts = [PREAMBLE]
    for number, passage in enumerate(passages, start=1):
        parts.append(f"[{number}] {passage.filename}\n{passage.text[:limit]}")
    return "\n\n".join(parts)


def last_user_text(body: Mapping[str, Any]) -> str:
    """The question a request asks: its last user turn's text (or a completion's prompt)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return ""


def with_context(body: dict[str, Any], text: str) -> dict[str, Any]:
    """A chat or completions body with `text` in its system message (first, where chat
    templates want it) or before its prompt."""
    if isinstance(body.get("prompt"), str):
        return {**body, "prompt": f"{text}\n\n{body['prompt']}"}
    messages = list(body.get("messages") or [])
    first = messages[0] if messages else None
    if (
        first is not None
        and first.get("role") == "system"
        and isinstance(first.get("content"), str)
    ):
        messages[0] = {**first, "content": f"{first['content']}\n\n{text}"}
    else:
        messages.insert(0, {"role": "system", "content": text})
    return {**body, "messages": messages}


class Library:
    """One per ingress replica; the store opens on first use (`where`: the shared database
    or the SQLite file). `connect` gives it the pipeline that embeds."""

    def __init__(
        self,
        config: RetrievalConfig,
        where: Callable[[], Database | Path],
        routes: Mapping[str, RouteConfig],
    ) -> None:
        self.config = config
        self._routes = {name: r.retrieval for name, r in routes.items() if r.retrieval}
        self._refusal = mixed_vectors(config.embedding_model, routes)
        self._where = where
        self._handle: Handle | None = None
        self._stores: VectorStores | None = None

    def connect(self, handle: Handle) -> None:
        self._handle = handle

    def stores(self) -> VectorStores:
        if self._stores is None:
            where = self._where()
            db = where if isinstance(where, Database) else SqliteDatabase(where)
            self._stores = VectorStores(SqlStore(db), self.config, self._embed)
        return self._stores

    async def _embed(self, texts: list[str], headers: Any) -> list[list[float]]:
        assert self._handle is not None, "Library.connect was not called"
        if self._refusal:
            raise RetrievalError(self._refusal, 400, "retrieval_not_configured", "model")
        auth = {k: v for k, v in (headers or {}).items() if k.lower() in _AUTH}
        body = {"model": self.config.embedding_model, "input": texts}
        reply: Reply = await self._handle("embeddings", body, auth, f"embed-{uuid.uuid4().hex}")
        if reply.status != 200:
            error = orjson.loads(reply.body).get("error") or {}
            raise BackendError(
                f"embedding with {self.config.embedding_model!r} failed: "
                f"{error.get('message', reply.status)}",
                status=reply.status,
            )
        data = sorted(orjson.loads(reply.body)["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]

    async def apply(
        self,
        routed: Routed,
        native: Native | None,
        headers: Mapping[str, str],
        record: RequestRecord,
    ) -> tuple[Routed, Native | None]:
        """The request with its route's passages added (as it came where its route has no
        `retrieval:`). The route's stores are the config's: any caller of the route reads
        them; the caller's key pays for embedding its question."""
        retrieval = self._routes.get(routed.decision.route or "")
        if retrieval is None:
            return routed, native
        return await self._for_route(routed, native, retrieval, headers, record)

    async def _for_route(
        self,
        routed: Routed,
        native: Native | None,
        retrieval: RouteRetrieval,
        headers: Mapping[str, str],
        record: RequestRecord,
    ) -> tuple[Routed, Native | None]:
        question = last_user_text(routed.body)
        if not question.strip():
            return routed, native
        options = SearchOptions(retrieval.max_num_results, None, retrieval.score_threshold, None)
        passages = await self.stores().search(
            retrieval.vector_store_ids, question, options, headers
        )
        if not passages:
            return routed, native
        text = context_text(passages, self.config.passage_chars)
        body = with_context(routed.body, text)
        routed = dataclasses.replace(
            routed, prepared=dataclasses.replace(routed.prepared, body=body)
        )
        if native is not None:
            native = Native(native.api, native.api.with_context(native.body, text))
        record.retrieved = len(passages)
        return routed, native

    def close(self) -> None:
        if self._stores is not None:
            self._stores.close()
