"""POST /v1/embeddings through the pipeline, in process: routed only to backends that serve
embeddings, OpenAI's shape (floats or base64), usage costed in the ledger, bad input 400.
A real engine (all-MiniLM-L6-v2 on vLLM's pooling runner) and the official client:
tests/integration/test_embeddings.py."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.http.app import create_app
from tests.helpers import fake_backends

CONFIG: dict[str, Any] = {
    "backends": {
        "chatty": {"kind": "fake", "model": "chat-1"},
        "vectors": {"kind": "fake", "model": "embed-1", "endpoints": ["embeddings"],
                    "pricing": {"input_per_mtok": 0.02}},
    },
    "routes": {"embed": {"policy": "cheapest", "candidates": ["chatty", "vectors"]}},
}  # fmt: skip


@pytest.fixture
def client(tmp_path: Path) -> Any:
    config = GatewayConfig.load(
        {
            **CONFIG,
            "ledger": {"path": str(tmp_path / "ledger.sqlite")},
            "request_log": {"enabled": False},
        }
    )
    backends = fake_backends(config)
    gateway, ledger = build_gateway(config, backends, tmp_path)
    app = create_app(gateway, config, ledger)
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client, ledger


def test_embeddings_go_to_a_backend_that_serves_them_and_are_costed(client: Any) -> None:
    http, ledger = client
    body = {"model": "embed", "input": ["the cat sat", "a cat sat down", "stock prices fell"]}
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-backend"] == "vectors"
    answer = response.json()
    assert answer["object"] == "list" and [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert answer["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    explain = http.post("/v1/routing/explain", json={"model": "embed", "messages": [
        {"role": "user", "content": "hi"}]}).json()  # fmt: skip
    vectors = next(c for c in explain["candidates"] if c["backend"] == "vectors")
    assert vectors["reasons"] == ["does not serve chat/completions"]
    assert ledger.flush()
    (row,) = ledger.rows()
    assert row["endpoint"] == "embeddings" and row["prompt_tokens"] == 10
    assert row["completion_tokens"] == 0 and row["cost_usd"] == pytest.approx(10 * 0.02 / 1e6)


def test_base64_is_openais_little_endian_float32(client: Any) -> None:
    http, _ = client
    floats = http.post("/v1/embeddings", json={"model": "vectors", "input": "hello"}).json()
    packed = http.post(
        "/v1/embeddings", json={"model": "vectors", "input": "hello", "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embed"}, "input"),
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": []}, "input"),
        ({"model": "embed", "input": ["ok", ""]}, "input"),
        ({"model": "embed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "embed", "input": 7}, "input"),
    ],
)
def test_bad_input_gets_an_openai_shaped_400(client: Any, body: dict[str, Any], param: str) -> None:
    http, _ = client
    response = http.post(
        "/v1/embeddings", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and (error["param"] or "").startswith(param)


def test_a_chat_request_never_reaches_an_embedding_backend(client: Any) -> None:
    http, _ = client
    body = {"model": "embed", "messages": [{"role": "user", "content": "hi"}]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["x-gateway-backend"] == "chatty"
