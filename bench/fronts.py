"""What each client API costs in front of the same backends, c=1: chat completions, Anthropic
Messages (translated to chat and back) and OpenAI Responses (translated, store on and off),
streamed and not, against an instant OpenAI-compatible upstream; and Messages against the
Anthropic stand-in, passed through, beside chat translated to Messages and back.

Run: .venv/bin/python bench/fronts.py --requests 300
Prints a JSON summary (p50 ms per path); docs/clients.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import summary  # noqa: E402
from tests.helpers import free_port, stop_process, wait_until  # noqa: E402

HI = [{"role": "user", "content": "hello"}]
HEADERS = {"anthropic-version": "2023-06-01"}
PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": HI, "max_tokens": 16}),
    "messages": ("/v1/messages", {"messages": HI, "max_tokens": 16}),
    "responses": ("/v1/responses", {"input": "hello", "max_output_tokens": 16, "store": False}),
    "responses_stored": ("/v1/responses", {"input": "hello", "max_output_tokens": 16}),
}


def timed(client: httpx.Client, path: str, body: dict[str, Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        if body.get("stream"):
            with client.stream("POST", path, json=body, headers=HEADERS) as response:
                for _ in response.iter_bytes():
                    pass
        else:
            response = client.post(path, json=body, headers=HEADERS)
        assert response.status_code == 200, response.text
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    import ray
    from ray import serve

    from gateway.app import build_app

    stub_port, standin_port, gateway_port = free_port(), free_port(), free_port()
    key = "sk-ant-bench-" + secrets.token_hex(8)
    os.environ["BENCH_ANTHROPIC_KEY"] = key
    stub = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "stub_upstream.py"), "--port", str(stub_port)],
        start_new_session=True,
    )
    standin = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "standins" / "anthropic_messages.py"),
         "--port", str(standin_port)],
        env={**os.environ, "STANDIN_KEY": key}, start_new_session=True,
    )  # fmt: skip
    upstream, claude = f"http://127.0.0.1:{stub_port}/v1", f"http://127.0.0.1:{standin_port}"
    wait_until(lambda: httpx.get(f"{upstream}/models").status_code == 200, 30, "stub", stub)
    wait_until(lambda: httpx.get(f"{claude}/_received").status_code == 200, 30, "standin", standin)
    store = Path(tempfile.mkdtemp()) / "ledger.sqlite"
    config = {
        "backends": {
            "proxy": {"kind": "openai", "model": "stub", "base_url": upstream},
            "claude": {"kind": "anthropic", "model": "claude-standin", "base_url": claude,
                       "api_key_env": "BENCH_ANTHROPIC_KEY"},
        },
        "ledger": {"path": str(store)},
        "request_log": {"enabled": False},
    }  # fmt: skip
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    from gateway.serve.exposure import loopback_haproxy

    loopback_haproxy(os.environ)  # as `python -m gateway serve` does, before the cluster starts
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": gateway_port})
        serve.run(build_app(config), name="gateway", route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", timeout=30) as client:
            for model in ("proxy", "claude"):
                for stream in (False, True):
                    for name, (path, body) in PATHS.items():
                        if model == "claude" and name.startswith("responses"):
                            continue
                        request = {**body, "model": model, "stream": stream}
                        timed(client, path, request, 30)  # warm-up
                        p50 = summary(timed(client, path, request, args.requests))["p50_ms"]
                        kind = "streamed" if stream else "non_streamed"
                        results.setdefault(model, {}).setdefault(kind, {})[name] = p50
        print(json.dumps({"requests": args.requests, **results}, indent=2))
    finally:
        serve.shutdown()
        ray.shutdown()
        stop_process(stub)
        stop_process(standin)


if __name__ == "__main__":
    main()
