"""Per-request accounting: what each request cost (from the upstream's own usage, streams
included), written to the cost ledger and the request log."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from deployments import BackendConfig
from gateway.ledger import Ledger
from gateway.request_log import DEFAULT_REDACTIONS, Redactor, RequestLog

logger = logging.getLogger("ray.serve")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerConfig(_Strict):
    """Where actual cost per request is stored (SQLite, WAL mode)."""

    enabled: bool = Field(default=True, description="False keeps no ledger.")
    path: str = Field(
        default="var/ledger.sqlite",
        description="SQLite file; relative paths resolve against the project root. One per "
        "ingress host: replicas on one host share it (WAL allows concurrent writers).",
    )


class RequestLogConfig(_Strict):
    """One JSON line per request."""

    enabled: bool = Field(default=True, description="False writes no request log.")
    path: str = Field(
        default="var/requests.jsonl", description="Log file; relative to the project root."
    )
    max_bytes: int = Field(default=100 * 2**20, ge=1024, description="Rotate beyond this size.")
    backups: int = Field(default=5, ge=0, description="Rotated files kept.")
    bodies: bool = Field(
        default=False, description="Also log prompts and completions (after redaction)."
    )
    redact: tuple[str, ...] = Field(
        default=DEFAULT_REDACTIONS,
        description="Regular expressions replaced by [REDACTED] in logged bodies (defaults: "
        "e-mail addresses, API-key-like strings, card numbers).",
    )


def key_id(authorization: str | None) -> str | None:
    """A stable, non-reversible id for the client's API key (never the key itself)."""
    if not authorization:
        return None
    token = authorization.removeprefix("Bearer ").strip()
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12] if token else None


@dataclass(slots=True)
class Trace:
    """What one request did, filled in as it goes."""

    request_id: str
    endpoint: str
    stream: bool
    key_id: str | None = None
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    route: str | None = None
    task: str | None = None
    backend: str | None = None
    attempts: list[str] = field(default_factory=list)
    experiment: str | None = None
    arm: str | None = None
    template: str | None = None
    shadow_of: str | None = None  # a shadow request's primary
    status: int = 200
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_source: str = "none"  # "upstream", or "none" when the upstream reported nothing
    estimated_cost_usd: float | None = None
    estimated_prompt_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    request_body: Any = None
    response_text: str | None = None

    def take_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self.prompt_tokens, self.completion_tokens = prompt, completion
            self.usage_source = "upstream"


_TRACE_FIELDS = tuple(f.name for f in fields(Trace))


def response_text(result: dict[str, Any]) -> str:
    choices = result.get("choices") or []
    parts = []
    for choice in choices:
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
    return "\n".join(p for p in parts if isinstance(p, str))


class Accounting:
    """Costs requests and writes them to the ledger and the request log (both optional)."""

    def __init__(
        self,
        backends: dict[str, BackendConfig],
        ledger: LedgerConfig,
        request_log: RequestLogConfig,
        project_root: Path,
        metrics: Any = None,
    ) -> None:
        """`metrics`: a `gateway.metrics.GatewayMetrics` (needs a Ray Serve replica), or None."""
        self.metrics = metrics
        self._prices = {
            name: (b.pricing.input_per_mtok, b.pricing.output_per_mtok)
            for name, b in backends.items()
        }
        self.ledger = Ledger(project_root / ledger.path) if ledger.enabled else None
        self.log = (
            RequestLog(project_root / request_log.path, request_log.max_bytes, request_log.backups)
            if request_log.enabled
            else None
        )
        self.log_bodies = request_log.enabled and request_log.bodies
        self._redact = Redactor(request_log.redact)

    def cost(self, backend: str, prompt_tokens: int, completion_tokens: int) -> float:
        input_price, output_price = self._prices[backend]
        return (prompt_tokens * input_price + completion_tokens * output_price) / 1e6

    def finish(self, trace: Trace) -> None:
        """Close a request's books; never raises into the request path."""
        try:
            trace.latency_ms = (time.perf_counter() - trace.started) * 1000
            if trace.usage_source == "none" and trace.completion_tokens is not None:
                # No usage from upstream: the router's prompt count, the stream's events.
                trace.prompt_tokens = trace.estimated_prompt_tokens or 0
                trace.usage_source = "estimated"
            if trace.backend and trace.prompt_tokens is not None:
                completion = trace.completion_tokens or 0
                trace.cost_usd = self.cost(trace.backend, trace.prompt_tokens, completion)
            if self.metrics is not None:
                self.metrics.record(trace)
            row = {name: getattr(trace, name) for name in _TRACE_FIELDS}  # shallow, unlike asdict
            if self.ledger is not None:
                self.ledger.add(row)
            if self.log is not None:
                self.log.write(self._log_entry(row))
        except Exception:  # bookkeeping must not fail a request that already succeeded
            logger.exception("accounting failed for request %s", trace.request_id)

    def _log_entry(self, row: dict[str, Any]) -> dict[str, Any]:
        dropped = ("started", "request_body", "estimated_prompt_tokens")
        entry = {k: v for k, v in row.items() if k not in dropped}
        entry.pop("response_text")
        entry["fallback_chain"] = entry.pop("attempts")
        entry["api_key_id"] = entry.pop("key_id")
        if self.log_bodies:
            entry["request"] = orjson.loads(
                self._redact(orjson.dumps(row["request_body"]).decode())
            )
            entry["response"] = self._redact(row["response_text"] or "")
        return entry

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.log is not None:
            self.log.close()
