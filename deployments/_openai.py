"""Proxy to OpenAI or any OpenAI-compatible HTTP API, over pooled connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from deployments._base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Endpoint,
    Health,
    parse_retry_after,
    provider_error,
)
from deployments._config import OpenAIBackendConfig


def _upstream_error(name: str, response: httpx.Response, content: bytes) -> BackendError:
    error: dict[str, Any] = {}
    try:
        parsed = orjson.loads(content)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    return provider_error(
        name,
        response.status_code,
        message=str(error["message"]) if error.get("message") else None,
        param=error["param"] if isinstance(error.get("param"), str) else None,
        code=error["code"] if isinstance(error.get("code"), str) else None,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
    )


class OpenAICompatibleBackend(Backend):
    """Forwards requests with the configured model id and key; streams SSE bytes through."""

    def __init__(self, name: str, config: OpenAIBackendConfig) -> None:
        self.name = name
        self.config = config
        key, self._unavailable_reason = config.api_key()
        headers = {"content-type": "application/json", **config.headers}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
        )

    def _request(self, endpoint: Endpoint, body: dict[str, Any]) -> httpx.Request:
        if self._unavailable_reason:
            raise BackendUnavailable(
                f"backend {self.name!r} is unavailable: {self._unavailable_reason}"
            )
        payload = orjson.dumps({**body, "model": self.config.model})
        return self._client.build_request("POST", endpoint, content=payload)

    async def _send(self, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            return await self._client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise BackendError(
                f"backend {self.name!r} timed out ({type(exc).__name__})",
                status=504,
                code="upstream_timeout",
            ) from None
        except httpx.TransportError as exc:
            raise BackendError(
                f"backend {self.name!r} is unreachable ({type(exc).__name__})",
                status=502,
                code="upstream_unreachable",
            ) from None

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(self._request(endpoint, body), stream=False)
        if response.status_code != 200:
            raise _upstream_error(self.name, response, response.content)
        try:
            result: dict[str, Any] = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise BackendError(f"backend {self.name!r} returned invalid JSON") from None
        return result

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        response = await self._send(self._request(endpoint, {**body, "stream": True}), stream=True)
        try:
            if response.status_code != 200:
                content = await response.aread()
                raise _upstream_error(self.name, response, content)
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise BackendError(
                f"backend {self.name!r} broke off the stream ({type(exc).__name__})",
                code="upstream_stream_broken",
            ) from None
        finally:
            # Closing the response drops the upstream connection, which cancels the work there.
            await response.aclose()

    async def health(self) -> Health:
        if self._unavailable_reason:
            return Health(available=False, reason=self._unavailable_reason)
        return Health(available=True)

    async def close(self) -> None:
        await self._client.aclose()
