"""One vector store's chunks in memory, for exact search: their unit embedding vectors (one
matrix product ranks them all) and a BM25 index of their words. Rows are appended as files
are added and masked as files leave, so a store that changes is never reloaded whole."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "do",
        "does",
        "did",
        "not",
        "no",
    }
)
K1, B = 1.2, 0.75


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def unit(vectors: npt.ArrayLike) -> Vector:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    scaled: Vector = matrix / np.where(norms == 0, 1, norms)
    return scaled


@dataclass
class Hit:
    row: int
    score: float


@dataclass
class Index:
    """`file_of[row]` is the row's file; `attributes` and `names` are the store's files' (as
    of the version read); rows of files since removed are masked."""

    dimensions: int = 0
    chunk_ids: list[int] = field(default_factory=list)
    file_of: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    _blocks: list[Vector] = field(default_factory=list)
    _matrix: Vector | None = None
    _postings: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    _arrays: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = field(
        default_factory=dict
    )
    _lengths: list[int] = field(default_factory=list)
    _dead: set[str] = field(default_factory=set)
    _codes: dict[str, int] = field(default_factory=dict)  # file id -> small int
    _code_of: list[int] = field(default_factory=list)
    _code_array: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.chunk_ids)

    @property
    def last_chunk(self) -> int:
        return self.chunk_ids[-1] if self.chunk_ids else 0

    def append(
        self, chunk_ids: list[int], files: list[str], texts: list[str], vectors: Vector
    ) -> None:
        if not chunk_ids:
            return
        self.dimensions = vectors.shape[1]
        start = len(self.chunk_ids)
        self.chunk_ids += chunk_ids
        self.file_of += files
        self._code_of += [self._codes.setdefault(f, len(self._codes)) for f in files]
        self._code_array = None
        self.texts += texts
        self._blocks.append(unit(vectors))
        self._matrix = None
        for row, text in enumerate(texts, start=start):
            counts = Counter(words(text))
            self._lengths.append(sum(counts.values()))
            for word, tf in counts.items():
                self._postings.setdefault(word, []).append((row, tf))
        self._arrays.clear()

    def remove_files(self, files: set[str]) -> None:
        self._dead |= files

    def _vectors(self) -> Vector:
        if self._matrix is None:
            self._matrix = (
                np.concatenate(self._blocks) if self._blocks else np.zeros((0, 1), np.float32)
            )
            self._blocks = [self._matrix]
        return self._matrix

    def _bm25(self, query: str) -> npt.NDArray[np.float32]:
        n = len(self.chunk_ids)
        scores = np.zeros(n, np.float32)
        lengths = np.asarray(self._lengths, np.float32)
        average = float(lengths.mean()) if n else 1.0
        for word in set(words(query)):
            if word not in self._postings:
                continue
            if word not in self._arrays:
                rows, tfs = zip(*self._postings[word], strict=True)
                self._arrays[word] = (np.asarray(rows), np.asarray(tfs, np.float32))
            rows_, tf = self._arrays[word]
            idf = math.log(1 + (n - len(rows_) + 0.5) / (len(rows_) + 0.5))
            norm = tf + K1 * (1 - B + B * lengths[rows_] / max(average, 1.0))
            scores[rows_] += idf * tf * (K1 + 1) / norm
        return scores

    def search(
        self,
        query_vector: Vector,
        query_text: str,
        limit: int,
        files: set[str] | None = None,
        text_weight: float = 0.0,
    ) -> list[Hit]:
        """The `limit` best rows of the allowed `files` (None: all): cosine similarity, or
        with `text_weight` > 0 a blend of it and BM25 scaled to the best match's, in [0, 1]."""
        if not self.chunk_ids:
            return []
        scores = np.clip(self._vectors() @ unit(query_vector), 0.0, 1.0)
        if text_weight > 0:
            text = self._bm25(query_text)
            best = float(text.max())
            if best > 0:
                scores = (1 - text_weight) * scores + text_weight * (text / best)
        wanted = set(self._codes) - self._dead if files is None else files - self._dead
        if len(wanted) < len(self._codes):
            if self._code_array is None:
                self._code_array = np.asarray(self._code_of)
            codes = [self._codes[f] for f in wanted if f in self._codes]
            scores = np.where(np.isin(self._code_array, codes), scores, -1.0)
        top = min(limit, len(scores))
        rows = np.argpartition(-scores, top - 1)[:top]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        return [Hit(int(r), float(scores[r])) for r in rows if scores[r] >= 0]
