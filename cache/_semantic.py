"""The vector index of semantic mode: per partition (requests equal but for their last user
turn), the unit vectors of the last turns it has answers for, searched exactly (a dot product
over the partition's matrix). A partition holds one conversation context's entries, so a
search reads few vectors; an approximate index would save nothing and could miss."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def unit(vector: list[float]) -> np.ndarray | None:
    """`vector` scaled to length 1 (None: it has no direction)."""
    row = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(row))
    return None if norm == 0.0 else row / norm


def nearest(
    rows: np.ndarray, vector: list[float], least: float, limit: int
) -> list[tuple[float, int]]:
    """Up to `limit` (cosine similarity, row index) at least `least`, nearest first, of unit
    `rows` (one matrix-vector product: exact)."""
    query = unit(vector)
    if query is None:
        return []
    scores = rows @ query
    order = np.argsort(-scores)[:limit]
    return [(float(scores[i]), int(i)) for i in order if scores[i] >= least]


@dataclass(slots=True)
class _Partition:
    keys: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    matrix: np.ndarray | None = None  # rows stacked, rebuilt after a change

    def stacked(self) -> np.ndarray:
        if self.matrix is None:
            self.matrix = np.vstack(self.rows)
        return self.matrix


class VectorIndex:
    """Exact cosine search within a partition. Not thread-safe: one event loop uses it."""

    def __init__(self) -> None:
        self._partitions: dict[str, _Partition] = {}
        self._where: dict[str, str] = {}  # key -> partition

    def __len__(self) -> int:
        return len(self._where)

    def add(self, partition: str, key: str, vector: list[float]) -> None:
        self.remove(key)
        row = unit(vector)
        if row is None:
            return
        part = self._partitions.setdefault(partition, _Partition())
        part.keys.append(key)
        part.rows.append(row)
        part.matrix = None
        self._where[key] = partition

    def remove(self, key: str) -> None:
        partition = self._where.pop(key, None)
        if partition is None:
            return
        part = self._partitions[partition]
        index = part.keys.index(key)
        del part.keys[index], part.rows[index]
        part.matrix = None
        if not part.keys:
            del self._partitions[partition]

    def search(
        self, partition: str, vector: list[float], least: float, limit: int = 4
    ) -> list[tuple[float, str]]:
        """Up to `limit` (similarity, key) at least `least` similar, nearest first."""
        part = self._partitions.get(partition)
        if part is None:
            return []
        found = nearest(part.stacked(), vector, least, limit)
        return [(similarity, part.keys[index]) for similarity, index in found]
