"""In-process backends: the fake's shapes, error pickling, and upstream status mapping."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import yaml

from deployments import (
    BackendError,
    BackendUnavailable,
    FakeBackend,
    FakeBackendConfig,
    Recovery,
)
from deployments._openai import _upstream_error
from deployments._remote import as_backend_error
from tests.helpers import ROOT

CHAT = {"model": "x", "messages": [{"role": "user", "content": "one two three four"}]}


def fake(**kwargs: object) -> FakeBackend:
    return FakeBackend(FakeBackendConfig(kind="fake", model="fake-1", **kwargs))  # type: ignore[arg-type]


async def test_fake_chat_echoes_with_usage() -> None:
    result = await fake().chat(CHAT)
    assert result["object"] == "chat.completion"
    assert result["model"] == "fake-1"
    assert result["choices"][0]["message"]["content"] == "one two three four"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}


async def test_fake_respects_max_tokens() -> None:
    result = await fake(reply="a b c d e").chat({**CHAT, "max_tokens": 2})
    assert result["choices"][0]["message"]["content"] == "a b"
    assert result["choices"][0]["finish_reason"] == "length"


async def test_fake_stream_is_sse_with_usage_and_done() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = [chunk async for chunk in fake().stream("chat/completions", body)]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    payloads = [orjson.loads(e[6:]) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert text == "one two three four"
    assert payloads[-1]["usage"]["completion_tokens"] == 4
    assert payloads[-1]["choices"] == []


async def test_fake_completions_endpoint() -> None:
    result = await fake().completions({"model": "x", "prompt": "hello world"})
    assert result["object"] == "text_completion"
    assert result["choices"][0]["text"] == "hello world"


async def test_fake_failure_is_backend_error() -> None:
    with pytest.raises(BackendError) as caught:
        await fake(fail_status=503).chat(CHAT)
    assert caught.value.status == 503 and caught.value.retryable
    with pytest.raises(BackendError) as client_error:
        await fake(fail_status=400).chat(CHAT)
    assert not client_error.value.retryable


def test_backend_errors_survive_pickling() -> None:
    error = BackendUnavailable("gone", code="x", recovery=Recovery.NONE)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BackendUnavailable
    assert (copy.message, copy.status, copy.code, copy.recovery) == ("gone", 503, "x", "none")


def test_remote_errors_unwrap_to_backend_error() -> None:
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    inner = BackendError("upstream said no", status=400, recovery=Recovery.NONE)

    class Wrapped(Exception):
        cause = inner

    assert as_backend_error("b", Wrapped()) is inner
    full = BackPressureError(num_queued_requests=3, max_queued_requests=2)
    overloaded = as_backend_error("b", full)
    assert (overloaded.status, overloaded.recovery) == (429, Recovery.RETRY)
    lost = as_backend_error("b", ActorDiedError())
    assert lost.code == "backend_replica_lost" and lost.recovery is Recovery.RETRY
    # Classified by type, never by wording: a message naming a Ray error is just a failure.
    mentioned = as_backend_error("b", RuntimeError("BackPressureError: queue full"))
    assert (mentioned.status, mentioned.code) == (502, "backend_failed")


def response(status: int, body: object) -> tuple[int, dict[str, str], bytes]:
    return status, {}, orjson.dumps(body)


def test_upstream_400_passes_through() -> None:
    error = {
        "error": {
            "message": "bad max_tokens",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": None,
        }
    }
    mapped = _upstream_error("b", *response(400, error))
    assert (mapped.status, mapped.param, mapped.retryable) == (400, "max_tokens", False)
    assert mapped.message == "bad max_tokens"


def test_upstream_auth_failure_hides_provider_text() -> None:
    mapped = _upstream_error("b", *response(401, {"error": {"message": "Incorrect key sk-abc"}}))
    assert mapped.status == 502 and "sk-abc" not in mapped.message
    assert isinstance(mapped, BackendUnavailable)


@pytest.mark.parametrize(("status", "expected"), [(429, 429), (500, 502), (503, 502), (529, 502)])
def test_upstream_retryable_statuses(status: int, expected: int) -> None:
    mapped = _upstream_error("b", *response(status, {}))
    assert mapped.status == expected and mapped.retryable


@pytest.mark.parametrize("retry_after", ["7", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_upstream_retry_after_is_kept(retry_after: str) -> None:
    mapped = _upstream_error("b", 429, {"retry-after": retry_after}, b"{}")
    assert mapped.retry_after_s is not None and mapped.retry_after_s >= 7
    restored = pickle.loads(pickle.dumps(mapped))  # it crosses Ray handles
    assert restored.retry_after_s == mapped.retry_after_s and restored.status == 429


async def test_coalesce_joins_bursts_and_keeps_order() -> None:
    import asyncio

    from deployments.serving import coalesce

    async def source() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b", b"c"):
            yield chunk  # a burst: no await between them
        await asyncio.sleep(0.05)
        yield b"d"  # arrives later: must not wait for anything else

    out = [chunk async for chunk in coalesce(source())]
    assert b"".join(out) == b"abcd"
    assert out[-1] == b"d" and len(out) == 2


async def test_coalesce_raises_upstream_errors_after_data() -> None:
    from deployments.serving import coalesce

    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        raise BackendError("broke", status=502)

    seen = []
    with pytest.raises(BackendError, match="broke"):
        async for chunk in coalesce(source()):
            seen.append(chunk)
    assert seen == [b"a"]


@pytest.mark.parametrize(
    ("accelerator", "engine_kwargs", "flags", "parameters", "expected"),
    [
        ("cpu", {}, {"avx2", "avx512f", "avx512_bf16"}, 7_000_000_000, "bfloat16"),
        ("cpu", {"dtype": "auto"}, {"avx2", "amx_bf16"}, 1_500_000_000, "bfloat16"),
        # Native bfloat16, but a small model (or one of unknown size): float32, correct first.
        ("cpu", {}, {"avx2", "avx512_bf16", "amx_bf16"}, 135_000_000, "float32"),
        ("cpu", {}, {"avx2", "amx_bf16"}, None, "float32"),
        ("cpu", {}, {"avx2", "fma"}, 7_000_000_000, "float32"),  # emulated bf16: ~3x slower
        ("cpu", {}, {"avx2", "avx512f"}, 7_000_000_000, "float32"),  # no AVX-512 BF16
        ("cpu", {"dtype": "bfloat16"}, {"avx2"}, None, "bfloat16"),  # what the config says
        ("gpu", {}, set(), None, "auto"),  # vLLM's own choice on GPUs
    ],
)
def test_engine_dtype_on_cpu_is_bfloat16_only_where_native_and_the_model_is_large(
    accelerator: str,
    engine_kwargs: dict[str, str],
    flags: set[str],
    parameters: int | None,
    expected: str,
) -> None:
    from deployments import VLLMBackendConfig
    from deployments._vllm import cpu_flags, engine_dtype

    config = VLLMBackendConfig.model_validate(
        {"kind": "vllm", "model": "m", "source": "x", "accelerator": accelerator,
         "engine_kwargs": engine_kwargs}
    )  # fmt: skip
    dtype, why = engine_dtype(config, flags, parameters)
    assert dtype == expected and why
    assert cpu_flags("processor : 0\nflags\t\t: fpu avx2 avx512_bf16\n") == {
        "fpu", "avx2", "avx512_bf16",
    }  # fmt: skip


def _header_only_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file's header (what `model_parameters` reads), without the weights."""
    import json

    header = {name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]}
              for name, shape in shapes.items()}  # fmt: skip
    data = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(len(data).to_bytes(8, "little") + data)


