"""Feeds the pure router: the prepared request, its task, live stats; turns a decision into
headers, an explanation and the start of the request record."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployments import Endpoint, max_output_tokens
from gateway.config import GatewayConfig
from gateway.core.attempts import AttemptOutcome, Observer
from gateway.core.learner import TaskLearner
from gateway.core.profiles import profile_for, quality_for
from gateway.core.templates import apply as apply_template
from gateway.errors import OpenAIError
from llmops import Assignment, Experiments, PrototypeStore, QualityFile, RequestRecord
from router import (
    Availability,
    BackendStats,
    Decision,
    Embedder,
    HintError,
    LatencySnapshot,
    RequestSummary,
    Router,
    RoutingHints,
    Target,
    TaskClassifier,
    parse_hints,
)
from storage import Database

logger = logging.getLogger("ray.serve")


def prompt_text(endpoint: Endpoint, body: Mapping[str, Any]) -> str:
    """The text a tokenizer or classifier should read: message contents, or the prompt (or
    the texts to embed)."""
    if endpoint == "embeddings":
        found = body.get("input", "")
        texts = found if isinstance(found, list) else [found]
        return "\n".join(text for text in texts if isinstance(text, str))
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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to route: gateway-only fields removed, its template applied."""

    endpoint: Endpoint
    body: dict[str, Any]
    hints: RoutingHints
    kind: Target  # what `model` names
    target: str
    template: str | None  # `name@version` applied
    assignment: Assignment | None  # experiment arm, on a route with an experiment


@dataclass(frozen=True, slots=True)
class Routed:
    """A prepared request and the router's decision for it."""

    prepared: Prepared
    decision: Decision
    output_cap: int | None = None  # a budgeted caller's output limit, where it set none

    @property
    def body(self) -> dict[str, Any]:
        return self.prepared.body

    def body_for(self, backend: str) -> dict[str, Any]:
        """The body `backend` gets: with the output limit the caller's budget was reserved
        for, where the request set none (so no answer can cost more than was reserved)."""
        body = self.prepared.body
        if self.output_cap is None or self.prepared.endpoint == "embeddings":
            return body
        if max_output_tokens(body) is not None:
            return body
        evaluation = self.decision.evaluation(backend)
        limit = evaluation.estimate.max_output_tokens if evaluation else None
        return {**body, "max_tokens": limit or self.output_cap}

    def estimated_cost_usd(self, backend: str) -> float:
        """The router's expected cost of this request on `backend` (0 where it has none)."""
        evaluation = self.decision.evaluation(backend)
        return evaluation.estimate.cost_usd if evaluation is not None else 0.0

    def worst_cost_usd(self) -> float:
        """What the request can cost at most on any backend it may be tried on."""
        costs = [
            e.estimate.max_cost_usd if e.estimate.max_cost_usd is not None else e.estimate.cost_usd
            for e in self.decision.evaluations
            if e.backend in self.decision.attempts
        ]
        return max(costs, default=0.0)

    def headers(self) -> dict[str, str]:
        decision, headers = self.decision, {"x-gateway-task": self.decision.task}
        if decision.route:
            headers["x-gateway-route"] = decision.route
        chosen = decision.chosen_evaluation
        if chosen is not None:
            headers["x-gateway-estimated-cost-usd"] = f"{chosen.estimate.cost_usd:.8f}"
            headers["x-gateway-predicted-latency-ms"] = f"{chosen.estimate.latency_ms:.1f}"
        if decision.budget_infeasible:
            headers["x-gateway-budget-infeasible"] = "true"
        if decision.spillover is not None:
            headers["x-gateway-spillover"] = decision.spillover[1]
        if self.prepared.template:
            headers["x-gateway-template"] = self.prepared.template
        assignment = self.prepared.assignment
        if assignment is not None:
            headers["x-gateway-experiment"] = f"{assignment.experiment}/{assignment.arm}"
        return headers

    def start_record(self, record: RequestRecord, log_body: bool) -> None:
        """Everything the decision tells the request record."""
        decision, assignment = self.decision, self.prepared.assignment
        record.stream = bool(self.body.get("stream"))
        record.route, record.task = decision.route, decision.task
        if decision.spillover is not None:
            record.spilled_from, record.spillover = decision.spillover
        record.template = self.prepared.template
        if assignment is not None:
            record.experiment, record.arm = assignment.experiment, assignment.arm
        chosen = decision.chosen_evaluation
        if chosen is not None:
            record.estimated_cost_usd = chosen.estimate.cost_usd
            record.estimated_prompt_tokens = chosen.estimate.prompt_tokens
        if log_body:
            record.request_body = self.body

    def explain(self) -> dict[str, Any]:
        decision, assignment = self.decision, self.prepared.assignment
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
            "spillover": (
                {"backend": decision.spillover[0], "reason": decision.spillover[1]}
                if decision.spillover
                else None
            ),
            "template": self.prepared.template,
            "experiment": assignment.experiment if assignment else None,
            "arm": assignment.arm if assignment else None,
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
                    "cold_start_ms": round(e.estimate.cold_start_ms, 1),
                    "latency_from": e.estimate.latency_source,
                    "quality": e.quality,
                    "quality_from": e.quality_source,
                    "score": decision.scores.get(e.backend),
                }
                for e in decision.evaluations
            ],
        }


