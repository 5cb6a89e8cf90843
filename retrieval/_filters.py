"""OpenAI's attribute filters: a comparison (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`,
`nin` on one key) or a compound (`and`, `or`) of filters, checked when a request comes and
matched against a file's `attributes`."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from retrieval._errors import invalid

Attributes = Mapping[str, Any]
Match = Callable[[Attributes], bool]
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_SCALAR = (str, int, float, bool)


def _comparison(kind: str, key: Any, value: Any, param: str) -> Match:
    if not isinstance(key, str) or not key:
        raise invalid("A comparison filter needs a string `key`.", f"{param}.key")
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, _SCALAR) for v in value):
            raise invalid(f"`{kind}` needs a list of strings or numbers.", f"{param}.value")
        wanted = set(value)
        inside = kind == "in"
        return lambda a: key in a and (a[key] in wanted) is inside
    if not isinstance(value, _SCALAR):
        raise invalid("A comparison's value is a string, number or boolean.", f"{param}.value")
    if kind == "eq":
        return lambda a: key in a and a[key] == value
    if kind == "ne":
        return lambda a: key not in a or a[key] != value
    compare = _ORDER[kind]

    def ordered(a: Attributes) -> bool:
        have = a.get(key)
        if isinstance(have, bool) or isinstance(value, bool) or have is None:
            return False
        if isinstance(have, str) != isinstance(value, str):
            return False  # a number is not ordered against a string
        return bool(compare(have, value))

    return ordered


def compile_filter(spec: Any, param: str = "filters") -> Match:
    """A predicate over a file's attributes. Raises 400 naming the field that is wrong."""
    if not isinstance(spec, dict):
        raise invalid("A filter is an object.", param)
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise invalid(f"`{kind}` needs a non-empty `filters` list.", f"{param}.filters")
        matches = [compile_filter(p, f"{param}.filters[{i}]") for i, p in enumerate(parts)]
        if kind == "and":
            return lambda a: all(m(a) for m in matches)
        return lambda a: any(m(a) for m in matches)
    if kind in ("eq", "ne", "in", "nin", *_ORDER):
        return _comparison(kind, spec.get("key"), spec.get("value"), param)
    raise invalid(f"Unknown filter type {kind!r}.", f"{param}.type")


def check_attributes(attributes: Any, param: str = "attributes") -> dict[str, Any]:
    """OpenAI's limits: at most 16 keys of up to 64 characters; values strings (up to 512
    characters), numbers or booleans."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict) or len(attributes) > 16:
        raise invalid("attributes is an object of at most 16 keys.", param)
    for key, value in attributes.items():
        if len(key) > 64:
            raise invalid("An attribute's key has at most 64 characters.", f"{param}.{key}")
        if not isinstance(value, _SCALAR) or (isinstance(value, str) and len(value) > 512):
            raise invalid(
                "An attribute is a string (up to 512 characters), number or boolean.",
                f"{param}.{key}",
            )
    return dict(attributes)
