"""The gateway over real Ray Serve, a real vLLM replica and a real OpenAI-compatible upstream,
driven with the official `openai` client."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.helpers import TINY_MODEL
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello"}]
# Backends that serve text, and the model id each reports.
SERVING = [("tiny", "tiny"), ("upstream", "tiny-upstream")]


def post(stack: Stack, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{stack.base_url}{path}", timeout=60, **kwargs)


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# ---- models and health ------------------------------------------------------------------


def test_models_list_routes_and_available_backends(stack: Stack) -> None:
    ids = {model.id for model in stack.client().models.list()}
    assert {"auto", "failover", "tiny", "upstream", "echo"} <= ids
    assert "nokey" not in ids  # unavailable backends are not offered


def test_health_reports_unavailable_backend_with_reason(stack: Stack) -> None:
    health = httpx.get(f"{stack.root_url}/health").json()
    assert health["backends"]["tiny"]["available"] is True
    assert health["backends"]["upstream"]["available"] is True
    nokey = health["backends"]["nokey"]
    assert nokey["available"] is False
    assert "GATEWAY_TEST_MISSING_KEY" in nokey["reason"]
    assert health["status"] == "degraded"


def test_deployments_follow_placement_with_configured_scaling(stack: Stack) -> None:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deployments = details["applications"]["gateway"]["deployments"]
    assert {"GatewayIngress", "backend-tiny", "backend-upstream", "backend-echo"} <= set(
        deployments
    )
    assert "backend-nokey" not in deployments  # unavailable: not deployed at all
    assert "backend-coder" not in deployments  # placement: ingress (the default)
    echo = deployments["backend-echo"]["deployment_config"]
    assert echo["autoscaling_config"]["max_replicas"] == 2
    assert echo["autoscaling_config"]["target_ongoing_requests"] == 4
    assert echo["max_ongoing_requests"] == 16
    assert deployments["backend-tiny"]["deployment_config"]["num_replicas"] == 1


def test_gpu_example_asks_one_gpu_per_replica(stack: Stack) -> None:
    # The hub model cannot be resolved offline: check the placement with the tiny model swapped in.
    from ray.llm._internal.serve.core.server.llm_server import LLMServer

    from deployments._vllm import llm_config_for
    from gateway.app import PROJECT_ROOT
    from gateway.config import GatewayConfig

    config = GatewayConfig.load(PROJECT_ROOT / "configs" / "gpu.example.yaml")
    backend = config.backends["qwen-7b"].model_copy(update={"source": str(TINY_MODEL)})
    options = LLMServer.get_deployment_options(llm_config_for("qwen-7b", backend, PROJECT_ROOT))
    bundles = options["placement_group_bundles"]
    assert sum(bundle.get("GPU", 0) for bundle in bundles) == 1
    assert bundles[0]["accelerator_type:L4"] > 0
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["max_queued_requests"] == 256


# ---- chat and completions, both backend kinds ---------------------------------------------


@pytest.mark.parametrize(("backend", "model_id"), SERVING)
def test_chat_completion(stack: Stack, backend: str, model_id: str) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model=backend, messages=HELLO, max_tokens=8, temperature=0
    )
    assert raw.headers["x-gateway-backend"] == backend
    assert raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == model_id
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 1 <= completion.usage.completion_tokens <= 8
    assert completion.usage.prompt_tokens > 0


@pytest.mark.parametrize(("backend", "model_id"), SERVING)
def test_chat_stream_with_usage(stack: Stack, backend: str, model_id: str) -> None:
    stream = stack.client().chat.completions.create(
        model=backend,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.model == model_id for chunk in chunks)
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[-1].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 1 <= usage.completion_tokens <= 8


@pytest.mark.parametrize(("backend", "model_id"), SERVING)
def test_completions(stack: Stack, backend: str, model_id: str) -> None:
    completion = stack.client().completions.create(
        model=backend, prompt="Once upon a time", max_tokens=6, temperature=0
    )
    assert completion.object == "text_completion"
    assert completion.model == model_id
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 6
    streamed = list(
        stack.client().completions.create(
            model=backend,
            prompt="Once upon a time",
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens >= 1
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert text == completion.choices[0].text  # greedy: streamed equals non-streamed


def test_both_paths_reach_the_same_engine_weights(stack: Stack) -> None:
    # Same tiny model behind both backends: greedy outputs must agree token for token.
    client = stack.client()
    answers = {
        backend: client.completions.create(
            model=backend, prompt="The quick brown fox", max_tokens=8, temperature=0
        )
        .choices[0]
        .text
        for backend, _ in SERVING
    }
    assert answers["tiny"] == answers["upstream"]


def test_route_and_default_route(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=4
    )
    assert raw.headers["x-gateway-route"] == "auto"
    assert raw.headers["x-gateway-backend"] == "tiny"
    without_model = post(stack, "/chat/completions", json={"messages": HELLO, "max_tokens": 4})
    assert without_model.status_code == 200
    assert without_model.headers["x-gateway-route"] == "auto"


def test_client_request_id_is_kept(stack: Stack) -> None:
    response = post(
        stack,
        "/chat/completions",
        headers={"x-request-id": "req-abc-123"},
        json={"model": "echo", "messages": HELLO},
    )
    assert response.headers["x-request-id"] == "req-abc-123"


# ---- fallbacks and unavailability -----------------------------------------------------------


def test_failing_backend_falls_back(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="failover", messages=HELLO, max_tokens=4
    )
    assert raw.headers["x-gateway-backend"] == "upstream"
    assert raw.parse().choices[0].message.content is not None


def test_failing_stream_falls_back_before_first_token(stack: Stack) -> None:
    with stack.client().chat.completions.with_streaming_response.create(
        model="failover", messages=HELLO, max_tokens=4, stream=True
    ) as response:
        assert response.headers["x-gateway-backend"] == "upstream"
        assert len(list(response.parse())) >= 2


def test_client_error_is_not_retried_elsewhere(stack: Stack) -> None:
    response = post(stack, "/chat/completions", json={"model": "strict", "messages": HELLO})
    assert_openai_error(response, 400)
    assert response.headers["x-gateway-backend"] == "refuses"


def test_backend_without_key_is_503_with_reason(stack: Stack) -> None:
    for model in ("nokey", "keyless"):
        response = post(stack, "/chat/completions", json={"model": model, "messages": HELLO})
        error = assert_openai_error(response, 503, "no_backend_available")
        assert "GATEWAY_TEST_MISSING_KEY is not set" in error["message"]
        assert response.headers["retry-after"]


# ---- streaming is passed through, not buffered -------------------------------------------


def test_stream_chunks_arrive_as_produced(stack: Stack) -> None:
    # `slow` emits 6 words 300 ms apart: a buffering gateway delivers them all at ~1.5 s.
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        timeout=30,
        json={
            "model": "slow",
            "messages": HELLO,
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[1] >= 1.0  # spread out, as produced
    assert arrivals[1] < arrivals[-1] - 0.9


# ---- bad input: always OpenAI-shaped 4xx ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "auto"}', 400, "missing_required_parameter"),
        (b'{"model": "auto", "messages": "hi"}', 400, "invalid_type"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}',
            400,
            "invalid_type",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            400,
            "invalid_value",
        ),
        (
            b'{"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
        (b'{"model": "echo", "messages": [{"role": "user"}]}', 400, "missing_required_parameter"),
    ],
)
def test_bad_chat_input(stack: Stack, body: bytes, status: int, code: str) -> None:
    response = post(
        stack, "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert_openai_error(response, status, code)


def test_bad_completion_input(stack: Stack) -> None:
    response = post(stack, "/completions", json={"model": "tiny", "prompt": {"a": 1}})
    assert assert_openai_error(response, 400, "invalid_type")["param"] == "prompt"


def test_unknown_model_through_sdk(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        stack.client().chat.completions.create(model="gpt-17", messages=HELLO)
    assert caught.value.code == "model_not_found"


def test_compressed_bodies(stack: Stack) -> None:
    body = orjson.dumps({"model": "echo", "messages": [{"role": "user", "content": "zip me"}]})
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    zipped = post(stack, "/chat/completions", content=gzip.compress(body), headers=headers)
    assert zipped.status_code == 200, zipped.text
    assert zipped.json()["choices"][0]["message"]["content"] == "zip me"
    plain = post(stack, "/chat/completions", content=body, headers=headers)  # header lies
    assert_openai_error(plain, 400, "invalid_content_encoding")
    brotli = post(stack, "/chat/completions", content=body, headers={**headers,
                  "content-encoding": "br"})  # fmt: skip
    assert_openai_error(brotli, 415, "unsupported_content_encoding")
    bomb = gzip.compress(b" " * 200_000)  # inflates past max_body_bytes (64 KiB here)
    assert len(bomb) < 65536
    assert_openai_error(
        post(stack, "/chat/completions", content=bomb, headers=headers), 413, "body_too_large"
    )


def test_body_too_large(stack: Stack) -> None:
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 70000}]}
    assert_openai_error(post(stack, "/chat/completions", json=big), 413, "body_too_large")


def test_prompt_beyond_context_window(stack: Stack) -> None:
    long_prompt = "word " * 2000
    # The engine's max_model_len, and the upstream server's (longer, for the abort test).
    for backend, window in (("tiny", "512"), ("upstream", "1024")):
        response = post(
            stack, "/completions", json={"model": backend, "prompt": long_prompt, "max_tokens": 4}
        )
        error = assert_openai_error(response, 400, "context_length_exceeded")
        assert error["type"] == "invalid_request_error"
        assert window in error["message"]


def test_unknown_path_and_method(stack: Stack) -> None:
    assert_openai_error(httpx.get(f"{stack.base_url}/nothing-here"), 404)
    assert_openai_error(httpx.get(f"{stack.base_url}/chat/completions"), 405)


def test_still_serving_after_bad_input(stack: Stack) -> None:
    completion = stack.client().chat.completions.create(model="echo", messages=HELLO)
    assert completion.choices[0].message.content == "Say hello"


def test_serve_access_log_is_off_in_the_ingress(stack: Stack) -> None:
    """The gateway records every request itself; Serve's own line per request, written in
    bursts, held requests up (docs/performance.md)."""
    import ray

    stack.client().chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "x"}]
    )
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = list((session / "logs" / "serve").glob("replica_gateway_GatewayIngress_*.log"))
    assert logs, "no ingress replica log found"
    assert not any("POST /v1/chat/completions" in path.read_text() for path in logs)
