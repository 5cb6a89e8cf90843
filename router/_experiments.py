"""A/B experiment arms: deterministic, sticky assignment by hashing a key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


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
