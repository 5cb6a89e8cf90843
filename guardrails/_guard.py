"""The guardrail step as plain Python: which policies a request gets, and what they do to
it (refuse it, or mask it and say how to restore the answer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from guardrails._body import map_request, texts
from guardrails._config import GuardrailsConfig, JudgeConfig, OnError, PiiMode, PiiPolicy, Policy
from guardrails._detect import Detector, PresidioDetector
from guardrails._rules import AskBackend, Embed, Refusal, RuleSet, Verdict, judge
from guardrails._vault import Vault

logger = logging.getLogger("ray.serve")
_STRICTNESS = {PiiMode.RESTORE: 0, PiiMode.ANONYMIZE: 1, PiiMode.BLOCK: 2}


class Action(StrEnum):
    """What the guardrails did to a request (the ledger's `guardrail` column)."""

    PASSED = "passed"  # checked, nothing to do
    MASKED = "masked"  # values replaced, restored in the answer
    ANONYMIZED = "anonymized"  # values replaced for good
    BLOCKED = "blocked"  # refused: personal data or secrets (block mode)
    DENIED = "denied"  # refused: a deny rule, no allowed topic, or too long
    FLAGGED = "flagged"  # refused: the judge
    UNCHECKED = "unchecked"  # the detector or judge failed and the policy fails open
    UNAVAILABLE = "unavailable"  # the detector or judge failed: refused (fail closed)


@dataclass(frozen=True, slots=True)
class Plan:
    """The policies one request got, combined."""

    names: tuple[str, ...]
    pii: PiiPolicy | None
    rules: RuleSet | None
    max_prompt_chars: int | None
    judges: tuple[JudgeConfig, ...]


@dataclass(slots=True)
class Inspection:
    """What the step did: the bodies to send on, the vault that restores the answer."""

    bodies: list[dict[str, Any]]
    vault: Vault
    restore: bool  # the answer's placeholders go back to their values
    action: Action = Action.PASSED
    entities: dict[str, int] = field(default_factory=dict)
    verdict: Verdict | None = None


class Guard:
    """One per ingress replica."""

    def __init__(
        self,
        config: GuardrailsConfig,
        kinds: Mapping[str, str],
        *,
        detector: Detector | None = None,
        embed: Embed | None = None,
        ask: AskBackend | None = None,
    ) -> None:
        self.config = config
        self.kinds = dict(kinds)  # backend -> kind
        self.detector = detector or PresidioDetector()
        self._embed, self._ask = embed, ask
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._http: httpx.AsyncClient | None = None

    def policies_for(
        self, route: str | None, backends: Sequence[str], key: str | None, team: str | None
    ) -> tuple[str, ...]:
        """Every policy attached to what this request touches, each once, in config order."""
        config = self.config
        names: list[str] = list(config.default)
        names += config.routes.get(route or "", ())
        for backend in backends:
            names += config.backends.get(backend, ())
            names += config.kinds.get(self.kinds.get(backend, ""), ())
        names += config.keys.get(key or "", ())
        names += config.teams.get(team or "", ())
        return tuple(dict.fromkeys(names))

    def plan(self, names: tuple[str, ...]) -> Plan | None:
        if not names:
            return None
        plan = self._plans.get(names)
        if plan is None:
            plan = self._plans[names] = self._combine(names)
        return plan

    def _combine(self, names: tuple[str, ...]) -> Plan:
        policies: list[Policy] = [self.config.policies[name] for name in names]
        pii = [p.pii for p in policies if p.pii is not None]
        combined = None
        if pii:
            combined = PiiPolicy(
                mode=max((p.mode for p in pii), key=_STRICTNESS.__getitem__),
                entities=tuple(dict.fromkeys(e for p in pii for e in p.entities)),
                score_threshold=min(p.score_threshold for p in pii),
                on_error=OnError.BLOCK
                if any(p.on_error == OnError.BLOCK for p in pii)
                else OnError.ALLOW,
            )
        deny = [rule for p in policies for rule in p.deny]
        allow = [rule for p in policies for rule in p.allow]
        limits = [p.max_prompt_chars for p in policies if p.max_prompt_chars is not None]
        return Plan(
            names,
            combined,
            RuleSet(deny, allow, self._embed) if deny or allow else None,
            min(limits, default=None),
            tuple(p.judge for p in policies if p.judge is not None),
        )

    async def inspect(self, plan: Plan, bodies: list[dict[str, Any]]) -> Inspection:
        """Size, rules, personal data, judge, in that order. Raises `Refusal`; the first
        body is the one whose text the rules read (the others carry the same text)."""
        inspection = Inspection(bodies, Vault(), restore=False)
        found = texts(bodies[0])
        text = "\n".join(found)
        if plan.max_prompt_chars is not None and len(text) > plan.max_prompt_chars:
            raise Refusal(
                400,
                "prompt_too_large",
                f"the prompt has {len(text)} characters; "
                f"the most allowed is {plan.max_prompt_chars}",
            )
        if plan.rules is not None:
            await plan.rules.check(text, found[-1] if found else "")
        if plan.pii is not None:
            await self._mask(plan.pii, inspection)
        for config in plan.judges:
            await self._judge(config, inspection)
        return inspection

    async def _mask(self, policy: PiiPolicy, inspection: Inspection) -> None:
        entities = frozenset(policy.entities)
        vault = inspection.vault
        try:
            bodies = await asyncio.to_thread(
                self._masked, inspection.bodies, entities, policy.score_threshold, vault
            )
        except Exception:
            logger.exception("the personal-data detector failed")
            _failed(policy.on_error, "the personal-data detector failed", inspection)
            return
        counts = vault.counts()
        if not counts:
            return
        inspection.entities = counts
        if policy.mode == PiiMode.BLOCK:
            named = ", ".join(f"{entity} ({n})" for entity, n in counts.items())
            raise Refusal(
                400,
                "pii_detected",
                f"the request contains personal data or secrets: {named}",
                counts,
            )
        inspection.bodies = bodies
        inspection.restore = policy.mode == PiiMode.RESTORE
        inspection.action = Action.MASKED if inspection.restore else Action.ANONYMIZED

    def _masked(
        self, bodies: list[dict[str, Any]], entities: frozenset[str], threshold: float, vault: Vault
    ) -> list[dict[str, Any]]:
        def mask(text: str, escaped: bool) -> str:
            return vault.mask(text, self.detector.find(text, entities, threshold))

        masked = [map_request(body, mask) for body in bodies[:1]]
        first = vault.found.copy()  # each body carries the same values: counted once
        masked += [map_request(body, mask) for body in bodies[1:]]
        vault.found = first
        return masked

    async def _judge(self, config: JudgeConfig, inspection: Inspection) -> None:
        conversation = "\n".join(texts(inspection.bodies[0]))
        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            if config.backend is not None and self._ask is None:
                raise RuntimeError("no backends to ask")
            verdict = await judge(config, conversation, self._ask or _no_ask, self._http)
        except Exception as exc:
            logger.warning("guardrail judge failed: %s", type(exc).__name__)
            _failed(config.on_error, "the guardrail judge gave no verdict", inspection)
            return
        inspection.verdict = verdict
        if verdict.flagged:
            categories = f": {', '.join(verdict.categories)}" if verdict.categories else ""
            message = f"the guardrail judge flagged the request{categories}"
            raise Refusal(400, "content_flagged", message, verdict=verdict.describe())

    async def warm(self) -> None:
        if any(p.pii is not None for p in self.config.policies.values()):
            load = getattr(self.detector, "load", None)
            if load is not None:
                await asyncio.to_thread(load)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _failed(on_error: OnError, what: str, inspection: Inspection) -> None:
    """A detector or judge that failed: refused (fail closed), or passed on as unchecked."""
    if on_error == OnError.BLOCK:
        raise Refusal(503, "guardrail_unavailable", what)
    inspection.action = Action.UNCHECKED


async def _no_ask(backend: str, body: dict[str, Any]) -> str:
    raise RuntimeError(f"no backend {backend!r} to ask")


_REFUSED = {
    "pii_detected": Action.BLOCKED,
    "content_denied": Action.DENIED,
    "off_topic": Action.DENIED,
    "prompt_too_large": Action.DENIED,
    "content_flagged": Action.FLAGGED,
}


def refused_action(refusal: Refusal) -> Action:
    """The ledger's word for a refusal."""
    return _REFUSED.get(refusal.code, Action.UNAVAILABLE)
