"""The response cache in the pipeline (`cache:`; docs/caching.md): after the router has
chosen a backend, a request whose answer is cached is served from it, as a whole answer or as
the same stream of events a live one sends; a miss is stored once the answer is complete.

An entry's key covers all that changes an answer: the client API, the chosen backend and its
model version, the whole normalised body (conversation, system prompt, tools, sampling and
response format), and whose entries these are (key, team or shared). Semantic mode then looks
for a near last user turn among the entries that share everything else, and serves one only
when `cache.same_request` finds nothing in the two texts that changes an answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from cache import (
    CacheConfig,
    Entries,
    Entry,
    LastTurn,
    Mode,
    ReplicaEntries,
    RouteCache,
    Scope,
    digest,
    last_turn,
    normalised,
    same_request,
    temperature,
)
from gateway.core.replies import RecordedStream, Reply, StreamReply, replay
from gateway.core.routing import Routed
from llmops import RequestRecord

logger = logging.getLogger("ray.serve")
HEADER = "x-gateway-cache"  # request: no-cache | no-store; response: hit | miss | bypass
Embed = Callable[[str], Awaitable[list[float]]]
T = TypeVar("T")
_ID = re.compile(rb'"id":\s*"([A-Za-z]+[-_])[^"]*"')
# A stream that calls a tool, in chat, Messages or Responses events.
_TOOL_EVENT = re.compile(rb'"tool_calls":\s*\[\s*\{|"type":\s*"(?:tool_use|function_call)"')


@dataclass(slots=True)
class Plan:
    """What the cache does for one request."""

    settings: RouteCache
    key: str
    backend: str
    route: str | None
    native: bool
    read: bool  # false: `no-cache`, the answer is fetched and stored anew
    turn: LastTurn | None = None  # semantic mode
    partition: str | None = None
    vector: list[float] | None = None
    similarity: float | None = None  # of the entry a semantic hit served


@dataclass(slots=True)
class Stats:
    hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    refused: int = 0  # near matches the verifier turned down
    stored: int = 0
    store_errors: int = 0  # lookups and writes the shared database failed
    embedding_failures: int = 0
    embedding_error: str | None = None  # the last one's type: semantic lookups fell back to exact
    by_route: dict[str, list[int]] = field(default_factory=dict)  # route -> [hits, misses]


def _scope(settings: RouteCache, record: RequestRecord) -> str:
    if settings.scope is Scope.SHARED:
        return "*"
    if settings.scope is Scope.TEAM and record.team:
        return "team:" + record.team
    return "key:" + (record.key_id or "anonymous")


def _fresh_ids(parts: tuple[bytes, ...]) -> tuple[bytes, ...]:
    found = next((m for m in map(_ID.search, parts) if m is not None), None)
    if found is None:
        return parts
    old = found.group(0).split(b'"')[-2]
    new = found.group(1) + secrets.token_hex(12).encode()
    return tuple(part.replace(old, new) for part in parts)


class ResponseCache:
    """One per ingress replica; its entries in this process, or in the shared database
    (`entries`). The cache never fails a request: a store it cannot reach is a miss."""

    def __init__(
        self,
        config: CacheConfig,
        versions: Mapping[str, str],
        embed: Embed | None = None,
        entries: Entries | None = None,
    ) -> None:
        self.config = config
        self.versions = dict(versions)  # backend -> fingerprint of what shapes its answers
        self._embed = embed
        self.entries = (
            entries if entries is not None else ReplicaEntries(config.max_entries, config.max_bytes)
        )
        self.stats = Stats()
        self._writes: set[asyncio.Task[Any]] = set()
        self._seen: dict[str, str] = {}  # backend -> the model its last live answer named

    async def _read(self, call: Callable[..., T], *args: Any) -> T | None:
        """A read of the entries (in a thread where they are in a database); None when the
        store cannot answer."""
        try:
            if self.entries.blocking:
                return await asyncio.to_thread(call, *args)
            return call(*args)
        except Exception as exc:
            self.stats.store_errors += 1
            logger.warning("cache: the store failed (%s): a miss", type(exc).__name__)
            return None

    def _write(self, call: Callable[..., Any], *args: Any) -> None:
        """A write, not waited for where it is I/O (the answer is on its way already)."""
        if not self.entries.blocking:
            call(*args)
            return
        task = asyncio.get_running_loop().create_task(self._read(call, *args))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def settled(self, timeout_s: float = 5.0) -> None:
        """Wait for the writes under way."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    async def aclose(self) -> None:
        await self.settled()
        await asyncio.to_thread(self.entries.close)

    # ---- deciding -------------------------------------------------------------------------

    def plan(
        self,
        routed: Routed,
        record: RequestRecord,
        directive: str | None,
        native: dict[str, Any] | None,
    ) -> Plan | None:
        """How the cache treats this request (None: it does not; `record.cache` says why)."""
        settings = self.config.for_route(routed.decision.route)
        if settings is None:
            return None
        body = routed.body_for(routed.decision.chosen)
        if directive == "no-store" or (
            routed.prepared.endpoint != "embeddings"
            and temperature(body) > settings.max_temperature
        ):
            record.cache = "bypass"
            return None
        backend = routed.decision.chosen
        # What key and partition share: the API, the backend and its version, whose entries.
        common = (record.endpoint, routed.prepared.endpoint, backend,
                  self.versions.get(backend, ""), _scope(settings, record))  # fmt: skip
        normal = normalised(native if native is not None else body)
        key = digest((*common, normal))
        plan = Plan(settings, key, backend, routed.decision.route, native is not None,
                    directive != "no-cache")  # fmt: skip
        if settings.mode is Mode.SEMANTIC and self._embed is not None and native is None:
            plan.turn = last_turn(normal)  # `normal` is the chat body's here
            if plan.turn is not None:
                plan.partition = digest((*common, plan.turn.context))
        record.cache = "miss"
        return plan

    async def lookup(self, plan: Plan) -> Entry | None:
        """The entry that answers this request, if any (and, in semantic mode, its last
        turn's embedding for storing the answer under)."""
        entry = await self._read(self.entries.get, plan.key) if plan.read else None
        if entry is not None or plan.turn is None or plan.partition is None:
            return entry
        assert self._embed is not None
        semantic = self.config.semantic
        assert semantic is not None
        try:
            async with asyncio.timeout(semantic.timeout_s):
                plan.vector = await self._embed(plan.turn.text)
        except Exception as exc:  # no embedding: served as an exact miss
            self.stats.embedding_failures += 1
            self.stats.embedding_error = type(exc).__name__
            logger.warning("cache: embedding failed (%s): exact lookup only", type(exc).__name__)
            return None
        if not plan.read:
            return None
        least = plan.settings.similarity or semantic.similarity
        found = await self._read(self.entries.search, plan.partition, plan.vector, least, 4)
        for similarity, candidate in found or []:
            if candidate.text is None:
                continue
            if same_request(plan.turn.text, candidate.text).same:
                plan.similarity = similarity
                self.stats.semantic_hits += 1
                return candidate
            self.stats.refused += 1
        return None

    async def warm(self, patience_s: float = 600.0) -> None:
        """The embedder's first call before the first request: a model's first call is slow
        (a vLLM pooling engine's took 24 s here), and a backend may still be starting."""
        if self._embed is None:
            return
        deadline = time.monotonic() + patience_s
        while True:
            try:
                await self._embed("warm up: what is the capital of France?")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(2.0)

    # ---- serving a hit ----------------------------------------------------------------------

    def serve(
        self,
        entry: Entry,
        plan: Plan,
        record: RequestRecord,
        headers: dict[str, str],
        finish: Callable[[RequestRecord], None],
    ) -> Reply | StreamReply:
        """The cached answer, its record closed as a hit: cost 0, the cost it saved."""
        record.cache, record.backend = "hit", entry.backend
        record.take_usage(entry.usage)
        record.usage_source = "cache"
        self._count(plan.route, hit=True)
        headers[HEADER] = "hit"
        if plan.similarity is not None:
            headers["x-gateway-cache-similarity"] = f"{plan.similarity:.4f}"
        if entry.body is not None:
            record.ttft_ms = (time.perf_counter() - record.started) * 1000
            finish(record)
            headers["x-gateway-cost-usd"] = f"{record.cost_usd or 0.0:.10f}"
            headers["x-gateway-saved-usd"] = f"{record.saved_usd or 0.0:.10f}"
            (body,) = _fresh_ids((entry.body,))
            return Reply(200, body, headers, native=entry.native)
        first, *rest = _fresh_ids(entry.chunks)
        record.ttft_ms = (time.perf_counter() - record.started) * 1000
        return StreamReply(headers, first, replay(rest), lambda: finish(record), entry.native)

    def _count(self, route: str | None, *, hit: bool) -> None:
        counts = self.stats.by_route.setdefault(route or "", [0, 0])
        counts[0 if hit else 1] += 1
        if hit:
            self.stats.hits += 1
        else:
            self.stats.misses += 1

    # ---- storing a miss ---------------------------------------------------------------------

    def keep(
        self, plan: Plan, reply: Reply | StreamReply, *, record: RequestRecord
    ) -> Reply | StreamReply:
        """Store the answer once it is whole (a stream: when it ended well). Every live answer
        says which model made it: an entry an older model made is stale from then on."""
        reply.headers[HEADER] = "miss"
        self._count(plan.route, hit=False)
        if isinstance(reply, StreamReply):
            store = functools.partial(self._store_stream, plan, record=record)
            return RecordedStream(reply, store, self.config.max_bytes)
        if reply.status != 200:
            return reply
        result = orjson.loads(reply.body)
        self._saw(record.backend or plan.backend, _model(result))
        if self._storable(plan, record) and (plan.settings.tool_calls or not _calls_tools(result)):
            self._put(plan, record, _model(result), body=reply.body)
        return reply

    def _storable(self, plan: Plan, record: RequestRecord) -> bool:
        # A fallback's answer is not the chosen backend's: it is not stored under its key.
        # Nor is a stream another backend continued (`continued_from`).
        return (
            record.status == 200
            and record.backend == plan.backend
            and not record.error_code
            and record.continued_from is None
        )

    def _store_stream(
        self, plan: Plan, chunks: tuple[bytes, ...], *, record: RequestRecord
    ) -> None:
        if not chunks:
            return
        model = _stream_model(chunks[0])
        self._saw(record.backend or plan.backend, model)
        if not self._storable(plan, record):
            return
        if not plan.settings.tool_calls and any(_TOOL_EVENT.search(c) for c in chunks):
            return
        self._put(plan, record, model, chunks=chunks)

    def _put(self, plan: Plan, record: RequestRecord, model: str | None, **answer: Any) -> None:
        usage: dict[str, Any] = {
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
        }
        if record.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": record.cached_tokens}
        if record.cache_write_tokens:
            usage["cache_creation_input_tokens"] = record.cache_write_tokens
        entry = Entry(plan.key, plan.route, plan.backend, model, plan.native, usage=usage,
                      **answer)  # fmt: skip
        if plan.turn is not None and plan.vector is not None and plan.partition is not None:
            entry.text, entry.partition = plan.turn.text, plan.partition
        self._write(self.entries.put, entry, plan.settings.ttl_s, plan.vector)
        self.stats.stored += 1

    def _saw(self, backend: str, model: str | None) -> None:
        if not model:
            return
        if not self.entries.blocking:
            self.entries.saw_model(backend, model)
        elif self._seen.get(backend) != model:  # the database hears of changes only
            self._seen[backend] = model
            self._write(self.entries.saw_model, backend, model)

    # ---- admin ------------------------------------------------------------------------------

    async def purge(self, route: str | None = None, backend: str | None = None) -> int:
        """Remove entries (every replica's, where they are in the database); how many went."""
        if self.entries.blocking:
            return await asyncio.to_thread(self.entries.purge, route, backend)
        return self.entries.purge(route, backend)

    async def describe(self) -> dict[str, Any]:
        stats = self.stats
        if self.entries.blocking:
            held = await asyncio.to_thread(self.entries.describe)
        else:
            held = self.entries.describe()
        return {
            **held,
            "store_errors": stats.store_errors,
            "hits": stats.hits,
            "semantic_hits": stats.semantic_hits,
            "misses": stats.misses,
            "near_misses_refused": stats.refused,
            "stored": stats.stored,
            "embedding_failures": stats.embedding_failures,
            "embedding_error": stats.embedding_error,
            "routes": {
                route or "(backend named)": {"hits": h, "misses": m}
                for route, (h, m) in sorted(stats.by_route.items())
            },
        }


def _calls_tools(result: dict[str, Any]) -> bool:
    for choice in result.get("choices") or []:
        if isinstance(choice, dict) and (choice.get("message") or {}).get("tool_calls"):
            return True
    blocks = list(result.get("content") or []) + list(result.get("output") or [])
    return any(
        isinstance(b, dict) and b.get("type") in ("tool_use", "function_call") for b in blocks
    )


def _model(result: dict[str, Any]) -> str | None:
    model = result.get("model")
    return model if isinstance(model, str) else None


def _stream_model(first: bytes) -> str | None:
    for line in first.split(b"\n"):
        if line.startswith(b"data:") and b'"model"' in line:
            try:
                event = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            found = event.get("model") or (event.get("message") or {}).get("model")
            return found if isinstance(found, str) else None
    return None
