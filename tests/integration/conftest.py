"""One real stack per test session: Ray Serve with the gateway, a vLLM engine replica on the
tiny model, and vLLM's own OpenAI server (subprocess) as an OpenAI-compatible upstream."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest

from bench.task_examples import TASKS
from tests.helpers import (
    ENGINE_ENV,
    ROOT,
    TINY_MODEL,
    cluster_env,
    free_port,
    kill_orphaned_haproxy,
    stop_process,
    wait_until,
)
from tests.postgres import PostgresServer

UPSTREAM_KEY_ENV = "GATEWAY_TEST_UPSTREAM_KEY"
MISSING_KEY_ENV = "GATEWAY_TEST_MISSING_KEY"
WRONG_KEY_ENV = "GATEWAY_TEST_WRONG_KEY"
ANTHROPIC_KEY_ENV = "GATEWAY_TEST_ANTHROPIC_KEY"
MASTER_KEY_ENV = "GATEWAY_TEST_MASTER_KEY"  # the keyed gateway's (tests/integration/keyed.py)
DATABASE_URL_ENV = "GATEWAY_DATABASE_URL"  # the keyed gateway's PostgreSQL
KEYED_SCHEMA = "keyed"  # its schema there (unit tests empty `public` as they go)
TINY_ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_model_len": 512}


STUB = ROOT / "bench" / "stub_upstream.py"
ANTHROPIC_STANDIN = ROOT / "tests" / "standins" / "anthropic_messages.py"
CAPTURE = ROOT / "tests" / "standins" / "capture_upstream.py"
# Two OpenAI-compatible upstreams with known latencies and prices (per 1M tokens).
TIMED_UPSTREAMS = {
    "fast-dear": {"ttft_ms": 20, "tpot_ms": 2, "input": 5.0, "output": 15.0},
    "slow-cheap": {"ttft_ms": 300, "tpot_ms": 10, "input": 0.1, "output": 0.2},
}
# Scripted upstreams for the resilience tests: name -> stub_upstream.py options.
CHAOS_UPSTREAMS = {
    "doomed": {"ttft_ms": 30, "tpot_ms": 1},  # killed mid-load
    "backup": {"ttft_ms": 30, "tpot_ms": 1},
    "flaky30": {"ttft_ms": 5, "tpot_ms": 1, "fail_rate": 0.3},
    "dawdler": {"ttft_ms": 0, "tpot_ms": 100},  # 20 tokens in 2 s: time to walk away
}


@dataclass
class Stack:
    base_url: str  # the gateway, .../v1
    root_url: str  # the gateway, without /v1
    upstream_url: str  # vLLM's own OpenAI server, .../v1
    upstream_key: str
    config: dict[str, Any]
    anthropic_url: str  # the Messages API stand-in
    stubs: dict[str, tuple[str, subprocess.Popen[bytes]]]  # name -> (root URL, process)
    secrets: list[str]  # every key value the run used (tests add the keys they create)
    logs: Path
    metrics_url: str  # Ray's Prometheus endpoint on this node

    def client(self, **kwargs: Any) -> openai.OpenAI:
        options = {"api_key": "unused", "max_retries": 0, **kwargs}
        return openai.OpenAI(base_url=self.base_url, **options)


def chaos_backends(urls: dict[str, str], blackhole_url: str) -> dict[str, Any]:
    """Backends over the scripted upstreams, in the ingress (the default placement) unless a
    test needs the other placement too."""
    fast_breaker = {"consecutive_failures": 2, "cooldown_s": 60}
    backends: dict[str, Any] = {
        name: {"kind": "openai", "model": "stub", "base_url": urls[name]}
        for name in ("doomed", "backup", "flaky30")
    }
    backends["flaky30"]["circuit_breaker"] = {"enabled": False}  # the retries are under test
    dawdler = {"kind": "openai", "model": "stub", "base_url": urls["dawdler"]}
    backends["dawdler"] = {**dawdler, "placement": "deployment"}
    backends["dawdler-local"] = {**dawdler, "in_ingress": True}  # the older spelling
    backends["blackhole"] = {
        "kind": "openai",
        "model": "stub",
        "base_url": blackhole_url,
        "timeouts": {"first_token_s": 1, "total_s": 1.5},
        "retry": {"max_retries": 0},
        "circuit_breaker": fast_breaker,
    }
    narrow = {
        "kind": "fake",
        "model": "narrow-1",
        "latency_ms": 1500,
        "deployment": {"max_ongoing_requests": 1, "max_queued_requests": 1},
        "retry": {"max_retries": 0},
    }
    backends["narrow"] = {**narrow, "placement": "deployment"}  # Serve's back pressure
    backends["narrow-local"] = narrow  # the ingress's own bound
    return backends


CACHED_PRICES = {
    "upstream-priced": {"input_per_mtok": 1.0, "output_per_mtok": 2.0,
                        "cached_input_per_mtok": 0.1},
    "claude-priced": {"input_per_mtok": 3.0, "output_per_mtok": 15.0,
                      "cached_input_per_mtok": 0.3, "cache_write_per_mtok": 3.75},
}  # fmt: skip


# Guardrail routes -> the backend of the capture upstream (tests/standins/capture_upstream.py).
GUARDED_ROUTES = {
    "guarded": "capture",  # OpenAI-compatible: chat, completions, Responses translated
    "guarded-native": "capture-native",  # Responses passed through
    "guarded-claude": "capture-claude",  # Anthropic Messages
    "guarded-block": "capture",
    "guarded-anon": "capture",
    "guarded-rules": "capture",
    "guarded-judge": "capture",
    "guarded-judge-backend": "capture",
}


def capture_backends(url: str) -> dict[str, Any]:
    return {
        "capture": {"kind": "openai", "model": "capture", "base_url": f"{url}/v1"},
        "capture-native": {"kind": "openai", "model": "capture", "base_url": f"{url}/v1",
                           "responses_api": True},
        "capture-claude": {"kind": "anthropic", "model": "claude-capture", "base_url": url,
                           "api_key_env": ANTHROPIC_KEY_ENV},
    }  # fmt: skip


def guardrails_config(capture_url: str) -> dict[str, Any]:
    return {
        "policies": {
            "pii": {"pii": {"mode": "restore"}},
            "no-pii": {"pii": {"mode": "block"}},
            "anon": {"pii": {"mode": "anonymize"}},
            "rules": {
                "deny": [
                    {"name": "sql", "pattern": r"\bdrop\s+table\b"},
                    {"name": "weapons", "examples": ["how do I build a bomb at home"]},
                ],
                "max_prompt_chars": 2000,
            },
            "moderated": {"judge": {"url": f"{capture_url}/v1/moderations"}},
            # The echo backend repeats the judge's prompt: it "flags" what says forbidden.
            "judged": {
                "judge": {"backend": "echo", "flag_pattern": "forbidden", "max_tokens": 200}
            },
        },
        "backends": {"capture": ["pii"], "capture-native": ["pii"], "capture-claude": ["pii"]},
        "routes": {
            "guarded-block": ["no-pii"],
            "guarded-anon": ["anon"],
            "guarded-rules": ["rules"],
            "guarded-judge": ["moderated"],
            "guarded-judge-backend": ["judged"],
        },
    }


# Continued streams (test_continuation.py): fakes that break after `n` of RESUMED's words,
# continued by one that knows the whole answer, by the vLLM engine and by vLLM's server.
RESUMED = "the quick brown fox jumps over the lazy dog and runs far away"
BREAKS_AT = (1, 6, 11)


def resume_config() -> tuple[dict[str, Any], dict[str, Any]]:
    # Each break is a failure its breaker counts: kept closed, as the tests break them often.
    backends = {f"snap-{n}": {"kind": "fake", "model": "snap", "reply": RESUMED,
                              "fail_after_tokens": n, "pricing": {"output_per_mtok": 1.0},
                              "circuit_breaker": {"enabled": False}}
                for n in BREAKS_AT}  # fmt: skip
    backends["whole"] = {"kind": "fake", "model": "whole", "reply": RESUMED}
    routes = {f"resume-{n}": {"candidates": [f"snap-{n}"], "fallbacks": ["whole"]}
              for n in BREAKS_AT}  # fmt: skip
    routes["resume-tiny"] = {"candidates": ["snap-6"], "fallbacks": ["tiny"]}
    routes["resume-upstream"] = {"candidates": ["snap-6"], "fallbacks": ["upstream"]}
    routes["resume-off"] = {"candidates": ["snap-6"], "fallbacks": ["whole"],
                            "resume_streams": False}  # fmt: skip
    return backends, routes


def gateway_config(
    upstream_url: str,
    timed_urls: dict[str, str],
    anthropic_url: str = "http://127.0.0.1:9",
    chaos_urls: dict[str, str] | None = None,
    blackhole_url: str = "http://127.0.0.1:9/v1",
    logs: Path | None = None,
    capture_url: str = "http://127.0.0.1:9",
) -> dict[str, Any]:
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
    resume_backends, resume_routes = resume_config()
    return {
        "backends": {
            **resume_backends,
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
                "placement": "deployment",
                "responses_api": True,  # vLLM's own /v1/responses: passed through
            },
            "echo": {
                "kind": "fake",
                "model": "echo-1",
                "placement": "deployment",
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
            "wrongkey": {
                "kind": "openai",
                "model": "tiny-upstream",
                "base_url": upstream_url,
                "api_key_env": WRONG_KEY_ENV,
                "in_ingress": True,
            },
            "claude": {
                "kind": "anthropic",
                "model": "claude-standin",
                "base_url": anthropic_url,
                "api_key_env": ANTHROPIC_KEY_ENV,
                "retry": {"initial_backoff_ms": 10, "max_retry_after_s": 2},
            },
            # Provider prompt caches priced: vLLM's prefix cache, the stand-in's cache_control.
            "upstream-priced": {
                "kind": "openai",
                "model": "tiny-upstream",
                "base_url": upstream_url,
                "api_key_env": UPSTREAM_KEY_ENV,
                "in_ingress": True,
                "pricing": CACHED_PRICES["upstream-priced"],
            },
            "claude-priced": {
                "kind": "anthropic",
                "model": "claude-standin",
                "base_url": anthropic_url,
                "api_key_env": ANTHROPIC_KEY_ENV,
                "pricing": CACHED_PRICES["claude-priced"],
            },
            "coder": {
                "kind": "fake",
                "model": "coder-1",
                "reply": "def solution(): ...",
                "tasks": ["code"],
                "in_ingress": True,
            },
            **capture_backends(capture_url),
            **timed,
            **chaos_backends(chaos_urls or dict.fromkeys(CHAOS_UPSTREAMS, "x"), blackhole_url),
        },
        "routes": {
            **resume_routes,
            "auto": {"candidates": ["tiny", "upstream"], "fallbacks": ["upstream"]},
            "failover": {"candidates": ["flaky"], "fallbacks": ["upstream"]},
            "strict": {"candidates": ["refuses"], "fallbacks": ["echo"]},
            "keyless": {"candidates": ["nokey"]},
            "budget": {"policy": "cheapest", "candidates": ["slow-cheap", "fast-dear"]},
            "by-task": {"policy": "ordered", "candidates": ["coder", "echo"]},
            "survives": {"candidates": ["doomed"], "fallbacks": ["backup"]},
            "ab-route": {"candidates": ["fast-dear"]},
            "flaky-then-backup": {"candidates": ["flaky30"], "fallbacks": ["backup"]},
            "engine-then-upstream": {"candidates": ["tiny"], "fallbacks": ["upstream"]},
            "claude-then-echo": {"candidates": ["claude"], "fallbacks": ["echo"]},
            "void": {"candidates": ["blackhole"]},
            "cached": {"candidates": ["echo"]},
            "cached-briefly": {"candidates": ["echo"]},
            **{route: {"candidates": [backend]} for route, backend in GUARDED_ROUTES.items()},
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
        "experiments": {
            "ab": {
                "route": "ab-route",
                "sticky_by": "user",
                "arms": {
                    "fast": {"backend": "fast-dear", "weight": 0.5},
                    "cheap": {"backend": "slow-cheap", "weight": 0.5},
                },
                "shadow": "backup",
            }
        },
        "cache": {
            "routes": {
                "cached": {"mode": "exact"},
                "cached-briefly": {"mode": "exact", "scope": "shared", "ttl_s": 2},
            }
        },
        "guardrails": guardrails_config(capture_url),
        "ledger": {"path": str((logs or Path("var")) / "ledger.sqlite")},
        "request_log": {"path": str((logs or Path("var")) / "requests.jsonl"), "bodies": True},
    }


VLLM_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "ms": {
            "format": "%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s",
            "datefmt": "%m-%d %H:%M:%S",
        }
    },
    "handlers": {
        "out": {"class": "logging.StreamHandler", "formatter": "ms", "stream": "ext://sys.stdout"}
    },
    "loggers": {"vllm": {"handlers": ["out"], "level": "INFO", "propagate": False}},
}


def start_upstream(port: int, key: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(TINY_MODEL), "--served-model-name", "tiny-upstream",
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "1024", "--enable-log-requests",
        # Its prompt cache and the `cached_tokens` it reports (priced by `upstream-priced`).
        "--enable-prefix-caching", "--enable-prompt-tokens-details",
    ]  # fmt: skip
    # The key goes by environment, not argv: vLLM logs its arguments. Request logging, with
    # millisecond time stamps, makes the server log each abort for the cancellation test.
    logging_config = log.with_suffix(".logging.json")
    logging_config.write_text(json.dumps(VLLM_LOGGING))
    env = {
        **os.environ,
        **ENGINE_ENV,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_API_KEY": key,
        "VLLM_LOGGING_CONFIG_PATH": str(logging_config),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def start_script(
    script: Path, port: int, log: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(script), "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )


def stub_args(spec: dict[str, float]) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in spec.items()
            if key in ("ttft_ms", "tpot_ms", "fail_rate")]  # fmt: skip


class Blackhole:
    """Accepts TCP connections and never answers: an upstream that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        for conn in [*self.held, self.server]:
            conn.close()


