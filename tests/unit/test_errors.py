"""Request validation -> OpenAI-shaped errors with the right param and code."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from deployments import BackendError
from gateway.core.protocol import REQUEST_MODELS
from gateway.errors import OpenAIError, from_exception, from_validation_error
from router import ModelNotFound, NoBackendAvailable

USER = [{"role": "user", "content": "hi"}]


def validation_error(endpoint: str, body: dict[str, Any]) -> OpenAIError:
    with pytest.raises(ValidationError) as caught:
        REQUEST_MODELS[endpoint].model_validate(body)
    return from_validation_error(caught.value, body)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "invalid_value"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": USER, "max_tokens": "5"}, "max_tokens", "invalid_type"),
        ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"model": "m", "messages": USER, "temperature": 3}, "temperature", "invalid_value"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream", "invalid_type"),
        ({"model": 5, "messages": USER}, "model", "invalid_type"),
        (
            {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        (
            {"model": "m", "messages": [{"content": "x"}]},
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]},
            "stop",
            "invalid_value",
        ),
        (
            {"model": "m", "messages": USER, "stream_options": {"include_usage": "y"}},
            "stream_options.include_usage",
            "invalid_type",
        ),
        # Found by the spec-generated suite: shapes a backend would otherwise trip over.
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0]",
            "invalid_value",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "text", "text": {}}]}],
            },
            "messages[0].content[0].text",
            "invalid_type",
        ),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, "", "invalid_value"),
        ({"model": "m", "messages": USER, "tools": []}, "tools", "invalid_value"),
        (
            {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "messages": USER, "response_format": {"type": "json_schema"}},
            "response_format",
            "invalid_value",
        ),
    ],
)
def test_chat_validation(body: dict[str, Any], param: str, code: str) -> None:
    error = validation_error("chat/completions", body)
    assert error.status == 400
    assert error.param == param
    assert error.code == code
    assert error.type == "invalid_request_error"
    assert param in error.message


def test_completion_prompt_forms() -> None:
    model = REQUEST_MODELS["completions"]
    for prompt in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        model.model_validate({"model": "m", "prompt": prompt})
    error = validation_error("completions", {"model": "m", "prompt": {"x": 1}})
    assert error.param == "prompt"
    assert validation_error("completions", {"model": "m"}).code == "missing_required_parameter"


def test_extra_fields_pass_validation() -> None:
    REQUEST_MODELS["chat/completions"].model_validate(
        {"model": "m", "messages": USER, "top_k": 5, "routing": {"task": "code"}}
    )


def test_error_body_shape() -> None:
    body = OpenAIError("bad", status=400, param="x", code="c").body()
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": "c"}
    }


def test_exception_map() -> None:
    not_found = from_exception(ModelNotFound("gpt-17", ["auto"]))
    assert (not_found.status, not_found.code, not_found.param) == (404, "model_not_found", "model")
    no_model = from_exception(ModelNotFound(None, []))
    assert (no_model.status, no_model.code) == (400, "missing_required_parameter")
    unavailable = from_exception(NoBackendAvailable("auto", {"a": "no key"}))
    assert unavailable.status == 503 and unavailable.headers["retry-after"]
    assert "no key" in unavailable.message
    backend = from_exception(BackendError("slow down", status=429, type="rate_limit_error"))
    assert (backend.status, backend.type) == (429, "rate_limit_error")
    internal = from_exception(RuntimeError("secret detail"))
    assert internal.status == 500 and "secret" not in internal.message
