"""A/B experiments on a route (config and sticky assignment): arms by backend and/or prompt
template, sticky per user/key/header, an optional shadow backend that gets a copy of each
request (answer logged, not returned).

```yaml
experiments:
  ab1:
    route: auto
    sticky_by: user            # the body's `user`; or `key` (API key), or `header:x-user-id`
    arms:
      a: {backend: smollm2, weight: 0.5}
      b: {backend: gpt-4o-mini, weight: 0.5, template: support@v2}
    shadow: claude-haiku       # optional
```
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from llmops._config import Strict
from llmops._record import key_id


def unit_hash(experiment: str, key: str) -> float:
    """A uniform number in [0, 1) from (experiment, key): the same key, the same number."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_arm(experiment: str, key: str, arms: Sequence[tuple[str, float]]) -> str:
    """The arm for `key`, in proportion to the arms' weights (which need not sum to 1).

    Changing one arm's weight moves only the keys near the changed boundaries; adding an arm
    at the end keeps everyone else where they were only if the others' shares are unchanged.
    """
    total = sum(weight for _, weight in arms)
    if not arms or total <= 0:
        raise ValueError("an experiment needs arms with positive total weight")
    point, edge = unit_hash(experiment, key) * total, 0.0
    for name, weight in arms:
        edge += weight
        if point < edge:
            return name
    return arms[-1][0]


class ArmConfig(Strict):
    backend: str | None = Field(default=None, description="Backend serving this arm.")
    template: str | None = Field(
        default=None, description="Prompt template (`name@version`) this arm applies."
    )
    weight: float = Field(default=1.0, ge=0, description="Share of traffic (relative).")

    @model_validator(mode="after")
    def _differs(self) -> ArmConfig:
        if self.backend is None and self.template is None:
            raise ValueError("an arm needs a backend, a template or both")
        return self


class ExperimentConfig(Strict):
    route: str = Field(description="The route whose requests take part.")
    sticky_by: str = Field(
        default="user",
        description="What keeps a client in one arm: `user` (the body's `user` field), `key` "
        "(the API key) or `header:<name>`. Requests without it are assigned by request id.",
    )
    arms: dict[str, ArmConfig] = Field(min_length=2, description="Arm name -> treatment.")
    shadow: str | None = Field(
        default=None, description="Backend that also answers each request; logged, not returned."
    )
    enabled: bool = Field(default=True, description="False routes as if there were none.")

    @field_validator("sticky_by")
    @classmethod
    def _known_key(cls, value: str) -> str:
        if value not in ("user", "key") and not (
            value.startswith("header:") and len(value) > len("header:")
        ):
            raise ValueError("sticky_by must be `user`, `key` or `header:<name>`")
        return value

    @model_validator(mode="after")
    def _weights(self) -> ExperimentConfig:
        if sum(arm.weight for arm in self.arms.values()) <= 0:
            raise ValueError("arms need a positive total weight")
        return self


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    arm: str
    backend: str | None
    template: str | None
    shadow: str | None


class Experiments:
    """Finds the experiment on a route and assigns a request to an arm."""

    def __init__(self, experiments: Mapping[str, ExperimentConfig]) -> None:
        self._by_route = {e.route: (name, e) for name, e in experiments.items() if e.enabled}

    def assign(
        self,
        route: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        request_id: str,
    ) -> Assignment | None:
        found = self._by_route.get(route)
        if found is None:
            return None
        name, experiment = found
        sticky = experiment.sticky_by
        if sticky == "user":
            value = body.get("user")
        elif sticky == "key":
            value = key_id(headers.get("authorization"))  # hashed only when it is needed
        else:
            value = headers.get(sticky.removeprefix("header:").lower())
        key = str(value) if value else f"request:{request_id}"
        arms = [(arm_name, arm.weight) for arm_name, arm in experiment.arms.items()]
        arm_name = assign_arm(name, key, arms)
        arm = experiment.arms[arm_name]
        return Assignment(name, arm_name, arm.backend, arm.template, experiment.shadow)
