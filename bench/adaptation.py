"""LoRA and embedding figures on this machine (docs/adaptation.md).

1. SmolLM2 on vLLM without LoRA: output tokens/s at concurrency 4.
2. The same engine with the shipped adapter loaded: the base and the adapter, interleaved.
3. all-MiniLM-L6-v2 on vLLM's pooling runner: latency of one short text and of a batch of 16.

`.venv/bin/python bench/adaptation.py [--requests 24]` (starts its own local Ray; ~5 min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ROOT / "models"
PROMPTS = [json.loads(line)["messages"] for line in (ROOT / "data/extraction/heldout.jsonl").open()]


def config(adapters: bool) -> dict[str, Any]:
    smollm2: dict[str, Any] = {
        "kind": "vllm", "model": "SmolLM2-135M-Instruct",
        "source": str(MODELS / "smollm2-135m-instruct"), "accelerator": "cpu",
        "engine_kwargs": {"enforce_eager": True, "max_model_len": 1024,
                          "kv_cache_memory_bytes": 256 << 20},
        "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}},
    }  # fmt: skip
    backends: dict[str, Any] = {"smollm2": smollm2}
    if adapters:
        smollm2["adapters"] = {"extract": {"path": str(MODELS / "smollm2-extract-lora")}}
        backends["minilm"] = {
            "kind": "vllm", "model": "all-MiniLM-L6-v2", "source": str(MODELS / "all-minilm-l6-v2"),
            "accelerator": "cpu", "endpoints": ["embeddings"],
            "engine_kwargs": {"runner": "pooling", "dtype": "float32", "max_model_len": 256,
                              "kv_cache_memory_bytes": 32 << 20,
                              "enforce_eager": True},
            "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        }  # fmt: skip
    return {"backends": backends, "ledger": {"enabled": False}, "request_log": {"enabled": False}}


async def throughput(base: str, model: str, requests: int) -> float:
    """Output tokens per second, 4 requests at a time, 64 tokens each (ignore_eos)."""
    limit = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def one(index: int) -> int:
            body = {"model": model, "messages": PROMPTS[index % len(PROMPTS)],
                    "max_tokens": 64, "ignore_eos": True, "temperature": 0}  # fmt: skip
            async with limit:
                response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        return tokens / (time.perf_counter() - started)


def embedding_latency(base: str, batch: int, rounds: int = 20) -> float:
    texts = [f"Sentence number {i} about a cat on a sofa." for i in range(batch)]
    times = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            client.post(
                "/v1/embeddings", json={"model": "minilm", "input": texts}
            ).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def deploy(adapters: bool, port: int) -> str:
    from ray import serve

    from gateway.app import build_app

    serve.run(build_app(config(adapters)), name="bench", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    probe = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{base}/v1/chat/completions", json=probe, timeout=60).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError("the engine did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    import ray
    from ray import serve

    from tests.helpers import free_port

    port = free_port()
    from gateway.serve.exposure import loopback_haproxy

    loopback_haproxy(os.environ)  # as `python -m gateway serve` does, before the cluster starts
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: dict[str, Any] = {}
    base = deploy(False, port)
    asyncio.run(throughput(base, "smollm2", 4))  # warm
    results["base_no_lora_tok_s"] = round(
        asyncio.run(throughput(base, "smollm2", args.requests)), 1
    )
    serve.delete("bench")
    base = deploy(True, port)
    asyncio.run(throughput(base, "smollm2:extract", 4))  # warm
    for model, key in (("smollm2", "base_lora_on_tok_s"), ("smollm2:extract", "adapter_tok_s")):
        results[key] = round(asyncio.run(throughput(base, model, args.requests)), 1)
    embedding_latency(base, 1, rounds=3)  # warm
    results["embed_1_p50_ms"] = round(embedding_latency(base, 1), 1)
    results["embed_16_p50_ms"] = round(embedding_latency(base, 16), 1)
    serve.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