class LiveStats(Observer):
    """In-flight counts and measured latency per backend, from the feedback channel."""

    def __init__(self, stats: Mapping[str, BackendStats]) -> None:
        self.stats = dict(stats)
        self._snapshots: dict[str, LatencySnapshot] = {}

    def attempt_started(self, backend: str) -> None:
        self.stats[backend].started()

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        stats = self.stats[outcome.backend]
        stats.finished()
        if not outcome.succeeded or outcome.first_byte is None or outcome.ended is None:
            return
        if outcome.cold:  # a cold start's wait is learned by the capacity watcher instead
            return
        if outcome.streamed:
            tokens = outcome.tokens or 1
            ttft_ms = (outcome.first_byte - outcome.started) * 1000
            rest_ms = (outcome.ended - outcome.first_byte) * 1000
            stats.record(ttft_ms, rest_ms / (tokens - 1) if tokens > 1 else None, tokens)
        elif outcome.tokens is not None:
            stats.record_total((outcome.ended - outcome.started) * 1000, outcome.tokens)
        else:
            return
        self._snapshots.pop(outcome.backend, None)

    def snapshots(self) -> dict[str, LatencySnapshot]:
        result = {}
        for name, stats in self.stats.items():
            cached = self._snapshots.get(name)
            if cached is None:
                cached = self._snapshots[name] = stats.snapshot()
            result[name] = replace(cached, in_flight=stats.in_flight)
        return result


