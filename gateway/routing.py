"""Feeds the pure router: request summary, hints, task, live stats; turns decisions into
headers and explanations. One instance per ingress replica."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from deployments import Endpoint
from gateway.config import GatewayConfig
from gateway.errors import OpenAIError
from gateway.experiments import Assignment, Experiments
from gateway.profiles import profile_for
from gateway.templates import apply as apply_template
from router import (
    Availability,
    BackendStats,
    Decision,
    Embedder,
    HintError,
    LatencySnapshot,
    NoBackendAvailable,
    RequestSummary,
    Router,
    TaskClassifier,
    parse_hints,
)

logger = logging.getLogger("ray.serve")


def prompt_text(endpoint: Endpoint, body: Mapping[str, Any]) -> str:
    """The text a tokenizer or classifier should read: message contents, or the prompt."""
    if endpoint == "completions":
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            return prompt
        return "\n".join(p for p in prompt if isinstance(p, str))
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p.get("text"), str))
    return "\n".join(parts)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) else None


class GatewayRouter:
    def __init__(
        self, config: GatewayConfig, project_root: Path, embed: Embedder | None = None
    ) -> None:
        """`embed` defaults to all-MiniLM-L6-v2 when any task has examples."""
        self.config = config
        profiles = {n: profile_for(n, b, project_root) for n, b in config.backends.items()}
        self.router = Router(config, profiles, {n: b.model for n, b in config.backends.items()})
        self.stats = {n: BackendStats(p.latency_prior) for n, p in profiles.items()}
        self._snapshots: dict[str, LatencySnapshot] = {}
        self.known_tasks = {config.default_task, *config.tasks}
        for backend in config.backends.values():
            self.known_tasks.update(backend.tasks or ())
        if embed is None and any(task.examples for task in config.tasks.values()):
            from router._embedding import MiniLMEmbedder

            embed = MiniLMEmbedder()
        self.classifier = TaskClassifier(config, embed)
        self.experiments = Experiments(config.experiments)

    # ---- deciding ---------------------------------------------------------------------------

    async def decide(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        headers: Mapping[str, str],
        availability: Mapping[str, Availability],
        request_id: str,
    ) -> Decision:
        """Route a validated body; removes the gateway-only `routing` field from it."""
        try:
            hints = parse_hints(body.pop("routing", None), headers)
        except HintError as exc:
            raise OpenAIError(400, str(exc), param=exc.field, code="invalid_routing_hint") from None
        if hints.task is not None and hints.task not in self.known_tasks:
            raise OpenAIError(
                400,
                f"unknown task {hints.task!r}; known: {', '.join(sorted(self.known_tasks))}",
                param="routing.task",
                code="invalid_routing_hint",
            )
        model = body.get("model")
        kind, target = self.router.resolve_target(model)
        assignment = None
        if kind == "route":
            assignment = self.experiments.assign(target, body, headers, request_id)
        # An arm's template is its treatment; else the request's, else the route's.
        template_ref = (
            (assignment.template if assignment else None)
            or hints.template
            or (self.config.routes[target].template if kind == "route" else None)
        )
        applied = None
        if template_ref is not None:
            variables = dict(hints.variables)
            applied = apply_template(
                self.config.prompt_templates, template_ref, endpoint, body, variables
            )
        text = prompt_text(endpoint, body)
        if kind == "backend":
            # A backend named directly is not routed: skip the classifier's ~14 ms.
            task = self.classifier.classify("", hints.task)
        elif hints.task is None and self.classifier.uses_embeddings:
            # ~14 ms of CPU: off the event loop, so other requests keep flowing.
            task = await asyncio.to_thread(self.classifier.classify, text)
        else:
            task = self.classifier.classify(text, hints.task)
        summary = RequestSummary(
            prompt_text=text,
            max_tokens=_max_tokens(body),
            hints=hints,
            task=task.task,
            task_source=task.source,
            task_similarity=task.similarity,
            seed=zlib.crc32(request_id.encode()) if request_id else time.monotonic_ns(),
        )
        decision = self._decide(model, target, assignment, availability, summary)
        if assignment is not None:
            decision = replace(decision, experiment=assignment.experiment, arm=assignment.arm)
        return replace(decision, template=applied) if applied else decision

    def _decide(
        self,
        model: str | None,
        route: str,
        assignment: Assignment | None,
        availability: Mapping[str, Availability],
        summary: RequestSummary,
    ) -> Decision:
        snapshots = self.snapshots()
        if assignment is None or assignment.backend is None:
            return self.router.decide(model, availability, summary, snapshots)
        try:
            arm = self.router.decide(assignment.backend, availability, summary, snapshots)
        except NoBackendAvailable:  # the arm's backend is down: the route serves as usual
            return self.router.decide(model, availability, summary, snapshots)
        fallbacks = tuple(
            name
            for name in self.config.routes[route].fallbacks
            if name != assignment.backend and availability.get(name, Availability()).available
        )
        return replace(
            arm,
            route=route,
            policy=f"experiment:{assignment.experiment}",
            attempts=(assignment.backend, *fallbacks),
        )

    def snapshots(self) -> dict[str, LatencySnapshot]:
        result = {}
        for name, stats in self.stats.items():
            cached = self._snapshots.get(name)
            if cached is None:
                cached = self._snapshots[name] = stats.snapshot()
            result[name] = replace(cached, in_flight=stats.in_flight)
        return result

    # ---- measuring --------------------------------------------------------------------------

    def started(self, backend: str) -> None:
        self.stats[backend].in_flight += 1

    def finished(self, backend: str) -> None:
        self.stats[backend].in_flight -= 1

    def record_total(self, backend: str, total_ms: float, output_tokens: int) -> None:
        self.stats[backend].record_total(total_ms, output_tokens)
        self._snapshots.pop(backend, None)

    def record_stream(self, backend: str, ttft_ms: float, rest_ms: float, tokens: int) -> None:
        tpot = rest_ms / (tokens - 1) if tokens > 1 else None
        self.stats[backend].record(ttft_ms, tpot, tokens)
        self._snapshots.pop(backend, None)

    # ---- telling ----------------------------------------------------------------------------

    @staticmethod
    def headers(decision: Decision) -> dict[str, str]:
        headers = {"x-gateway-task": decision.task}
        if decision.route:
            headers["x-gateway-route"] = decision.route
        chosen = decision.chosen_evaluation
        if chosen is not None:
            headers["x-gateway-estimated-cost-usd"] = f"{chosen.estimate.cost_usd:.8f}"
            headers["x-gateway-predicted-latency-ms"] = f"{chosen.estimate.latency_ms:.1f}"
        if decision.budget_infeasible:
            headers["x-gateway-budget-infeasible"] = "true"
        if decision.template:
            headers["x-gateway-template"] = decision.template
        if decision.experiment:
            headers["x-gateway-experiment"] = f"{decision.experiment}/{decision.arm}"
        return headers

    @staticmethod
    def explain(decision: Decision) -> dict[str, Any]:
        return {
            "route": decision.route,
            "policy": decision.policy,
            "task": {
                "name": decision.task,
                "source": decision.task_source,
                "similarity": decision.task_similarity,
            },
            "chosen": decision.chosen,
            "attempts": list(decision.attempts),
            "budget_infeasible": decision.budget_infeasible,
            "template": decision.template,
            "experiment": decision.experiment,
            "arm": decision.arm,
            "candidates": [
                {
                    "backend": e.backend,
                    "eligible": e.eligible,
                    "reasons": list(e.reasons),
                    "prompt_tokens": e.estimate.prompt_tokens,
                    "prompt_tokens_counted_with": e.tokenizer,
                    "output_tokens": e.estimate.output_tokens,
                    "output_tokens_from": e.estimate.output_tokens_source,
                    "estimated_cost_usd": e.estimate.cost_usd,
                    "predicted_latency_ms": round(e.estimate.latency_ms, 1),
                    "queue_ms": round(e.estimate.queue_ms, 1),
                    "latency_from": e.estimate.latency_source,
                    "quality": e.quality,
                    "score": decision.scores.get(e.backend),
                }
                for e in decision.evaluations
            ],
        }
