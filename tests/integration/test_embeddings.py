"""/v1/embeddings on real Serve: all-MiniLM-L6-v2 on vLLM's pooling runner (CPU), and the
same vectors proxied over HTTP by an OpenAI-compatible backend; the official client's
`embeddings.create` (which asks for base64 and decodes it) on both."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import MODELS, wait_until
from tests.integration.conftest import Stack, warmed

pytestmark = pytest.mark.integration
PREFIX = "/embed"
MINILM = MODELS / "all-minilm-l6-v2"


def embed_config(stack: Stack, root: str) -> dict[str, Any]:
    return {
        "backends": {
            "minilm": {
                "kind": "vllm",
                "model": "all-MiniLM-L6-v2",
                "source": str(MINILM),
                "accelerator": "cpu",
                "endpoints": ["embeddings"],
                "engine_kwargs": {"runner": "pooling", "dtype": "float32", "max_model_len": 256,
                              "kv_cache_memory_bytes": 32 << 20,
                                  "enforce_eager": True},
                "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
                "timeouts": {"first_token_s": 60, "total_s": 60},
            },
            # An OpenAI-compatible provider of embeddings: here, this app's own endpoint.
            "proxied": {
                "kind": "openai",
                "model": "minilm",
                "base_url": f"{root}/v1",
                "endpoints": ["embeddings"],
                "pricing": {"input_per_mtok": 0.02},
            },
            "chatty": {"kind": "fake", "model": "chat-1"},
        },
        "routes": {"embed": {"policy": "cheapest", "candidates": ["chatty", "proxied", "minilm"]}},
        "ledger": {"path": str(stack.logs / "embed-ledger.sqlite")},
        "request_log": {"path": str(stack.logs / "embed-requests.jsonl")},
    }  # fmt: skip


@pytest.fixture(scope="module")
def embed(stack: Stack) -> Iterator[str]:
    from ray import serve

    from gateway.app import build_app

    root = stack.root_url + PREFIX
    serve.run(build_app(embed_config(stack, root)), name="embed", route_prefix=PREFIX,
              blocking=False)  # fmt: skip
    wait_until(lambda: warmed(root), 300, "the embed app")
    probe = {"model": "minilm", "input": "x"}
    wait_until(
        lambda: httpx.post(f"{root}/v1/embeddings", json=probe, timeout=30).status_code == 200,
        300, "the embedding engine",
    )  # fmt: skip
    yield root
    serve.delete("embed")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


TEXTS = [
    "The cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "Quarterly revenue fell by four percent.",
]


@pytest.mark.parametrize("model", ["minilm", "proxied", "embed"])
def test_a_paraphrase_ranks_above_an_unrelated_sentence(embed: str, model: str) -> None:
    client = openai.OpenAI(base_url=f"{embed}/v1", api_key="unused", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=model, input=TEXTS)
    answer = raw.parse()
    vectors = [item.embedding for item in answer.data]
    assert [len(v) for v in vectors] == [384] * 3
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert answer.usage.prompt_tokens > 0
    expected = {"minilm": "minilm", "proxied": "proxied", "embed": "minilm"}[model]
    assert raw.headers["x-gateway-backend"] == expected  # the route: the free one, not chatty


def test_floats_and_base64_agree_and_the_ledger_prices_the_proxy(embed: str) -> None:
    body = {"model": "proxied", "input": "hello there"}
    floats = httpx.post(f"{embed}/v1/embeddings", json=body, timeout=30).json()
    assert isinstance(floats["data"][0]["embedding"][0], float)
    client = openai.OpenAI(base_url=f"{embed}/v1", api_key="unused", max_retries=0)
    decoded = client.embeddings.create(model="minilm", input="hello there").data[0].embedding
    assert cosine(decoded, floats["data"][0]["embedding"]) > 0.9999
    cost = httpx.post(f"{embed}/v1/embeddings", json=body, timeout=30).headers
    assert float(cost["x-gateway-cost-usd"]) > 0


@pytest.mark.parametrize(
    "body",
    [{"model": "minilm", "input": ""}, {"model": "minilm", "input": [""]},
     {"model": "minilm", "input": "x", "encoding_format": "hex"}],
)  # fmt: skip
def test_bad_input_is_an_openai_400(embed: str, body: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{embed}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(**body)
    assert caught.value.param and caught.value.code == "invalid_value"


def test_a_body_without_input_is_a_400_naming_it(embed: str) -> None:
    response = httpx.post(f"{embed}/v1/embeddings", json={"model": "minilm"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_the_ledger_has_every_embedding_request(stack: Stack, embed: str) -> None:
    body = {"model": "minilm", "input": "one more"}
    response = httpx.post(f"{embed}/v1/embeddings", json=body, timeout=30)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    def row() -> tuple[Any, ...] | None:
        with sqlite3.connect(stack.logs / "embed-ledger.sqlite") as db:
            found: tuple[Any, ...] | None = db.execute(
                "SELECT endpoint, status, prompt_tokens, completion_tokens FROM requests "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return found

    wait_until(lambda: row() is not None, 10, "the ledger row")
    tokens = response.json()["usage"]["prompt_tokens"]
    assert row() == ("embeddings", 200, tokens, 0)
