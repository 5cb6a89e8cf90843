"""Gateway overhead per request: the same requests sent directly to an instant upstream and
through the gateway (HAProxy -> ingress, where the proxy backend runs by default -> upstream),
and through a proxy backend with `placement: deployment` (one handle hop more).

Also times the ingress alone, answering from the in-process fake backend.
Run: make bench   (or .venv/bin/python bench/overhead.py --requests 400)
Prints a JSON summary; docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, stop_process, wait_until  # noqa: E402

BODY = {"model": "M", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


def timed(client: httpx.Client, url: str, model: str, stream: bool, n: int) -> list[float]:
    body = {**BODY, "model": model, "stream": stream}
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        if stream:
            with client.stream("POST", url, json=body) as response:
                for _ in response.iter_bytes():
                    pass
        else:
            response = client.post(url, json=body)
        assert response.status_code == 200, response.text
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    import ray
    from ray import serve

    from gateway.app import build_app

    stub_port, gateway_port = free_port(), free_port()
    stub = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "stub_upstream.py"), "--port", str(stub_port)],
        start_new_session=True,
    )
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    wait_until(lambda: httpx.get(f"{upstream}/models").status_code == 200, 30, "stub", stub)
    config = {
        "backends": {
            "proxy": {"kind": "openai", "model": "stub", "base_url": upstream},
            "proxy-deployment": {
                "kind": "openai",
                "model": "stub",
                "base_url": upstream,
                "placement": "deployment",
            },
            "fake": {"kind": "fake", "model": "fake", "reply": "ok"},
        }
    }
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    from gateway.serve.exposure import loopback_haproxy

    loopback_haproxy(os.environ)  # as `python -m gateway serve` does, before the cluster starts
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": gateway_port})
        serve.run(build_app(config), name="gateway", route_prefix="/")
        gateway = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(timeout=30) as client:
            for stream in (False, True):
                kind = "streamed" if stream else "non_streamed"
                timed(client, f"{upstream}/chat/completions", "stub", stream, 30)  # warm-up
                timed(client, gateway, "proxy", stream, 30)
                direct = summary(
                    timed(client, f"{upstream}/chat/completions", "stub", stream, args.requests)
                )
                via = summary(timed(client, gateway, "proxy", stream, args.requests))
                own = summary(timed(client, gateway, "proxy-deployment", stream, args.requests))
                fake = summary(timed(client, gateway, "fake", stream, args.requests))
                results[kind] = {
                    "direct_p50_ms": direct["p50_ms"],
                    "gateway_p50_ms": via["p50_ms"],
                    "added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
                    "added_mean_ms": round(via["mean_ms"] - direct["mean_ms"], 3),
                    "gateway_p90_ms": via["p90_ms"],
                    "own_deployment_p50_ms": own["p50_ms"],
                    "own_deployment_added_p50_ms": round(own["p50_ms"] - direct["p50_ms"], 3),
                    "fake_backend_p50_ms": fake["p50_ms"],
                }
        settings = {
            name: os.environ[name]
            for name in ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY")
        }
        print(json.dumps({"requests": args.requests, **settings, **results}, indent=2))
    finally:
        serve.shutdown()
        ray.shutdown()
        stop_process(stub)


if __name__ == "__main__":
    main()
