"""Versioned prompt templates: a system prompt and/or a user-message template with variables.

```yaml
prompt_templates:
  support:
    default: v2
    versions:
      v1: {system: "You are a helpful support agent."}
      v2: {system: "You are a concise support agent for {product}.",
           template: "Customer question: {input}"}
```

A route (`template: support`) or a request (`routing.template: support@v1`, variables in
`routing.variables`) selects one; `{input}` is the user's own message. The response says which
version was used (`x-gateway-template: support@v2`).
"""

from __future__ import annotations

import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments import Endpoint
from gateway.errors import OpenAIError


def _fields(text: str | None) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text or "") if name}


class TemplateVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(default=None, description="System prompt put first.")
    template: str | None = Field(
        default=None,
        description="Replaces the last user message; `{input}` is that message, other "
        "`{names}` come from `routing.variables`.",
    )
    description: str = Field(default="", description="Free text for people.")

    @model_validator(mode="after")
    def _something(self) -> TemplateVersion:
        if self.system is None and self.template is None:
            raise ValueError("a template version needs `system`, `template` or both")
        for text in (self.system, self.template):
            try:
                _fields(text)
            except ValueError as exc:
                raise ValueError(f"invalid template text {text!r}: {exc}") from None
        return self

    @property
    def variables(self) -> set[str]:
        return (_fields(self.system) | _fields(self.template)) - {"input"}


class PromptTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = Field(description="Version used when a reference names none.")
    versions: dict[str, TemplateVersion] = Field(min_length=1, description="Version -> text.")

    @model_validator(mode="after")
    def _default_exists(self) -> PromptTemplate:
        if self.default not in self.versions:
            raise ValueError(f"default version {self.default!r} is not among the versions")
        return self


def resolve(templates: dict[str, PromptTemplate], ref: str) -> tuple[str, TemplateVersion] | None:
    """(`name@version`, version) for a reference `name` or `name@version`; None if unknown."""
    name, _, version = ref.partition("@")
    template = templates.get(name)
    if template is None:
        return None
    version = version or template.default
    chosen = template.versions.get(version)
    return (f"{name}@{version}", chosen) if chosen is not None else None


def apply(
    templates: dict[str, PromptTemplate],
    ref: str,
    endpoint: Endpoint,
    body: dict[str, Any],
    variables: dict[str, str],
) -> str:
    """Apply a template to `body` in place; returns `name@version`. Unknown templates and
    missing variables are the client's error (400 naming the field)."""
    found = resolve(templates, ref)
    if found is None:
        raise OpenAIError(
            f"unknown prompt template {ref!r}; known: {', '.join(sorted(templates)) or 'none'}",
            status=400,
            param="routing.template",
            code="invalid_routing_hint",
        )
    applied, version = found
    missing = sorted(version.variables - set(variables))
    if missing:
        raise OpenAIError(
            f"prompt template {applied} needs routing.variables: {', '.join(missing)}",
            status=400,
            param="routing.variables",
            code="missing_required_parameter",
        )
    if endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise OpenAIError("templates apply to a string prompt only", status=400, param="prompt")
        if version.template is not None:
            prompt = version.template.format(**variables, input=prompt)
        if version.system is not None:
            prompt = version.system.format(**variables) + "\n\n" + prompt
        body["prompt"] = prompt
        return applied
    messages = [dict(m) for m in body.get("messages") or []]
    if version.template is not None:
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user is None or not isinstance(last_user.get("content"), str):
            raise OpenAIError(
                "the template needs a text user message", status=400, param="messages"
            )
        last_user["content"] = version.template.format(**variables, input=last_user["content"])
    if version.system is not None:
        messages.insert(0, {"role": "system", "content": version.system.format(**variables)})
    body["messages"] = messages
    return applied
