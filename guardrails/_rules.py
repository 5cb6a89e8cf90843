"""Content rules: deny and allow lists (regular expressions, or example phrases by embedding
similarity), prompt size; and the judge's verdict. Each refusal is a `Refusal` the gateway
turns into its client API's error shape."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from guardrails._config import JudgeConfig, Rule

Embed = Callable[[str], Awaitable[list[float]]]
# A backend of the gateway asked as a judge: (backend name, chat body) -> its answer text.
AskBackend = Callable[[str, dict[str, Any]], Awaitable[str]]

JUDGE_PROMPT = """Task: Check if there is unsafe content in the 'User' messages in the \
conversation below according to the safety policy.

<BEGIN CONVERSATION>
{conversation}
<END CONVERSATION>

Provide your safety assessment for the user's messages in the above conversation:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories."""


@dataclass(slots=True)
class Refusal(Exception):
    """Why a request is refused: status, a stable code, a message naming no value."""

    status: int
    code: str
    message: str
    entities: dict[str, int] = field(default_factory=dict)
    verdict: str | None = None  # a judge's, when it flagged

    def __str__(self) -> str:
        return self.message


class RuleSet:
    """The rules of the policies one request got, compiled once per policy combination."""

    def __init__(self, deny: Sequence[Rule], allow: Sequence[Rule], embed: Embed | None):
        self.deny, self.allow = tuple(deny), tuple(allow)
        self._embed = embed
        self._compiled = {
            rule.name: re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)
            for rule in (*self.deny, *self.allow)
            if rule.pattern is not None
        }
        self._examples: dict[str, list[list[float]]] = {}

    @property
    def semantic(self) -> bool:
        return any(rule.examples for rule in (*self.deny, *self.allow))

    async def check(self, text: str, last_user: str) -> None:
        """Raises `Refusal` for a denied or off-topic prompt."""
        vector = None
        if self.semantic:
            if self._embed is None:
                raise Refusal(503, "guardrail_unavailable", "no embedder for example rules")
            vector = await self._embed(last_user)
        for rule in self.deny:
            if await self._matches(rule, text, vector):
                raise Refusal(400, "content_denied", f"the request matches deny rule {rule.name!r}")
        if self.allow and not [r for r in self.allow if await self._matches(r, text, vector)]:
            names = ", ".join(repr(rule.name) for rule in self.allow)
            raise Refusal(
                400, "off_topic", f"the request matches none of the allowed topics ({names})"
            )

    async def _matches(self, rule: Rule, text: str, vector: list[float] | None) -> bool:
        pattern = self._compiled.get(rule.name)
        if pattern is not None:
            return pattern.search(text) is not None
        assert self._embed is not None and vector is not None
        examples = self._examples.get(rule.name)
        if examples is None:
            examples = [await self._embed(example) for example in rule.examples]
            self._examples[rule.name] = examples
        return max(_cosine(vector, example) for example in examples) >= rule.similarity


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...]
    source: str  # the judge: a backend name or "url"

    def describe(self) -> str:
        return ("unsafe" if self.flagged else "safe") + (
            f" {','.join(self.categories)}" if self.categories else ""
        )


async def judge(
    config: JudgeConfig, conversation: str, ask: AskBackend, client: httpx.AsyncClient
) -> Verdict:
    """One verdict on a (masked) conversation; raises TimeoutError or httpx/backend errors."""
    async with asyncio.timeout(config.timeout_s):
        if config.backend is not None:
            body = {
                "messages": [
                    {"role": "user", "content": JUDGE_PROMPT.format(conversation=conversation)}
                ],
                "max_tokens": config.max_tokens,
                "temperature": 0,
            }
            answer = await ask(config.backend, body)
            flagged = re.search(config.flag_pattern, answer, re.IGNORECASE) is not None
            lines = answer.strip().splitlines()
            categories = (
                tuple(c.strip() for c in lines[1].split(",")) if flagged and len(lines) > 1 else ()
            )
            return Verdict(flagged, categories, config.backend)
        return await _moderation(config, conversation, client)


async def _moderation(config: JudgeConfig, text: str, client: httpx.AsyncClient) -> Verdict:
    import os

    headers = {}
    if config.api_key_env:
        headers["authorization"] = f"Bearer {os.environ.get(config.api_key_env, '')}"
    assert config.url is not None
    response = await client.post(config.url, json={"input": text}, headers=headers)
    response.raise_for_status()
    result = (response.json().get("results") or [{}])[0]
    categories = tuple(sorted(k for k, v in (result.get("categories") or {}).items() if v))
    return Verdict(bool(result.get("flagged")), categories, "url")