def test_the_embedded_default_computes_in_float32_on_a_cpu_with_native_bfloat16(
    tmp_path: Path,
) -> None:
    """Issue 19: on an AMX CPU `auto` chose bfloat16 and SmolLM2-135M answered garbage. The
    choice is made from the model folder's size, whatever CPU this test runs on."""
    from deployments._vllm import engine_dtype, model_parameters
    from gateway.config import GatewayConfig

    serve_config = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    smollm2 = GatewayConfig.load(serve_config["applications"][0]["args"]).backends["smollm2"]
    # SmolLM2-135M's shapes: 30 layers of 576 wide, a 49152-token tied embedding.
    layer = {"q": [576, 576], "k": [192, 576], "v": [192, 576], "o": [576, 576],
             "gate": [1536, 576], "up": [1536, 576], "down": [576, 1536]}  # fmt: skip
    shapes = {f"model.layers.{i}.{n}.weight": s for i in range(30) for n, s in layer.items()}
    _header_only_safetensors(tmp_path / "model.safetensors", shapes | {"embed": [49152, 576]})
    parameters = model_parameters(str(tmp_path))
    assert parameters is not None and 130e6 < parameters < 140e6
    amx = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    dtype, why = engine_dtype(smollm2, amx, parameters)
    assert dtype == "float32" and "small model" in why
    assert model_parameters(str(tmp_path / "missing")) is None  # a hub id: size unknown


