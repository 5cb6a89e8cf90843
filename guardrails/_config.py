"""The `guardrails:` section: named policies, and what they are attached to (every request,
routes, backends or backend kinds, keys, teams)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guardrails._entities import DEFAULT_ENTITIES, ENTITIES


class PiiMode(StrEnum):
    RESTORE = "restore"  # placeholders out, the original values back in the answer
    ANONYMIZE = "anonymize"  # placeholders out, and they stay in the answer
    BLOCK = "block"  # refused with a 400 naming the entity types


class OnError(StrEnum):
    BLOCK = "block"  # fail closed: the request is refused (503)
    ALLOW = "allow"  # fail open: passed on as it came, and recorded so


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PiiPolicy(_Frozen):
    """Personal data and secrets: what to look for and what to do with it."""

    mode: PiiMode = Field(default=PiiMode.RESTORE, description="restore, anonymize or block.")
    entities: tuple[str, ...] = Field(
        default=DEFAULT_ENTITIES,
        description="Entity types to look for (docs/guardrails.md lists them).",
    )
    score_threshold: float = Field(
        default=0.5, ge=0, le=1, description="The least detector score that counts as found."
    )
    on_error: OnError = Field(
        default=OnError.BLOCK,
        description="When the detector fails: `block` (default, fail closed: 503) or `allow`.",
    )

    @field_validator("entities")
    @classmethod
    def _known(cls, entities: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(entities) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entity types {unknown} (known: {', '.join(ENTITIES)})")
        if not entities:
            raise ValueError("name at least one entity type")
        return entities


class Rule(_Frozen):
    """A content rule: a regular expression, or example phrases matched by embedding
    similarity (the gateway's local MiniLM)."""

    name: str = Field(min_length=1, description="Named in the error and the records.")
    pattern: str | None = Field(default=None, description="A regular expression (Python).")
    examples: tuple[str, ...] = Field(default=(), description="Phrases to compare with.")
    similarity: float = Field(
        default=0.75, ge=0.3, le=1.0, description="The least cosine similarity to an example."
    )
    ignore_case: bool = Field(default=True, description="The pattern ignores case.")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.pattern is None) == (not self.examples):
            raise ValueError("a rule needs exactly one of `pattern` or `examples`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r}: {exc}") from None
        return self


class JudgeConfig(_Frozen):
    """An external guard that reads the (masked) prompt and says whether to refuse it."""

    backend: str | None = Field(
        default=None,
        description="A backend of this gateway asked with a Llama Guard style prompt; its "
        "answer's first line `unsafe` flags the request (`flag_pattern`).",
    )
    url: str | None = Field(
        default=None,
        description="An OpenAI moderations-compatible endpoint (POST {input}), e.g. "
        "https://api.openai.com/v1/moderations.",
    )
    api_key_env: str | None = Field(default=None, description="The url's bearer key, by env.")
    flag_pattern: str = Field(
        default=r"^\s*unsafe\b", description="A backend's verdict that flags (regex)."
    )
    max_tokens: int = Field(default=20, ge=1, description="A backend's verdict length.")
    timeout_s: float = Field(default=5.0, gt=0, description="How long to wait for a verdict.")
    on_error: OnError = Field(
        default=OnError.BLOCK, description="No verdict in time: `block` (503) or `allow`."
    )

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.backend is None) == (self.url is None):
            raise ValueError("a judge needs exactly one of `backend` or `url`")
        re.compile(self.flag_pattern)
        return self


class Policy(_Frozen):
    """One named guardrail policy; several may apply to a request (they combine)."""

    pii: PiiPolicy | None = Field(default=None, description="Personal data and secrets.")
    deny: tuple[Rule, ...] = Field(default=(), description="A prompt matching one: 400.")
    allow: tuple[Rule, ...] = Field(
        default=(), description="Topics: a prompt must match one of these, or 400."
    )
    max_prompt_chars: int | None = Field(
        default=None, gt=0, description="The most characters of prompt text a request may send."
    )
    judge: JudgeConfig | None = Field(default=None, description="An external guard's verdict.")


class GuardrailsConfig(_Frozen):
    """Policies, and where they apply: a request gets the union of those attached to every
    request (`default`), its route, each backend it may reach, and its key and team."""

    policies: dict[str, Policy] = Field(default_factory=dict)
    default: tuple[str, ...] = Field(default=(), description="Policies for every request.")
    routes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    backends: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    kinds: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="By backend kind, e.g. {openai: [pii], anthropic: [pii]}: what leaves "
        "the company.",
    )
    keys: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="By key name.")
    teams: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="By team name.")

    @model_validator(mode="after")
    def _policies_known(self) -> Self:
        problems = []
        attached = {
            "default": {"": self.default},
            "routes": self.routes,
            "backends": self.backends,
            "kinds": self.kinds,
            "keys": self.keys,
            "teams": self.teams,
        }
        for section, mapping in attached.items():
            for owner, names in mapping.items():
                for name in names:
                    if name not in self.policies:
                        where = f"{section}.{owner}" if owner else section
                        problems.append(f"{where}: unknown policy {name!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.policies)

    def reference_problems(
        self, routes: set[str], kinds: Mapping[str, str], all_kinds: set[str]
    ) -> list[str]:
        """Names this section uses that the rest of the config lacks (`kinds`: backend ->
        its kind; `all_kinds`: every kind a backend may be), each with its path."""
        problems = [
            f"guardrails.routes.{name}: unknown route" for name in self.routes if name not in routes
        ]
        problems += [
            f"guardrails.backends.{name}: unknown backend"
            for name in self.backends
            if name not in kinds
        ]
        problems += [
            f"guardrails.kinds.{kind}: unknown backend kind (known: {', '.join(sorted(all_kinds))})"
            for kind in self.kinds
            if kind not in all_kinds
        ]
        for name, policy in self.policies.items():
            judge = policy.judge
            if judge is not None and judge.backend is not None and judge.backend not in kinds:
                problems.append(
                    f"guardrails.policies.{name}.judge.backend: unknown backend {judge.backend!r}"
                )
        return problems
