"""Warming engines before the gateway reports ready: the first requests after `GET /health`
says `ok` should run at the engine's warm speed, not pay for its first-time work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from deployments import Backend, BackendError, VLLMBackendConfig, WarmupConfig

logger = logging.getLogger("ray.serve")
PROBE_INTERVAL_S = 1.0
# Varied, ordinary words: the engine should see realistic prompt lengths, not one token.
_TEXT = (
    "the gateway routes each request to a model by cost latency and task then records what "
    "it cost and how long it took so that operators can compare models and tune the routes"
)


def warmup_prompt(words: int, index: int) -> str:
    """`words` words, different per request (no prefix cache makes the later ones free)."""
    vocabulary = _TEXT.split(" ")
    chosen = (vocabulary[(index + i) % len(vocabulary)] for i in range(words))
    return " ".join(chosen) + f" {index}"


async def wait_until_up(name: str, backend: Backend, deadline: float) -> bool:
    while time.monotonic() < deadline:
        health = await backend.health()
        if health.available:
            return True
        await asyncio.sleep(PROBE_INTERVAL_S)
    logger.warning("backend %s did not come up for its warm-up", name)
    return False


async def warm_up(name: str, backend: Backend, settings: WarmupConfig) -> float:
    """Batches of concurrent completions, one of each pair streamed; returns seconds spent.
    Failures are logged, never raised: a cold engine still serves."""
    started = time.monotonic()
    deadline = started + settings.timeout_s
    if not await wait_until_up(name, backend, deadline):
        return time.monotonic() - started

    async def one(index: int) -> None:
        body = {
            "messages": [{"role": "user", "content": warmup_prompt(settings.prompt_words, index)}],
            "max_tokens": settings.max_tokens,
            "temperature": 0,
        }
        if index % 2:
            async for _ in backend.stream("chat/completions", {**body, "stream": True}):
                pass
        else:
            await backend.complete("chat/completions", body)

    count = 0  # requests of the batches that finished
    for _ in range(settings.rounds):
        batch = range(count, count + settings.concurrency)
        remaining = max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                await asyncio.gather(*(one(i) for i in batch))
        except (BackendError, TimeoutError) as exc:
            logger.warning("warm-up of %s stopped: %r", name, exc)
            break
        count += settings.concurrency
    spent = time.monotonic() - started
    logger.info("backend %s warmed up with %d requests in %.1f s", name, count, spent)
    return spent


def to_warm(
    configs: Mapping[str, object], backends: Mapping[str, Backend]
) -> dict[str, WarmupConfig]:
    """The engines that want a warm-up and are deployed (not those scaled to zero: a warm-up
    would start a replica, and keep it, for no request)."""
    return {
        name: config.warmup
        for name, config in configs.items()
        if isinstance(config, VLLMBackendConfig)
        and config.warmup.enabled
        and backends[name].deployed
        and not config.scales_to_zero
        and "chat/completions" in config.endpoints  # warm-up requests are chat requests
    }