class Routing:
    """Prepares requests and asks the router. One instance per ingress replica."""

    def __init__(
        self,
        config: GatewayConfig,
        project_root: Path,
        embed: Embedder | None = None,
        database: Database | None = None,
    ) -> None:
        """`embed` defaults to all-MiniLM-L6-v2 when any task has examples."""
        self.config = config
        self.quality = (
            QualityFile(project_root / config.quality_file) if config.quality_file else None
        )
        measured = self.quality.read() if self.quality else {}
        profiles = {
            n: profile_for(n, b, project_root, measured.get(n)) for n, b in config.backends.items()
        }
        self.router = Router(config, profiles, {n: b.model for n, b in config.backends.items()})
        self.live = LiveStats({n: BackendStats(p.latency_prior) for n, p in profiles.items()})
        self.known_tasks = {config.default_task, *config.tasks}
        for backend in config.backends.values():
            self.known_tasks.update(backend.tasks or ())
        if embed is None and any(task.examples for task in config.tasks.values()):
            from router import MiniLMEmbedder

            embed = MiniLMEmbedder()
        self.embedder = embed  # None: no task has examples (the classifier embeds nothing)
        self.classifier = TaskClassifier(config, embed)
        self.learner = None
        if self.classifier.learns:
            where = database.acquire() if database else project_root / config.ledger.path
            store = PrototypeStore(where, keep=config.task_learning)
            self.learner = TaskLearner(self.classifier, store)
        self.experiments = Experiments(config.experiments)

    def close(self) -> None:
        """Stop learning (blocking: run it in a thread)."""
        if self.learner is not None:
            self.learner.close()

    def _reload_quality(self, quality: QualityFile) -> None:
        """A quality file written since (`gateway eval --write-quality`) takes effect now
        (only the quality: no tokenizer is loaded again on the request path)."""
        measured = quality.read()
        for name, backend in self.config.backends.items():
            self.router.update_profile(name, **quality_for(backend, measured.get(name)))

    def warm(self) -> None:
        """First-time work of the tokenizers and the task classifier, done before the first
        request (blocking: run it in a thread)."""
        text = "warm up: what is the capital of France? def f(x): return x * 2"
        self.classifier.classify(text)
        self.router.count_tokens(text)

    def prepare(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        headers: Mapping[str, str],
        request_id: str,
    ) -> Prepared:
        """Resolve the target, assign an experiment arm, apply the template; the body given
        is the client's and is not changed."""
        body = dict(body)
        if self.quality is not None and self.quality.due():
            self._reload_quality(self.quality)
        try:
            hints = parse_hints(body.pop("routing", None), headers)
        except HintError as exc:
            raise OpenAIError(
                str(exc), status=400, param=exc.field, code="invalid_routing_hint"
            ) from None
        if hints.task is not None and hints.task not in self.known_tasks:
            raise OpenAIError(
                f"unknown task {hints.task!r}; known: {', '.join(sorted(self.known_tasks))}",
                status=400,
                param="routing.task",
                code="invalid_routing_hint",
            )
        kind, target = self.router.resolve_target(body.get("model"))
        assignment = None
        if kind == Target.ROUTE:
            assignment = self.experiments.assign(target, body, headers, request_id)
        # An arm's template is its treatment; else the request's, else the route's.
        template_ref = (
            (assignment.template if assignment else None)
            or hints.template
            or (self.config.routes[target].template if kind == Target.ROUTE else None)
        )
        applied = None
        if template_ref is not None:
            applied = apply_template(
                self.config.prompt_templates, template_ref, endpoint, body, dict(hints.variables)
            )
        return Prepared(endpoint, body, hints, kind, target, applied, assignment)

    async def decide(
        self,
        prepared: Prepared,
        availability: Mapping[str, Availability],
        request_id: str,
        output_cap: int | None = None,
    ) -> Routed:
        text = prompt_text(prepared.endpoint, prepared.body)
        hints = prepared.hints
        if prepared.kind == Target.BACKEND or prepared.endpoint == "embeddings":
            # Not routed by task (a backend named directly, or texts to embed): skip the
            # classifier's milliseconds.
            task = self.classifier.classify("", hints.task)
        elif hints.task is not None:
            task = self.classifier.classify(text, hints.task)
            if self.learner is not None:
                self.learner.offer(text, hints.task)  # the client labelled it: learn from it
        elif hints.task is None and self.classifier.uses_embeddings:
            # Milliseconds of CPU: off the event loop, so other requests keep flowing.
            task = await asyncio.to_thread(self.classifier.classify, text)
        else:
            task = self.classifier.classify(text, hints.task)
        summary = RequestSummary(
            prompt_text=text,
            max_tokens=0 if prepared.endpoint == "embeddings" else max_output_tokens(prepared.body),
            choices=choices_billed(prepared.body),
            output_cap=output_cap,
            endpoint=prepared.endpoint,
            hints=hints,
            task=task.task,
            task_source=task.source,
            task_similarity=task.similarity,
            seed=zlib.crc32(request_id.encode()) if request_id else time.monotonic_ns(),
        )
        assignment = prepared.assignment
        snapshots = self.live.snapshots()
        decision = self.router.decide_target(
            prepared.kind,
            prepared.target,
            availability,
            summary,
            snapshots,
            pinned=assignment.backend if assignment else None,
        )
        return Routed(prepared, decision, output_cap)

    async def route(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        headers: Mapping[str, str],
        availability: Mapping[str, Availability],
        request_id: str,
        output_cap: int | None = None,
    ) -> Routed:
        prepared = self.prepare(endpoint, body, headers, request_id)
        return await self.decide(prepared, availability, request_id, output_cap)


def choices_billed(body: Mapping[str, Any]) -> int:
    """Completions a provider bills for one request: `n`, or `best_of` where larger."""
    counts = [body.get("n"), body.get("best_of")]
    return max([1, *(c for c in counts if isinstance(c, int) and not isinstance(c, bool))])