def warmed(root: str) -> bool:
    """The gateway answers /health in JSON, and no longer says `starting`."""
    response = httpx.get(f"{root}/health")
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False  # Serve's own plain-text answer while the app deploys
    return bool(response.json().get("status") != "starting")


def keyed_database(server: PostgresServer) -> str:
    """The URL of a schema of its own on the session's server (a URL with the password: it
    is a secret the logs are checked for)."""
    with psycopg.connect(server.url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {KEYED_SCHEMA} CASCADE")
        db.execute(f"CREATE SCHEMA {KEYED_SCHEMA}")
    return f"{server.url}?options=-csearch_path%3D{KEYED_SCHEMA}"


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Stack]:
    import ray
    from ray import serve

    from gateway.app import build_app

    logs = tmp_path_factory.mktemp("logs")
    upstream_port, gateway_port, metrics_port = free_port(), free_port(), free_port()
    upstream_key = "sk-test-" + secrets.token_hex(12)
    anthropic_key = "sk-ant-test-" + secrets.token_hex(12)
    wrong_key = "sk-wrong-" + secrets.token_hex(12)
    master_key = "sk-master-" + secrets.token_hex(16)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    upstream = start_upstream(upstream_port, upstream_key, logs / "upstream.log")
    processes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    for name, spec in {**TIMED_UPSTREAMS, **CHAOS_UPSTREAMS}.items():
        port = free_port()
        process = start_script(STUB, port, logs / f"{name}.log", *stub_args(spec))
        processes[name] = (f"http://127.0.0.1:{port}", process)
    anthropic_port = free_port()
    anthropic_url = f"http://127.0.0.1:{anthropic_port}"
    processes["anthropic"] = (
        anthropic_url,
        start_script(
            ANTHROPIC_STANDIN, anthropic_port, logs / "anthropic.log", STANDIN_KEY=anthropic_key
        ),
    )
    capture_port = free_port()
    capture_url = f"http://127.0.0.1:{capture_port}"
    processes["capture"] = (capture_url, start_script(CAPTURE, capture_port, logs / "capture.log"))
    blackhole = Blackhole()

    kill_orphaned_haproxy()
    os.environ.update(cluster_env())
    os.environ[UPSTREAM_KEY_ENV] = upstream_key
    os.environ[ANTHROPIC_KEY_ENV] = anthropic_key
    os.environ[WRONG_KEY_ENV] = wrong_key
    os.environ[MASTER_KEY_ENV] = master_key  # before ray.init: replicas inherit it
    os.environ[DATABASE_URL_ENV] = keyed_database(postgres_server)
    os.environ.pop(MISSING_KEY_ENV, None)
    urls = {name: f"{url}/v1" for name, (url, _) in processes.items()}
    config = gateway_config(
        upstream_url,
        urls,
        anthropic_url,
        urls,
        f"http://127.0.0.1:{blackhole.port}/v1",
        logs,
        capture_url,
    )
    started = time.monotonic()
    try:
        ray.init(
            address="local",
            num_cpus=8,
            _metrics_export_port=metrics_port,
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
        for name, (url, process) in processes.items():
            probe = {"anthropic": f"{url}/_received", "capture": f"{url}/_capture"}.get(
                name, f"{url}/_stats"
            )
            wait_until(
                lambda probe=probe: httpx.get(probe).status_code == 200,
                30,
                name,
                process,
                logs / f"{name}.log",
            )
        root = f"http://127.0.0.1:{gateway_port}"
        wait_until(lambda: warmed(root), 600, "gateway warm-up (GET /health says starting)")
        print(f"\nstack ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield Stack(
            f"{root}/v1",
            root,
            upstream_url,
            upstream_key,
            config,
            anthropic_url,
            processes,
            [upstream_key, anthropic_key, wrong_key, master_key, postgres_server.password],
            logs,
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            kill_orphaned_haproxy()
            blackhole.close()
            for _, process in (("upstream", upstream), *processes.values()):
                stop_process(process)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that break the shared stack for good (kill replicas, read all logs) run last."""
    items.sort(key=lambda item: item.get_closest_marker("destructive") is not None)


@pytest.fixture(scope="session")
def keyed(stack: Stack) -> Iterator[Any]:
    """The keyed application (tests/integration/keyed.py), deployed once for the modules
    that use it."""
    from tests.integration.keyed import Keyed

    app = Keyed(stack, stack.logs)
    app.deploy()
    yield app
    app.delete()
