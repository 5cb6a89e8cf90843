"""Routing policies: small classes behind one interface, looked up by name."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a policy knows about one backend when it chooses."""

    name: str
    available: bool = True
    unavailable_reason: str = ""


class Policy(ABC):
    """Chooses one backend among eligible candidates (never empty, in config order)."""

    name: ClassVar[str]

    @abstractmethod
    def choose(self, eligible: Sequence[Candidate]) -> Candidate:
        """Return one element of `eligible`."""


_P = TypeVar("_P", bound=type[Policy])
_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(cls: _P) -> _P:
    """Class decorator: make a policy selectable by its `name` in route configs."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"policy name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available_policies() -> list[str]:
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    """Resolve a registered name or an import path `module:ClassName`."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(available_policies())}")
    module_name, _, attr = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyError(f"cannot import policy {name!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Policy)):
        raise KeyError(f"{name!r} is not a router.Policy subclass")
    return found


def policy_exists(name: str) -> bool:
    try:
        policy_class(name)
    except KeyError:
        return False
    return True


@register_policy
class FirstAvailable(Policy):
    """The first eligible candidate in config order."""

    name = "first_available"

    def choose(self, eligible: Sequence[Candidate]) -> Candidate:
        return eligible[0]


@register_policy
class Ordered(FirstAvailable):
    """Alias of `first_available`, the name used by later policy sets."""

    name = "ordered"
