"""Routing policies: small classes behind one interface, looked up by name."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar


@dataclass(slots=True)  # built per candidate per request: not frozen, for speed
class Candidate:
    """What a policy knows about one eligible backend when it chooses."""

    name: str
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    quality: float = 0.5


@dataclass(frozen=True)
class PolicyOptions:
    """The route settings policies may read (see RouteConfig for their meaning)."""

    balance_cost: float = 1.0
    balance_latency: float = 1.0
    balance_quality: float = 1.0
    weights: Mapping[str, float] = field(default_factory=dict)


class Policy(ABC):
    """Scores eligible candidates (lower is better) and picks one.

    `eligible` is never empty and keeps config order; ties go to the earlier candidate, so a
    decision depends only on the candidates, the options and the random generator.
    """

    name: ClassVar[str]

    def __init__(self, options: PolicyOptions | None = None) -> None:
        self.options = options or PolicyOptions()

    @abstractmethod
    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        """One score per candidate, lower is better."""

    def choose(self, eligible: Sequence[Candidate], seed: int) -> Candidate:
        """The best-scoring candidate; `seed` is for policies that draw at random."""
        scores = self.scores(eligible)
        return eligible[min(range(len(eligible)), key=scores.__getitem__)]


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

    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        return [float(index) for index in range(len(eligible))]


@register_policy
class Ordered(FirstAvailable):
    """Alias of `first_available`."""

    name = "ordered"


@register_policy
class Cheapest(Policy):
    """Least estimated cost for this request."""

    name = "cheapest"

    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        return [candidate.cost_usd for candidate in eligible]


@register_policy
class Fastest(Policy):
    """Least predicted end-to-end latency for this request."""

    name = "fastest"

    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        return [candidate.latency_ms for candidate in eligible]


@register_policy
class Balanced(Policy):
    """Weighted sum of cost and latency (each divided by the largest among the eligible)
    and of (1 - quality for the task)."""

    name = "balanced"

    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        top_cost = max(c.cost_usd for c in eligible) or 1.0
        top_latency = max(c.latency_ms for c in eligible) or 1.0
        o = self.options
        return [
            o.balance_cost * c.cost_usd / top_cost
            + o.balance_latency * c.latency_ms / top_latency
            + o.balance_quality * (1.0 - c.quality)
            for c in eligible
        ]


_MASK = 2**64 - 1


def _unit_interval(seed: int) -> float:
    """SplitMix64 of `seed` mapped to [0, 1): uniform, deterministic, and ~10x cheaper than
    building a `random.Random` per request."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) >> 11) / 2**53


@register_policy
class Weighted(Policy):
    """Random split by configured weights: the basis of A/B tests."""

    name = "weighted"

    def scores(self, eligible: Sequence[Candidate]) -> list[float]:
        return [-self.options.weights.get(c.name, 0.0) for c in eligible]

    def choose(self, eligible: Sequence[Candidate], seed: int) -> Candidate:
        weights = [self.options.weights.get(c.name, 0.0) for c in eligible]
        total = sum(weights)
        if total <= 0:  # only zero-weight candidates are left: keep config order
            return eligible[0]
        point = _unit_interval(seed) * total
        for candidate, weight in zip(eligible, weights, strict=True):
            point -= weight
            if point < 0:
                return candidate
        return eligible[-1]
