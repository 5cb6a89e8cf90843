"""One real stack per test session: Ray Serve with the gateway, a vLLM engine replica on the
tiny model, and vLLM's own OpenAI server (subprocess) as an OpenAI-compatible upstream."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.task_examples import TASKS
from tests.helpers import ENGINE_ENV, ROOT, TINY_MODEL, free_port, stop_process, wait_until

UPSTREAM_KEY_ENV = "GATEWAY_TEST_UPSTREAM_KEY"
MISSING_KEY_ENV = "GATEWAY_TEST_MISSING_KEY"
TINY_ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_model_len": 512}


STUB = ROOT / "bench" / "stub_upstream.py"
# Two OpenAI-compatible upstreams with known latencies and prices (per 1M tokens).
TIMED_UPSTREAMS = {
    "fast-dear": {"ttft_ms": 20, "tpot_ms": 2, "input": 5.0, "output": 15.0},
    "slow-cheap": {"ttft_ms": 300, "tpot_ms": 10, "input": 0.1, "output": 0.2},
}


@dataclass
class Stack:
    base_url: str  # the gateway, .../v1
    root_url: str  # the gateway, without /v1
    upstream_url: str  # vLLM's own OpenAI server, .../v1
    upstream_key: str
    config: dict[str, Any]

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kwargs)


def gateway_config(upstream_url: str, timed_urls: dict[str, str]) -> dict[str, Any]:
    timed = {
        name: {
            "kind": "openai",
            "model": "stub",
            "base_url": timed_urls[name],
            "in_ingress": True,
            "pricing": {"input_per_mtok": spec["input"], "output_per_mtok": spec["output"]},
            # Deliberately equal and wrong: only measurements can tell them apart.
            "latency_prior": {"ttft_ms": 100, "tpot_ms": 5},
        }
        for name, spec in TIMED_UPSTREAMS.items()
    }
    return {
        "backends": {
            "tiny": {
                "kind": "vllm",
                "model": "tiny",
                "source": str(TINY_MODEL),
                "accelerator": "cpu",
                "engine_kwargs": TINY_ENGINE,
                "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}},
            },
            "upstream": {
                "kind": "openai",
                "model": "tiny-upstream",
                "base_url": upstream_url,
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeouts": {"total_s": 60},
            },
            "echo": {
                "kind": "fake",
                "model": "echo-1",
                "deployment": {
                    "autoscaling_config": {
                        "min_replicas": 1,
                        "max_replicas": 2,
                        "target_ongoing_requests": 4,
                    },
                    "max_ongoing_requests": 16,
                },
            },
            "slow": {
                "kind": "fake",
                "model": "slow-1",
                "reply": "a b c d e f",
                "token_interval_ms": 300,
            },
            "flaky": {"kind": "fake", "model": "flaky-1", "fail_status": 503},
            "refuses": {"kind": "fake", "model": "refuses-1", "fail_status": 400},
            "nokey": {"kind": "openai", "model": "gpt-4o-mini", "api_key_env": MISSING_KEY_ENV},
            "coder": {
                "kind": "fake",
                "model": "coder-1",
                "reply": "def solution(): ...",
                "tasks": ["code"],
                "in_ingress": True,
            },
            **timed,
        },
        "routes": {
            "auto": {"candidates": ["tiny", "upstream"], "fallbacks": ["upstream"]},
            "failover": {"candidates": ["flaky"], "fallbacks": ["upstream"]},
            "strict": {"candidates": ["refuses"], "fallbacks": ["echo"]},
            "keyless": {"candidates": ["nokey"]},
            "budget": {"policy": "cheapest", "candidates": ["slow-cheap", "fast-dear"]},
            "by-task": {"policy": "ordered", "candidates": ["coder", "echo"]},
            "budget-strict": {
                "policy": "cheapest",
                "candidates": ["slow-cheap", "fast-dear"],
                "on_infeasible": "reject",
            },
        },
        "default_route": "auto",
        "tasks": {
            name: {"examples": list(TASKS[name]["examples"])} for name in ("code", "math", "chat")
        }
        | {"extraction": {"keywords": [r"\bextract\b"]}},
        "ingress": {"max_body_bytes": 65536, "health_check_interval_s": 2},
    }


def start_upstream(port: int, key: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(TINY_MODEL), "--served-model-name", "tiny-upstream",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", key,
        "--enforce-eager", "--max-model-len", "512",
    ]  # fmt: skip
    env = {**os.environ, **ENGINE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import ray
    from ray import serve

    from gateway.app import build_app

    logs = tmp_path_factory.mktemp("logs")
    upstream_port, gateway_port = free_port(), free_port()
    upstream_key = "sk-test-" + secrets.token_hex(12)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    upstream = start_upstream(upstream_port, upstream_key, logs / "upstream.log")
    stubs, timed_urls = [], {}
    for name, spec in TIMED_UPSTREAMS.items():
        port = free_port()
        stubs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(STUB),
                    "--port",
                    str(port),
                    "--ttft-ms",
                    str(spec["ttft_ms"]),
                    "--tpot-ms",
                    str(spec["tpot_ms"]),
                ],
                start_new_session=True,
            )
        )
        timed_urls[name] = f"http://127.0.0.1:{port}/v1"

    os.environ.update(ENGINE_ENV)
    os.environ[UPSTREAM_KEY_ENV] = upstream_key
    os.environ.pop(MISSING_KEY_ENV, None)
    config = gateway_config(upstream_url, timed_urls)
    started = time.monotonic()
    try:
        ray.init(
            address="local",
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            namespace="gateway-tests",
        )
        serve.start(http_options={"host": "127.0.0.1", "port": gateway_port})
        serve.run(build_app(config), name="gateway", route_prefix="/")
        headers = {"authorization": f"Bearer {upstream_key}"}
        wait_until(
            lambda: httpx.get(f"{upstream_url}/models", headers=headers).status_code == 200,
            300,
            "vLLM upstream server",
            upstream,
            logs / "upstream.log",
        )
        print(f"\nstack ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        root = f"http://127.0.0.1:{gateway_port}"
        yield Stack(f"{root}/v1", root, upstream_url, upstream_key, config)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for process in (upstream, *stubs):
                stop_process(process)
