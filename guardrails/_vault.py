"""One request's placeholders: each value found becomes `<TYPE_N>`, the same value the same
placeholder wherever it appears in the request (numbered in order of first appearance, so a
conversation that grows keeps its earlier placeholders: prompt caches and the response
cache still match its prefix). The vault lives as long as its request, in memory only."""

from __future__ import annotations

import re
from collections import Counter

import orjson

from guardrails._detect import Finding

PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*[A-Z])_(\d{1,4})>")
# The longest a placeholder can be: held back while a stream may still be writing one.
MAX_PLACEHOLDER = 40
_PARTIAL = re.compile(r"<(?:[A-Z][A-Z_]*(?:_\d{0,4})?)?$")


class Vault:
    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._next: Counter[str] = Counter()
        self.found: Counter[str] = Counter()  # entity type -> occurrences masked

    def __bool__(self) -> bool:
        return bool(self._values)

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        known = self._by_value.get(key)
        if known is None:
            self._next[entity] += 1
            known = f"<{entity}_{self._next[entity]}>"
            self._by_value[key] = known
            self._values[known] = value
        return known

    def mask(self, text: str, findings: list[Finding]) -> str:
        """`text` with each finding (in order, not overlapping) replaced by its placeholder."""
        if not findings:
            return text
        out, at = [], 0
        for finding in findings:
            out.append(text[at : finding.start])
            out.append(self.placeholder(finding.entity, text[finding.start : finding.end]))
            self.found[finding.entity] += 1
            at = finding.end
        out.append(text[at:])
        return "".join(out)

    def restore(self, text: str, escaped: bool = False) -> str:
        """Placeholders back to their values; `escaped`: inside a JSON string (tool-call
        arguments), where a value's quotes and newlines must stay escaped."""
        if "<" not in text:
            return text
        values = self._values

        def value(match: re.Match[str]) -> str:
            found = values.get(match.group())
            if found is None:
                return match.group()  # not ours: the model wrote it, or another vault's
            return orjson.dumps(found).decode()[1:-1] if escaped else found

        return PLACEHOLDER.sub(value, text)

    def split_safe(self, text: str) -> tuple[str, str]:
        """`text` restored up to where a placeholder may still be being written, and that
        tail (held back until the next piece of the stream, or its end)."""
        cut = text.rfind("<")
        if cut >= 0 and len(text) - cut < MAX_PLACEHOLDER and _PARTIAL.match(text, cut):
            return text[:cut], text[cut:]
        return text, ""

    def counts(self) -> dict[str, int]:
        return dict(sorted(self.found.items()))
