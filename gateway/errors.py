"""OpenAI-shaped errors: one exception type for the gateway, one map from exceptions to replies."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from access import AccessError
from deployments import BackendError
from guardrails import Refusal
from retrieval import RetrievalError
from router import BudgetInfeasible, ModelNotFound, NoBackendAvailable

if TYPE_CHECKING:
    from starlette.responses import Response


def retry_after_header(seconds: float | None, default: int) -> str:
    """A `Retry-After` value in whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)) if seconds is not None else default)


class OpenAIError(Exception):
    """An error the client should see as `{"error": {message, type, param, code}}`. Built as
    every error of the project is: the message, then the rest by name (`access.AccessError`,
    `deployments.BackendError`); `from_exception` maps them all to this one."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: dict[str, str] | None = None) -> Response:
        from starlette.responses import Response

        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers={**self.headers, **(headers or {})},
        )


def json_object(raw: bytes | dict[str, Any]) -> dict[str, Any]:
    """The one reader of a JSON request body: a JSON object, or the one error for each way it
    is not (a dict a front already made passes as it is)."""
    try:
        data = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenAIError(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            status=400,
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError(
            "The request body must be a JSON object.", status=400, code="invalid_json"
        )
    return data


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        f"The model `{model}` does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "str": "a string",
    "list": "an array",
    "dict": "an object",
    "model": "an object",
}


def _param_path(loc: tuple[Any, ...], data: Any, missing: bool) -> str:
    """`messages[0].role` for a loc, following the client's own data so that the union member
    names pydantic puts in `loc` (e.g. "str", "list[str]") are left out."""
    path, node = "", data
    for index, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            path, node = f"{path}[{part}]", node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            path, node = (f"{path}.{part}" if path else part), node[part]
        elif isinstance(part, str) and missing and index == len(loc) - 1:
            path = f"{path}.{part}" if path else part
    return path


def from_validation_error(exc: ValidationError, data: Any = None) -> OpenAIError:
    """The first problem of a request body, phrased the way OpenAI phrases it."""
    errors = exc.errors()
    # Pydantic reports one error per union member; the informative one is a missing field,
    # else a value error from the member whose type matched, else the first type error.
    # Among type errors the deepest is the most specific (a bad field inside a content part,
    # rather than "content is not a string").
    deepest = max(errors, key=lambda e: len(e["loc"]))
    first = next(
        (e for e in errors if e["type"] == "missing"),
        next((e for e in errors if not e["type"].endswith("_type")), deepest),
    )
    kind = first["type"]
    param = _param_path(first["loc"], data, kind == "missing")
    if kind == "missing":
        return OpenAIError(
            f"Missing required parameter: '{param}'.",
            status=400,
            param=param,
            code="missing_required_parameter",
        )
    expected = next((name for key, name in _TYPE_NAMES.items() if kind.startswith(key)), None)
    if expected and kind.endswith("_type"):
        got = type(first.get("input")).__name__
        return OpenAIError(
            f"Invalid type for '{param}': expected {expected}, "
            f"but got {_TYPE_NAMES.get(got, got)} instead.",
            status=400,
            param=param,
            code="invalid_type",
        )
    return OpenAIError(
        f"Invalid value for '{param}': {first['msg']}.",
        status=400,
        param=param,
        code="invalid_value",
    )


def from_exception(exc: Exception) -> OpenAIError:
    """The single exception -> OpenAI error map of the gateway."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, AccessError):
        headers = dict(exc.headers)
        if exc.retry_after_s is not None:
            headers["retry-after"] = retry_after_header(exc.retry_after_s, 1)
        return _passed_on(exc, headers)
    if isinstance(exc, ModelNotFound):
        if exc.model is None:
            return OpenAIError(
                "Missing required parameter: 'model'.",
                status=400,
                param="model",
                code="missing_required_parameter",
            )
        return model_not_found(exc.model)
    if isinstance(exc, NoBackendAvailable):
        return OpenAIError(
            str(exc),
            status=503,
            type="service_unavailable",
            code="no_backend_available",
            headers={"retry-after": retry_after_header(exc.retry_after_s, 5)},
        )
    if isinstance(exc, BudgetInfeasible):
        return OpenAIError(
            str(exc),
            status=429,
            type="rate_limit_error",
            param="routing.latency_budget_ms",
            code="latency_budget_infeasible",
            headers={"retry-after": "1"},
        )
    if isinstance(exc, Refusal):
        kind = "invalid_request_error" if exc.status < 500 else "service_unavailable"
        return OpenAIError(exc.message, status=exc.status, type=kind, code=exc.code)
    if isinstance(exc, RetrievalError):
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return OpenAIError(
            exc.message, status=exc.status, type=kind, code=exc.code, param=exc.param
        )
    if isinstance(exc, BackendError):
        headers = {}
        if exc.retry_after_s is not None or exc.status in (429, 503):
            headers["retry-after"] = retry_after_header(exc.retry_after_s, 1)
        return _passed_on(exc, headers)
    return OpenAIError(
        "The gateway failed to handle the request.",
        status=500,
        type="internal_error",
        code="internal_error",
    )


def _passed_on(exc: AccessError | BackendError, headers: dict[str, str]) -> OpenAIError:
    """An error that already says what the client should see, in the gateway's own type."""
    return OpenAIError(
        exc.message, status=exc.status, type=exc.type, param=exc.param, code=exc.code,
        headers=headers,
    )  # fmt: skip
