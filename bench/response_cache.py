"""What the response cache costs and saves, over HTTP as users run it (`gateway serve`,
HAProxy ingress, a proxy backend in the ingress over an instant upstream) at c=1:

- `plain`: a route without a cache (the baseline), each request a new prompt;
- `exact miss`: an exact-caching route, each request a new prompt (keyed, looked up, stored);
- `exact hit`: the same request again and again;
- `semantic miss`: a semantic route, each new prompt embedded (`--embedding local`: MiniLM
  in the ingress, as the embedded default; `minilm`: its vLLM pooling deployment), searched,
  verified, stored;
- `semantic hit`: a paraphrase of a stored prompt (embedded, found, verified, served).

A miss's cost is its p50 less the plain route's. Requests go one at a time from httpx (the
same client overhead for every route), one of each path in turn.

Run: .venv/bin/python bench/response_cache.py [--rounds 3 --requests 200 --embedding local|minilm]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import serve_app, start  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

PARAPHRASES = ("What is the capital of France?", "what's France's capital?")


def config(port: int, upstream: str, folder: Path, embedding: str) -> dict[str, Any]:
    backends = {
        "proxy": {"kind": "openai", "model": "stub", "base_url": upstream},
        "minilm": {
            "kind": "vllm", "model": "all-MiniLM-L6-v2", "source": "models/all-minilm-l6-v2",
            "accelerator": "cpu", "endpoints": ["embeddings"],
            "engine_kwargs": {"runner": "pooling", "dtype": "float32", "max_model_len": 256,
                              "enforce_eager": True, "kv_cache_memory_bytes": 33554432},
            "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
        },
    }  # fmt: skip
    routes = {name: {"candidates": ["proxy"]} for name in ("plain", "exact", "semantic")}
    cache = {
        "routes": {"exact": {"mode": "exact"}, "semantic": {"mode": "semantic"}},
        "semantic": {"embedding": embedding, "timeout_s": 30},
    }
    args = {"backends": backends, "routes": routes, "default_route": "plain", "cache": cache,
            "ledger": {"path": str(folder / "ledger.sqlite")},
            "request_log": {"path": str(folder / "requests.jsonl")}}  # fmt: skip
    return serve_app(port, args)


def timed(client: httpx.Client, url: str, bodies: Any, count: int, expect: str) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.post(url, json=next(bodies))
        took.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or response.headers.get("x-gateway-cache") != expect:
            described = client.get(url.replace("chat/completions", "gateway/cache")).text
            raise RuntimeError(f"{url}: {response.status_code} {response.text}, {described}")
    return took


def bodies(route: str, fixed: str | None = None) -> Any:
    for n in itertools.count():
        text = fixed if fixed is not None else f"Tell me a fact about the number {n} [{route}]"
        yield {"model": route, "temperature": 0, "max_tokens": 16,
               "messages": [{"role": "user", "content": text}]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--embedding", default="local", help="`local`, or `minilm` (vLLM)")
    parser.add_argument(
        "--exact-only", action="store_true", help="no semantic paths (no embedding model busy)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    stub_port, port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    python = sys.executable
    stub = start([python, "bench/stub_upstream.py", "--port", str(stub_port)], folder / "stub.log")
    settings = config(port, upstream, folder, args.embedding)
    (folder / "serve.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
    gateway = start([python, "-m", "gateway", "serve", str(folder / "serve.yaml")],
                    folder / "serve.log", env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[str, list[float]] = {}
    try:
        with httpx.Client(timeout=30) as client:
            probe = {"model": "semantic", "messages": [{"role": "user", "content": "warm"}]}
            wait_until(lambda: client.post(url, json=probe).status_code == 200, 600, "gateway")
            streams = {
                "plain": (bodies("plain"), "bypass"),
                "exact miss": (bodies("exact"), "miss"),
                "exact hit": (bodies("exact", "the same question"), "hit"),
                "semantic miss": (bodies("semantic"), "miss"),
            }
            timed(client, url, bodies("exact", "the same question"), 1, "miss")
            timed(client, url, bodies("semantic", PARAPHRASES[0]), 1, "miss")
            streams["semantic hit"] = (bodies("semantic", PARAPHRASES[1]), "hit")
            if args.exact_only:
                del streams["semantic miss"], streams["semantic hit"]
            for source, expect in streams.values():  # warm every path
                timed(client, url, source, 20, expect)
            for _ in range(args.rounds * args.requests):  # one of each path in turn
                for name, (source, expect) in streams.items():
                    results.setdefault(name, []).extend(timed(client, url, source, 1, expect))
    finally:
        stop_process(gateway, grace_s=60)
        stop_process(stub)
    summary = {
        name: {"p50_ms": statistics.median(v), "p99_ms": sorted(v)[int(len(v) * 0.99) - 1]}
        for name, v in results.items()
    }
    base = summary["plain"]["p50_ms"]
    for figures in summary.values():
        figures["added_p50_ms"] = figures["p50_ms"] - base
    print(json.dumps(summary, indent=1))
    print("| path | p50 ms | p99 ms | p50 less plain's, ms |\n|---|---|---|---|")
    for name, f in summary.items():
        print(f"| {name} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['added_p50_ms']:+.2f} |")


if __name__ == "__main__":
    main()
