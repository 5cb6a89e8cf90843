"""What one request did: the record every sink (ledger, request log, metrics) is written from."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from typing import Any

from tracing import Trace

# Field metadata: `ledger=False` keeps a field out of the ledger's columns.
_NOT_IN_LEDGER: dict[str, Any] = {"ledger": False}


def key_id(authorization: str | None) -> str | None:
    """A stable, non-reversible id for the client's API key (never the key itself)."""
    if not authorization:
        return None
    token = authorization.removeprefix("Bearer ").strip()
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12] if token else None


@dataclass(slots=True)
class RequestRecord:
    """One request, filled in as it goes. The ledger's columns are these fields' names."""

    request_id: str
    endpoint: str
    stream: bool
    key_id: str | None = None
    key_name: str | None = None
    team: str | None = None
    key_metadata: dict[str, Any] | None = None  # owner, tags: from the key's record
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter, metadata=_NOT_IN_LEDGER)
    route: str | None = None
    task: str | None = None
    backend: str | None = None
    attempts: list[str] = field(default_factory=list, metadata=_NOT_IN_LEDGER)
    experiment: str | None = None
    arm: str | None = None
    template: str | None = None
    shadow_of: str | None = None  # a shadow request's primary
    spillover: str | None = None  # why the preferred backend was passed over: cold_start, queue
    spilled_from: str | None = None  # that backend
    ingress: str | None = None  # the ingress replica that answered (`ledger.scope: cluster`)
    status: int = 200
    error_code: str | None = None
    prompt_tokens: int | None = None  # all of them, read from a provider's prompt cache too
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int | None = None  # prompt tokens written to it (Anthropic)
    usage_source: str = "none"  # "upstream", "estimated", "cache" or "none"
    estimated_cost_usd: float | None = None
    estimated_prompt_tokens: int | None = field(default=None, metadata=_NOT_IN_LEDGER)
    cost_usd: float | None = None
    # The gateway's response cache: "hit", "miss" or "bypass" (None: not a cached route).
    cache: str | None = None
    saved_usd: float | None = None  # a hit: what the answer cost when it was made, priced now
    # Guardrails: what they did ("passed", "masked", "anonymized", "blocked", "denied",
    # "flagged", "unchecked", "unavailable"), the entity types masked or found with their
    # counts ("EMAIL_ADDRESS:2,PERSON:1"; never a value), and a judge's verdict.
    guardrail: str | None = None
    guardrail_entities: str | None = None
    guardrail_verdict: str | None = None
    # Passages added from vector stores (a route's `retrieval:` or the `file_search` tool).
    retrieved: int | None = None
    # Calls abandoned without usage (timed out, the client left): the upstream still bills
    # them; their estimates are added to `cost_usd` when the books close.
    abandoned_usd: float = field(default=0.0, metadata=_NOT_IN_LEDGER)
    # A stream continued after its backend broke mid-way: the first backend that broke
    # (`backend` finished it). The token counts are every backend's; `billed_elsewhere` holds
    # (backend, prompt, completion) of each that broke, costed at its own price.
    continued_from: str | None = None
    billed_elsewhere: list[tuple[str, int, int]] = field(
        default_factory=list, metadata=_NOT_IN_LEDGER
    )
    # Live-answer signals (drift monitors' passive side): how the answer ended, and "empty"
    # or "refusal" where its text says so (whole answers, and streams whose text is read).
    finish_reason: str | None = None
    answer_signal: str | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    request_body: Any = field(default=None, metadata=_NOT_IN_LEDGER)
    response_text: str | None = field(default=None, metadata=_NOT_IN_LEDGER)
    # The request's trace (`tracing.Trace`; None: not traced): its steps and attempts add
    # spans to it as they run, and it is exported once the request is finished.
    trace: Trace | None = field(default=None, metadata=_NOT_IN_LEDGER)

    def take_usage(self, usage: dict[str, Any] | None) -> None:
        """Token counts from an upstream's `usage` object, when it has both."""
        if not usage:
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        total = usage.get("total_tokens")
        if completion is None and isinstance(prompt, int) and isinstance(total, int):
            completion = total - prompt  # embeddings: no output tokens
        if isinstance(prompt, int) and isinstance(completion, int):
            self.prompt_tokens, self.completion_tokens = prompt, completion
            self.usage_source = "upstream"
            details = usage.get("prompt_tokens_details")
            read = details.get("cached_tokens") if isinstance(details, dict) else None
            written = usage.get("cache_creation_input_tokens")
            self.cached_tokens = read if isinstance(read, int) and read > 0 else None
            self.cache_write_tokens = written if isinstance(written, int) and written > 0 else None

    def fail(self, status: int, code: str | None) -> None:
        self.status, self.error_code = status, code

    def as_row(self) -> dict[str, Any]:
        """Every field by name, shallow (unlike `dataclasses.asdict`, which deep-copies)."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
LEDGER_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(RequestRecord) if f.metadata.get("ledger", True)
)


def response_text(result: dict[str, Any]) -> str:
    """The generated text of a non-streamed answer (all choices; or the text of an Anthropic
    Message or an OpenAI Response passed through), for the request log."""
    parts = []
    for choice in result.get("choices") or []:
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
    for block in result.get("content") or [] if result.get("type") == "message" else []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text") or "")
    for item in result.get("output") or [] if result.get("object") == "response" else []:
        for part in item.get("content") or [] if isinstance(item, dict) else []:
            if isinstance(part, dict) and part.get("type") == "output_text":
                parts.append(part.get("text") or "")
    return "\n".join(p for p in parts if isinstance(p, str))