@pytest.mark.parametrize(
    ("accelerator", "extra", "expected"),
    [
        ("cpu", {}, "cores"),  # auto: the machine's cores, as vLLM's own server uses
        ("cpu", {"cpu_threads": 3}, 3),
        ("cpu", {"cpu_threads": 3, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "5"}}}, 5),
        ("gpu", {}, None),
    ],
)
def test_cpu_engine_threads_reach_the_engine_environment(
    accelerator: str, extra: dict[str, object], expected: object
) -> None:
    """Ray would set OMP_NUM_THREADS to the replica's num_cpus (often 1) for the engine."""
    import os

    from deployments import VLLMBackendConfig
    from deployments._vllm import _runtime_env, engine_threads

    config = VLLMBackendConfig.model_validate(
        {"kind": "vllm", "model": "m", "source": "x", "accelerator": accelerator, **extra}
    )
    threads, why = engine_threads(config)
    if expected == "cores":
        expected = len(os.sched_getaffinity(0))
    assert threads == expected and why
    env_vars = (_runtime_env(config, threads) or {}).get("env_vars", {})
    assert env_vars.get("OMP_NUM_THREADS") == (None if expected is None else str(expected))


def test_cpu_threads_below_one_is_a_config_error() -> None:
    from pydantic import ValidationError

    from deployments import VLLMBackendConfig

    with pytest.raises(ValidationError):
        VLLMBackendConfig.model_validate(
            {"kind": "vllm", "model": "m", "source": "x", "cpu_threads": 0}
        )


async def test_bounded_backend_runs_so_many_queues_so_many_then_429() -> None:
    import asyncio

    from deployments import BoundedBackend

    bounded = BoundedBackend("slow", fake(latency_ms=200), max_ongoing=2, max_queued=1)
    calls = [asyncio.create_task(bounded.chat(CHAT)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert bounded.load()["ongoing"] == 2 and bounded.load()["waiting"] == 1
    with pytest.raises(BackendError) as caught:
        await bounded.chat(CHAT)
    assert (caught.value.status, caught.value.code) == (429, "backend_overloaded")
    assert caught.value.recovery is Recovery.RETRY  # fallbacks or a later try serve it
    assert all(r["object"] == "chat.completion" for r in await asyncio.gather(*calls))
    assert bounded.load()["ongoing"] == bounded.load()["waiting"] == 0


async def test_bounded_stream_holds_its_slot_until_it_ends() -> None:
    import asyncio

    from deployments import BoundedBackend

    bounded = BoundedBackend("b", fake(token_interval_ms=20), max_ongoing=1, max_queued=0)
    stream = bounded.stream("chat/completions", CHAT)
    await anext(stream)
    with pytest.raises(BackendError):  # the stream holds the only slot; no line allowed
        await bounded.chat(CHAT)
    await stream.aclose()  # a client that went away frees it at once
    assert bounded.load()["ongoing"] == 0
    assert (await asyncio.wait_for(bounded.chat(CHAT), 5))["object"] == "chat.completion"
