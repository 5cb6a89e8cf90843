"""Per-request routing hints: the `routing` body field, or `X-*` headers (the body wins)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class HintError(ValueError):
    """An ill-typed hint; `field` names it as the client wrote it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class RoutingHints:
    latency_budget_ms: float | None = None
    task: str | None = None
    max_cost_usd: float | None = None
    template: str | None = None  # prompt template, `name` or `name@version`
    variables: tuple[tuple[str, str], ...] = ()  # the template's variables, sorted
    cache: str | None = None  # "no-cache" (refresh the entry) or "no-store" (skip the cache)


_HEADERS = {
    "latency_budget_ms": "x-latency-budget-ms",
    "task": "x-task",
    "max_cost_usd": "x-max-cost-usd",
    "template": "x-prompt-template",
    "cache": "x-gateway-cache",
}
CACHE_DIRECTIVES = ("no-cache", "no-store")
_BODY_ONLY = {"variables"}


def _positive_number(field: str, value: Any, *, from_header: bool) -> float:
    if from_header and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise HintError(field, f"'{field}' must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HintError(field, f"'{field}' must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise HintError(field, f"'{field}' must be a positive number, got {value!r}")
    return float(value)


def _cache_directive(raw: Any, field: str) -> str:
    if raw is False:  # `routing.cache: false`: as no-store
        return "no-store"
    value = raw.strip().lower() if isinstance(raw, str) else raw
    if value not in CACHE_DIRECTIVES:
        raise HintError(field, f"'{field}' must be one of {', '.join(CACHE_DIRECTIVES)}")
    return str(value)


def parse_hints(routing: Any, headers: Mapping[str, str]) -> RoutingHints:
    """Hints from the body's `routing` object and the request headers (lower-case keys)."""
    if routing is None:
        routing = {}
    if not isinstance(routing, dict):
        raise HintError("routing", "'routing' must be an object")
    unknown = set(routing) - set(_HEADERS) - _BODY_ONLY
    if unknown:
        raise HintError(
            f"routing.{sorted(unknown)[0]}", f"unknown routing hint {sorted(unknown)[0]!r}"
        )
    values: dict[str, Any] = {}
    for key, header in _HEADERS.items():
        if key in routing and routing[key] is not None:
            values[key] = (routing[key], f"routing.{key}", False)
        elif header in headers:
            values[key] = (headers[header], header, True)
    parsed: dict[str, Any] = {}
    for key in ("latency_budget_ms", "max_cost_usd"):
        if key in values:
            raw, field, from_header = values[key]
            parsed[key] = _positive_number(field, raw, from_header=from_header)
    for key in ("task", "template"):
        if key in values:
            raw, field, _ = values[key]
            if not isinstance(raw, str) or not raw.strip():
                raise HintError(field, f"'{field}' must be a non-empty string")
            parsed[key] = raw.strip()
    if "cache" in values:
        parsed["cache"] = _cache_directive(*values["cache"][:2])
    variables = routing.get("variables")
    if variables is not None:
        if not isinstance(variables, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in variables.values()
        ):
            raise HintError(
                "routing.variables", "'routing.variables' must map names to strings or numbers"
            )
        parsed["variables"] = tuple(sorted((str(k), str(v)) for k, v in variables.items()))
    return RoutingHints(**parsed)
