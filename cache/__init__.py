"""Response caching: exact keys, semantic near matches that a verifier must accept, the
entries and their vector index. Plain Python: no Ray, no HTTP; imports nothing of ours."""

from cache._config import LOCAL, CacheConfig, Mode, RouteCache, Scope, SemanticConfig
from cache._key import (
    DEFAULT_TEMPERATURE,
    LastTurn,
    digest,
    fingerprint,
    last_turn,
    normalised,
    temperature,
)
from cache._semantic import VectorIndex
from cache._store import Entry, EntryStore
from cache._verify import Verdict, canonical, same_request

__all__ = [
    "DEFAULT_TEMPERATURE",
    "LOCAL",
    "CacheConfig",
    "Entry",
    "EntryStore",
    "LastTurn",
    "Mode",
    "RouteCache",
    "Scope",
    "SemanticConfig",
    "VectorIndex",
    "Verdict",
    "canonical",
    "digest",
    "fingerprint",
    "last_turn",
    "normalised",
    "same_request",
    "temperature",
]
