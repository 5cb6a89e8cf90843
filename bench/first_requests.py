"""Speed of the first requests after the gateway reports ready, against the same requests
once warm: `serve run` of a config, poll `GET /health` until it is 200, then at once N
streamed chat requests at concurrency C (prompts of 100 random words, 32 output tokens), then
N other such requests (no prompt shares a prefix the engine could have cached).

Run: .venv/bin/python bench/first_requests.py [--config configs/local.yaml] [--no-warmup]
Prints JSON: output tokens/s and TTFT p50 of the first and the second round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import cluster_env, stop_process, wait_until  # noqa: E402

WORDS = ["route", "measure", "cost", "latency", "model", "token", "stream", "replica", "engine",
         "prompt", "answer"]  # fmt: skip


async def one(client: httpx.AsyncClient, index: int, model: str) -> tuple[float, int, float]:
    # Random words per request, seeded: no two prompts share a prefix the engine could cache.
    rng = random.Random(index)
    prompt = " ".join(rng.choice(WORDS) for _ in range(100))
    body = {"model": model, "stream": True, "max_tokens": 32, "temperature": 0,
            "ignore_eos": True, "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    started = time.perf_counter()
    first, chunks = 0.0, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content"' in line:
                chunks += 1
                first = first or time.perf_counter() - started
    return first * 1000, chunks, time.perf_counter() - started


async def round_of(
    base: str, model: str, n: int, concurrency: int, first_index: int
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:

        async def limited(i: int) -> tuple[float, int, float]:
            async with gate:
                return await one(client, first_index + i, model)

        started = time.perf_counter()
        results = await asyncio.gather(*(limited(i) for i in range(n)))
        wall = time.perf_counter() - started
    tokens = sum(r[1] for r in results)
    return {
        "output_tok_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(statistics.median(r[0] for r in results), 0),
        "ttft_max_ms": round(max(r[0] for r in results), 0),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / args.config).read_text())
    if args.no_warmup:
        for backend in config["applications"][0]["args"]["backends"].values():
            if backend.get("kind") == "vllm":
                backend["warmup"] = {"enabled": False}
    port = config["http_options"]["port"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        log = Path(folder) / "serve.log"
        env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
               "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("serve")), "run", str(path)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
        try:
            started = time.monotonic()
            wait_until(
                lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200,
                900, "GET /health 200", proc, log,
            )  # fmt: skip
            ready_s = time.monotonic() - started
            n, c = args.requests, args.concurrency
            first = asyncio.run(round_of(base, args.model, n, c, first_index=0))
            second = asyncio.run(round_of(base, args.model, n, c, first_index=n))
        finally:
            stop_process(proc, grace_s=60)
    result = {"warmup": not args.no_warmup, "ready_after_s": round(ready_s, 1),
              "first_round": first, "second_round": second}  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
