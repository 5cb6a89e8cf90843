"""Redaction of logged bodies: what is never written in clear."""

from __future__ import annotations

import re
from collections.abc import Iterable

# E-mail addresses, API-key-like strings, card numbers.
DEFAULT_REDACTIONS = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\b(?:gh[pousr]|xox[abpr])_?[A-Za-z0-9-]{20,}",
    r"\b(?:\d[ -]?){12,18}\d\b",
)
REDACTED = "[REDACTED]"


class Redactor:
    def __init__(self, patterns: Iterable[str]) -> None:
        joined = "|".join(f"(?:{p})" for p in patterns)
        self._pattern = re.compile(joined) if joined else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text
