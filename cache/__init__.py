"""Response caching: exact keys, semantic near matches that a verifier must accept, the
entries and their vector index. Plain Python: no Ray, no HTTP; imports nothing of ours."""

from cache._config import CacheConfig, Mode, RouteCache, Scope, SemanticConfig
from cache._key import DEFAULT_TEMPERATURE, LastTurn, digest, last_turn, normalised, temperature
from cache._semantic import VectorIndex
from cache._store import Entry, EntryStore
from cache._verify import Verdict, canonical, same_request

__all__ = [
    "DEFAULT_TEMPERATURE",
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
    "last_turn",
    "normalised",
    "same_request",
    "temperature",
]
