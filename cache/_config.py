"""The `cache:` section: which routes cache answers, how (exact or semantic), for whom, and
for how long; the bounds of the cache itself."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Mode(StrEnum):
    OFF = "off"
    EXACT = "exact"  # the same request, byte for byte after normalising
    SEMANTIC = "semantic"  # exact, then a verified near match of the last user message


class Scope(StrEnum):
    KEY = "key"  # each key its own entries
    TEAM = "team"  # a team's keys share (keys without a team: their own)
    SHARED = "shared"  # everyone calling the route shares


class Store(StrEnum):
    AUTO = "auto"
    REPLICA = "replica"
    DATABASE = "database"


class RouteCache(BaseModel):
    """How one route caches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Field(default=Mode.EXACT, description="off, exact or semantic.")
    scope: Scope = Field(
        default=Scope.KEY,
        description="Who shares entries: `key` (default: no answer crosses keys), `team`, or "
        "`shared` (every caller of the route).",
    )
    ttl_s: float = Field(default=3600.0, gt=0, description="An entry's lifetime in seconds.")
    max_temperature: float = Field(
        default=0.0,
        ge=0,
        le=2,
        description="Requests sampled above this temperature are neither served from nor "
        "stored in the cache (a request without `temperature` samples at 1.0). 0: greedy only.",
    )
    tool_calls: bool = Field(
        default=False, description="Also cache answers that call tools (off: they are not stored)."
    )
    similarity: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description="Semantic mode: the least cosine similarity a candidate needs before the "
        "verifier looks at it; unset: `cache.semantic.similarity`.",
    )


class SemanticConfig(BaseModel):
    """Where semantic mode gets its embeddings, and how near a candidate must be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding: str = Field(
        description="What embeds last user turns: `local` (all-MiniLM-L6-v2 in each ingress "
        "replica, the weights the task classifier already holds: ~5 ms, no hop), or one of "
        "`backends` serving `embeddings` (e.g. the embedded default's `minilm` deployment: a "
        "Serve hop and an engine step, ~30 ms here)."
    )
    similarity: float = Field(
        default=0.9, ge=0.5, le=1.0, description="Least cosine similarity of a candidate."
    )
    timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="An embedding slower than this is given up: the request is served as an "
        "exact-cache miss.",
    )


LOCAL = "local"  # `semantic.embedding`: the ingress's own all-MiniLM-L6-v2


class CacheConfig(BaseModel):
    """Response caching (docs/caching.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: dict[str, RouteCache] = Field(
        default_factory=dict, description="Route name -> how it caches."
    )
    default: RouteCache | None = Field(
        default=None,
        description="For routes not listed and for requests naming a backend; unset: no cache.",
    )
    semantic: SemanticConfig | None = Field(
        default=None, description="Needed by any route in semantic mode."
    )
    store: Store = Field(
        default=Store.AUTO,
        description="Where entries live: `replica` (each ingress replica its own, in memory), "
        "`database` (the `database:` every replica shares: a hit on one is a hit on all, a "
        "purge reaches all), or `auto`: the database where one is configured.",
    )
    max_entries: int = Field(default=10_000, ge=1, description="Entries kept (per replica, "
                             "or in the database).")  # fmt: skip
    max_bytes: int = Field(
        default=256 * 2**20,
        ge=1024,
        description="Bytes of answers kept (per replica, or in the database).",
    )

    @model_validator(mode="after")
    def _semantic_has_embeddings(self) -> Self:
        named = {**self.routes, **({"default": self.default} if self.default else {})}
        wanting = [name for name, r in named.items() if r.mode is Mode.SEMANTIC]
        if wanting and self.semantic is None:
            raise ValueError(
                f"cache.semantic: needed by semantic mode (routes: {', '.join(wanting)}): "
                "set `semantic: {embedding: <an embeddings backend>}`"
            )
        return self

    def for_route(self, route: str | None) -> RouteCache | None:
        """How requests on `route` cache (None: they do not)."""
        found = self.routes.get(route) if route else None
        settings = found if found is not None else self.default
        return None if settings is None or settings.mode is Mode.OFF else settings

    @property
    def enabled(self) -> bool:
        return any(r.mode is not Mode.OFF for r in self.routes.values()) or (
            self.default is not None and self.default.mode is not Mode.OFF
        )
