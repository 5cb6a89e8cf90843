"""The request pipeline, as plain Python: read, prepare, route, call backends with
fallbacks and retries, relay, account. No Ray, no HTTP framework: the Serve ingress
(`gateway.serve.ingress`) and the HTTP layer (`gateway.http`) only adapt it.

Every collaborator is injected (backends, routing, resilience, health, feedback), the way
Ray Serve LLM's `LLMServer` takes its engine, so tests build one around `FakeBackend`s."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from access import AccessError, Caller
from deployments import Backend, BackendError, Endpoint, WarmupConfig, max_output_tokens
from gateway.core.answers import Answers, Calls
from gateway.core.attempts import Feedback
from gateway.core.caching import HEADER, ResponseCache
from gateway.core.capacity import Capacity
from gateway.core.continuation import Style
from gateway.core.front import Native
from gateway.core.guarding import GuardStep
from gateway.core.health import HealthMonitor
from gateway.core.keys import KeyGate, authorization
from gateway.core.monitoring import Monitors
from gateway.core.protocol import parse_body
from gateway.core.replies import Reply, StreamReply
from gateway.core.resilience import Resilience
from gateway.core.retrieving import Library
from gateway.core.routing import Routed, Routing
from gateway.core.shadow import Shadows
from gateway.core.status import BackendView, placement
from gateway.core.streaming import Streams
from gateway.core.tracing import Tracing, decision_attributes
from gateway.core.warmup import warm_up
from gateway.errors import OpenAIError, from_exception
from guardrails import Refusal
from llmops import RequestRecord, key_id
from router import Availability, RouteConfig, RoutingError
from storage import Database
from tracing import step

logger = logging.getLogger("ray.serve")
SHADOW_DRAIN_S = 10.0
Answer = Reply | StreamReply
_as_is: Callable[[Answer], Answer] = lambda reply: reply  # noqa: E731


class Gateway:
    """One per ingress replica. `handle` serves chat completions and completions."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        routing: Routing,
        resilience: Resilience,
        health: HealthMonitor,
        feedback: Feedback,
        *,
        routes: Mapping[str, RouteConfig],
        log_bodies: bool = False,
        warmups: Mapping[str, WarmupConfig] | None = None,
        keys: KeyGate | None = None,
        capacity: Capacity | None = None,
        speaks: Mapping[str, frozenset[Endpoint]] | None = None,
        database: Database | None = None,
        cache: ResponseCache | None = None,
        guard: GuardStep | None = None,
        library: Library | None = None,
        styles: Mapping[str, Style] | None = None,
        tracing: Tracing | None = None,
        monitors: Monitors | None = None,
        refusals: Sequence[str] = (),
    ) -> None:
        self.backends = dict(backends)
        self.library, self.guard = library, guard  # vector stores; None: no guardrails
        self.cache = cache  # None: no route caches answers
        self.tracing = tracing  # None: no traces (`tracing.enabled: false`)
        self.monitors = monitors  # None: no drift monitor is configured
        # The stores' shared database (`database:`); None: each store its SQLite file. The
        # gateway holds one reference and closes it with itself.
        self.database = database
        # Backend -> the client APIs it serves natively beside chat (Anthropic: "messages").
        self.speaks = dict(speaks or {})
        self.capacity = capacity  # None: no backend scales to zero
        self.keys = keys  # None: no authentication (`auth: {mode: none}`)
        self.routing = routing
        self.resilience = resilience
        self.health = health
        self.feedback = feedback
        self.routes = dict(routes)
        self.log_bodies = log_bodies
        self.shadows = Shadows(self.backends, feedback, keys, log_bodies)
        # How each backend continues a broken stream (its kind's `Style`; unlisted: a prompt).
        calls = Calls(self.backends, resilience, feedback, self._cold, tuple(refusals))
        self.streams, self.answers = Streams(calls, styles or {}), Answers(calls, log_bodies)
        self.warmups = dict(warmups or {})
        # What still warms up: engines by backend name, and "router" (tokenizers, classifier).
        self.warming: set[str] = set()
        self._warmup_tasks: set[asyncio.Task[object]] = set()

    # ---- serving ------------------------------------------------------------------------

    async def route(
        self,
        endpoint: Endpoint,
        raw_body: bytes | dict[str, Any],
        headers: Mapping[str, str],
        request_id: str,
        output_cap: int | None = None,
    ) -> Routed:
        """Validate, prepare and route a body (JSON bytes, or a dict another API's front
        made). `output_cap`: the output limit where the request sets none (a budgeted one's)."""
        body = parse_body(raw_body, endpoint)
        availability = self.resilience.overlay(self.health.availability)
        if self.capacity is not None:
            availability = self.capacity.overlay(availability)
        return await self.routing.route(
            endpoint, body, headers, availability, request_id, output_cap
        )

    async def metered_route(
        self, raw_body: bytes | dict[str, Any], headers: Mapping[str, str], request_id: str
    ) -> Routed:
        """Route a chat body for a caller asking without being served (explain, counting
        tokens): metered by its key's limits, allowed the model it names, or refused."""
        caller = await self.keys.meter(headers) if self.keys is not None else None
        routed = await self.route("chat/completions", raw_body, headers, request_id)
        if self.keys is not None and caller is not None:
            self.keys.client.check_model(caller, routed.prepared.target)
        return routed

    async def explain(self, raw_body: bytes, headers: Mapping[str, str], request_id: str) -> Reply:
        """The routing decision for a chat completion body, without calling any backend."""
        try:
            routed = await self.metered_route(raw_body, headers, request_id)
        except Exception as exc:
            return Reply.error(from_exception(exc))
        explanation = routed.explain() | self.streams.explain(
            routed.decision, self._route_config(routed)
        )
        for candidate in explanation["candidates"]:
            candidate["circuit"] = self.resilience.describe(candidate["backend"])["state"]
        return Reply(200, orjson.dumps(explanation), routed.headers())

    async def check_caller(
        self, api: str, headers: Mapping[str, str], request_id: str
    ) -> OpenAIError | None:
        """Keys on: who calls, and whether this replica knows it to be over a limit, before
        its body is read (an unknown or over-limit key costs no 10 MB read, no inflating, no
        parsing); a refusal is recorded as any refused request is. `handle` checks again,
        from this replica's cache."""
        if self.keys is None:
            return None
        record = RequestRecord(request_id=request_id, endpoint=api, stream=False)
        try:
            caller = await self.keys.authenticate(headers)
            self.keys.describe(record, caller)
            self.keys.client.precheck(caller)
        except AccessError as exc:
            error = from_exception(exc)
            record.fail(error.status, error.code)
            self.feedback.request_finished(record)
            return error
        return None

    async def handle(
        self,
        endpoint: Endpoint,
        raw_body: bytes | dict[str, Any],
        headers: Mapping[str, str],
        request_id: str,
        *,
        api: str | None = None,
        native: Native | None = None,
    ) -> Reply | StreamReply:
        """Serve one request. When a front translated it from another API, `api` names that
        API (the records say so) and `native` is the client's own body, which backends that
        speak its API get instead (`speaks`); the reply says which it holds (`native`)."""
        record = RequestRecord(request_id=request_id, endpoint=api or endpoint, stream=False)
        if self.tracing is not None:
            record.trace = self.tracing.start(headers, record.endpoint)
        reply_headers: dict[str, str] = {}
        try:
            ready = await self._prepare(endpoint, raw_body, headers, record, native, reply_headers)
            routed, native, restore, caller, cap = ready
            routed.start_record(record, self.log_bodies)
            with step(record.trace if self.cache else None, "gateway.cache"):
                keep, hit = await self._from_cache(routed, record, reply_headers, native)
            if hit is not None:
                return restore(hit)
            await self.shadows.start(routed, record, caller)
            if record.stream:
                # Budgets are caps: a continuation could cost more than the worst case reserved.
                stream = self._stream(routed, reply_headers, record, native, resume=cap is None)
                return restore(keep(await stream))
            return restore(keep(await self._complete(routed, reply_headers, record, native)))
        except asyncio.CancelledError:  # the client left before an answer
            record.fail(499, "client_disconnected")
            self.feedback.request_finished(record)
            raise
        except Exception as exc:
            error = from_exception(exc)
            known = BackendError | OpenAIError | RoutingError | Refusal
            if error.status >= 500 and not isinstance(exc, known):
                logger.exception("request %s failed", request_id)
            record.fail(error.status, error.code)
            self.feedback.request_finished(record)
            return Reply.error(error, reply_headers)

    async def _prepare(
        self,
        endpoint: Endpoint,
        raw_body: bytes | dict[str, Any],
        headers: Mapping[str, str],
        record: RequestRecord,
        native: Native | None,
        reply_headers: dict[str, str],
    ) -> tuple[Routed, Native | None, Callable[[Answer], Answer], Caller | None, int | None]:
        """Who calls, the route, passages, guardrails and the budget's reservation: the
        request as it will be sent, how to restore its answer, its caller and output cap."""
        cap, caller, restore, trace = None, None, _as_is, record.trace
        if self.keys is None:
            record.key_id = key_id(authorization(headers))
        else:
            with step(trace, "gateway.auth"):
                caller = await self.keys.gate(headers)  # over a limit: refused before routing
            self.keys.describe(record, caller)
            cap = self.keys.output_cap(caller)
        with step(trace, "gateway.route") as span:
            routed = await self.route(endpoint, raw_body, headers, record.request_id, cap)
            if span is not None:
                span.attributes.update(decision_attributes(routed.decision))
        if self.capacity is not None:
            self.capacity.wake_for(routed.decision)
        if self.library is not None:  # passages first: the guardrails see them too
            with step(trace, "gateway.retrieval"):
                routed, native = await self.library.apply(routed, native, headers, record)
        if self.guard is not None:  # before anything reads, keeps or sends the body
            with step(trace, "gateway.guardrails"):
                routed, native, restore = await self.guard.apply(routed, native, caller, record)
        if self.tracing is not None:
            self.tracing.routed(trace, routed.prepared.target, routed.body)
        if self.keys is not None and caller is not None:
            with step(trace, "gateway.budget"):
                reply_headers.update(await self.keys.admit(caller, routed, record))
        reply_headers.update(routed.headers())
        return routed, native, restore, caller, cap

    async def _from_cache(
        self, routed: Routed, record: RequestRecord, headers: dict[str, str], own: Native | None
    ) -> tuple[Callable[[Answer], Answer], Answer | None]:
        """What stores this request's answer in the cache, and its cached answer if any."""
        cache = self.cache
        if cache is None:
            return _as_is, None
        native = self._native_for(routed.decision.chosen, own=own, routed=routed)
        hint = routed.prepared.hints.cache
        plan = cache.plan(routed, record, hint, native.body if native else None)
        if plan is None:
            headers[HEADER] = "bypass"
            return _as_is, None
        entry = await cache.lookup(plan)
        keep = functools.partial(cache.keep, plan, record=record)
        if entry is None:
            return keep, None
        return keep, cache.serve(entry, plan, record, headers, self.feedback.request_finished)

    def _native_for(self, name: str, *, own: Native | None, routed: Routed) -> Native | None:
        """The client's own body, where `name` speaks its API: with the output limit the
        caller's budget was reserved for, as the chat body gets it (`Routed.body_for`)."""
        if own is None or own.api.endpoint not in self.speaks.get(name, ()):
            return None
        limit = max_output_tokens(routed.body_for(name))
        if limit is None:
            return own
        return Native(own.api, own.api.with_output_limit(own.body, limit))

    async def _complete(
        self, routed: Routed, headers: dict[str, str], record: RequestRecord, own: Native | None
    ) -> Reply:
        native_for = functools.partial(self._native_for, own=own, routed=routed)
        return await self.answers.complete(
            routed, headers, record, self._route_config(routed), native_for
        )

    async def _stream(
        self,
        routed: Routed,
        headers: dict[str, str],
        record: RequestRecord,
        own: Native | None,
        *,
        resume: bool,
    ) -> StreamReply:
        native_for = functools.partial(self._native_for, own=own, routed=routed)
        return await self.streams.open(
            routed, headers, record, self._route_config(routed), native_for, resume=resume
        )

    def _cold(self, name: str) -> bool:
        return self.capacity is not None and self.capacity.cold_start_ms(name) > 0

    def _route_config(self, routed: Routed) -> RouteConfig | None:
        route = routed.decision.route
        return self.routes.get(route) if route else None

    # ---- views: what the HTTP layer shows of this gateway --------------------------------

    def availability(self) -> Mapping[str, Availability]:
        return self.health.availability

    async def fresh_availability(self, max_age_s: float = 1.0) -> Mapping[str, Availability]:
        """Availability at most `max_age_s` old (probing the backends again if older)."""
        if time.monotonic() - self.health.checked_at > max_age_s:
            await self.health.refresh()
        return self.health.availability

    def backend_views(self) -> dict[str, BackendView]:
        snapshots = self.routing.live.snapshots()
        return {
            name: BackendView(
                self.health.availability[name],
                snapshots[name],
                self.resilience.describe(name),
                placement(backend),
                self.capacity.describe(name) if self.capacity is not None else None,
            )
            for name, backend in self.backends.items()
        }

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, *, monitors: bool = False) -> None:
        """Background work (health probes, warm-ups, key sync, and the drift monitors'
        schedules where `monitors`: one replica runs them); needs a running event loop."""
        self.health.start()
        if monitors and self.monitors is not None:
            self.monitors.start()
        if self.capacity is not None:
            self.capacity.start()
        if self.keys is not None:
            self.keys.start()
        jobs: dict[str, Any] = {"router": asyncio.to_thread(self.routing.warm)}
        if self.cache is not None:
            jobs["cache"] = self.cache.warm()  # its embedder, for semantic mode
        if self.guard is not None:
            jobs["guardrails"] = self.guard.warm()  # the personal-data detector
        for name, settings in self.warmups.items():
            jobs[name] = warm_up(name, self.backends[name], settings)
        for name, job in jobs.items():
            self.warming.add(name)
            task = asyncio.get_running_loop().create_task(job)
            self._warmup_tasks.add(task)
            task.add_done_callback(functools.partial(self._warmed, name))

    def _warmed(self, name: str, task: asyncio.Task[object]) -> None:
        self._warmup_tasks.discard(task)
        self.warming.discard(name)
        if not task.cancelled() and task.exception() is not None:
            logger.error("warm-up of %s failed", name, exc_info=task.exception())

    async def aclose(self) -> None:
        """Stop probing and warming, let shadows end, close backends, write every record."""
        await self.health.stop()
        if self.capacity is not None:
            await self.capacity.stop()
        for task in list(self._warmup_tasks):
            task.cancel()
        await self.shadows.drain(SHADOW_DRAIN_S)
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:
                logger.exception("closing a backend failed")
        for observer in self.feedback.observers:
            # In a thread: closing writes what is queued, which may need this loop (a
            # cluster's records owner is called through a handle that runs here).
            await asyncio.to_thread(observer.close)
        if self.keys is not None:
            await self.keys.aclose()  # leases go back with what they used
        await asyncio.to_thread(self.routing.close)
        if self.cache is not None:
            await self.cache.aclose()  # its writes, then its reference to the database
        if self.guard is not None:
            await self.guard.aclose()
        if self.monitors is not None:
            await self.monitors.aclose()
        if self.database is not None:
            await asyncio.to_thread(self.database.close)  # the last store closed: its pool
