"""The guardrail step of the pipeline: after the route decision (pure and in-process, so
nothing has left yet) and before the cache, shadows, the request log and every backend;
and, on the way back, the answer's placeholders restored (whole, or event by event).

The policies a request gets are those of every backend it may reach (its candidates and
fallbacks), so an internal fallback never sees what an external candidate would not."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import orjson

from access import Caller
from gateway.core.front import Native
from gateway.core.replies import Reply, StreamReply, TranslatedStream
from gateway.core.routing import Routed
from guardrails import (
    Guard,
    Inspection,
    Refusal,
    StreamRestorer,
    Vault,
    map_all,
    refused_action,
)
from llmops import RequestRecord

Answer = Reply | StreamReply
Restore = Callable[[Answer], Answer]
_as_is: Restore = lambda answer: answer  # noqa: E731


def _names(caller: Caller | None) -> tuple[str | None, str | None]:
    if caller is None or caller.key is None:
        return None, None
    return caller.key.name, caller.team.name if caller.team is not None else None


class GuardStep:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def apply(
        self,
        routed: Routed,
        native: Native | None,
        caller: Caller | None,
        record: RequestRecord,
    ) -> tuple[Routed, Native | None, Restore]:
        """The request as it may leave, and what restores its answer. Raises `Refusal`
        (recorded)."""
        key, team = _names(caller)
        decision = routed.decision
        assignment = routed.prepared.assignment
        shadow = (assignment.shadow,) if assignment is not None and assignment.shadow else ()
        reach = (*decision.attempts, *shadow)
        plan = self.guard.plan(self.guard.policies_for(decision.route, reach, key, team))
        if plan is None:
            return routed, native, _as_is
        bodies = [routed.body] + ([native.body] if native is not None else [])
        try:
            inspection = await self.guard.inspect(plan, bodies)
        except Refusal as refusal:
            record.guardrail = refused_action(refusal).value
            record.guardrail_entities = _describe(refusal.entities)
            record.guardrail_verdict = refusal.verdict
            raise
        _note(record, inspection)
        if not inspection.vault:
            return routed, native, _as_is
        masked = dataclasses.replace(
            routed, prepared=dataclasses.replace(routed.prepared, body=inspection.bodies[0])
        )
        if native is not None:
            native = Native(native.api, inspection.bodies[1])
        restore = _restorer(inspection.vault) if inspection.restore else _as_is
        return masked, native, restore

    async def warm(self) -> None:
        await self.guard.warm()

    async def aclose(self) -> None:
        await self.guard.aclose()


def _note(record: RequestRecord, inspection: Inspection) -> None:
    record.guardrail = inspection.action.value
    record.guardrail_entities = _describe(inspection.entities)
    if inspection.verdict is not None:
        record.guardrail_verdict = inspection.verdict.describe()


def _describe(entities: dict[str, int]) -> str | None:
    """`EMAIL_ADDRESS:2,PERSON:1`: types and counts, never a value."""
    return ",".join(f"{e}:{n}" for e, n in sorted(entities.items())) or None


def _restorer(vault: Vault) -> Restore:
    def restore(answer: Answer) -> Answer:
        if isinstance(answer, StreamReply):
            restored = TranslatedStream(answer, _restored_events(answer, StreamRestorer(vault)))
            restored.native = answer.native
            return restored
        if answer.status != 200:
            return answer
        body = map_all(orjson.loads(answer.body), vault.restore)
        return dataclasses.replace(answer, body=orjson.dumps(body))

    return restore


async def _restored_events(stream: StreamReply, restorer: StreamRestorer) -> AsyncIterator[bytes]:
    async for chunk in stream:
        if out := restorer.feed(chunk):
            yield out
    if out := restorer.close():
        yield out
