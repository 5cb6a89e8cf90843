"""Response caching: exact keys, semantic near matches that a verifier must accept, the
entries and their vector index, in this process or in the shared database. Plain Python: no
Ray, no HTTP; of ours, it imports `storage` only."""

from cache._config import LOCAL, CacheConfig, Mode, RouteCache, Scope, SemanticConfig, Store
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
from cache._shared import DatabaseEntries, Entries, ReplicaEntries
from cache._store import Entry, EntryStore
from cache._verify import Verdict, canonical, same_request

__all__ = [
    "DEFAULT_TEMPERATURE",
    "LOCAL",
    "CacheConfig",
    "DatabaseEntries",
    "Entries",
    "Entry",
    "EntryStore",
    "LastTurn",
    "Mode",
    "ReplicaEntries",
    "RouteCache",
    "Scope",
    "SemanticConfig",
    "Store",
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
