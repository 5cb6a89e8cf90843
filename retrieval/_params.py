"""What requests to the stores carry, checked: ids, metadata, chunking, ranking options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrieval._config import Chunking
from retrieval._errors import invalid
from retrieval._filters import Match, compile_filter


def chunking(spec: Any, default: Chunking, param: str) -> Chunking:
    if spec is None or (isinstance(spec, dict) and spec.get("type") == "auto"):
        return default
    if not isinstance(spec, dict) or spec.get("type") != "static":
        raise invalid("chunking_strategy is {type: auto} or {type: static, static: {...}}.", param)
    try:
        return Chunking.model_validate(spec.get("static") or {})
    except ValueError as exc:
        raise invalid(f"chunking_strategy: {exc.errors()[0]['msg']}", param) from None  # type: ignore[attr-defined]


def strategy(chunking: Chunking) -> dict[str, Any]:
    return {"type": "static", "static": chunking.model_dump()}


def ids(value: Any, param: str) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or not all(isinstance(v, str) for v in value)
        or len(value) > 500
    ):
        raise invalid(f"{param} is a list of up to 500 file ids.", param)
    return list(dict.fromkeys(value))


def metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise invalid(
            "metadata is up to 16 string pairs (keys 64, values 512 characters).", "metadata"
        )
    return dict(value)


@dataclass(frozen=True)
class SearchOptions:
    """How one search ranks and cuts: what the search endpoint's body and the `file_search`
    tool both carry."""

    max_num_results: int
    match: Match | None
    threshold: float
    text_weight: float | None  # None: the config's


def search_options(
    spec: Mapping[str, Any], default_results: int, prefix: str = ""
) -> SearchOptions:
    """`max_num_results`, `filters` and `ranking_options` of `spec`, checked; `prefix` is
    where `spec` sits in the request (errors name the whole path)."""
    limit = spec.get("max_num_results", default_results)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
        raise invalid(
            "max_num_results must be an integer between 1 and 50.", f"{prefix}max_num_results"
        )
    filters = spec.get("filters")
    match = compile_filter(filters, f"{prefix}filters") if filters is not None else None
    options = spec.get("ranking_options")
    param = f"{prefix}ranking_options"
    return SearchOptions(limit, match, threshold(options, param), text_weight(options, param))


def threshold(options: Any, param: str) -> float:
    if options is None:
        return 0.0
    if not isinstance(options, Mapping):
        raise invalid("ranking_options is an object.", param)
    value = options.get("score_threshold", 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise invalid("score_threshold is a number between 0 and 1.", f"{param}.score_threshold")
    ranker = options.get("ranker", "auto")
    if ranker not in ("auto", "default-2024-11-15", "none"):
        raise invalid(f"Unknown ranker {ranker!r}.", f"{param}.ranker")
    return float(value)


def text_weight(options: Any, param: str) -> float | None:
    """OpenAI's `ranking_options.hybrid_search` weights as BM25's share (None: not set)."""
    hybrid = options.get("hybrid_search") if isinstance(options, Mapping) else None
    if hybrid is None:
        return None
    param = f"{param}.hybrid_search"
    weights = [hybrid.get(k, 0.0) if isinstance(hybrid, Mapping) else None
               for k in ("embedding_weight", "text_weight")]  # fmt: skip
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights):
        raise invalid("embedding_weight and text_weight are numbers of at least 0.", param)
    embedding, text = (float(w) for w in weights)  # type: ignore[arg-type]
    if embedding + text == 0:
        raise invalid("embedding_weight and text_weight cannot both be 0.", param)
    return text / (embedding + text)
