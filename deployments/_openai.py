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
    client_error,
    parse_retry_after,
)
from deployments._config import OpenAIBackendConfig

# Upstream statuses that describe the client's request: passed through to the client as is.
_CLIENT_ERRORS = frozenset({400, 413, 422})


def _upstream_error(name: str, response: httpx.Response, content: bytes) -> BackendError:
    status = response.status_code
    if status in _CLIENT_ERRORS:
        status = 400 if status == 422 else status
        try:
            error = orjson.loads(content)["error"]
            message = str(error.get("message") or "invalid request")
            return client_error(
                message, status=status, param=error.get("param"), code=error.get("code")
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return client_error(
                f"backend {name!r} rejected the request (HTTP {status})", status=status
            )
    if status in (401, 403):
        # Never echo the provider's text: it may quote the key or account details.
        return BackendUnavailable(
            f"backend {name!r} is misconfigured: the provider rejected its credentials",
            status=502,
            code="backend_auth_failed",
        )
    if status == 404:
        return BackendError(
            f"backend {name!r} is misconfigured: the provider does not know its model or URL",
            status=502,
            code="backend_not_found",
        )
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 429:
        return BackendError(
            f"backend {name!r} is rate limited by its provider",
            status=429,
            type="rate_limit_error",
            code="upstream_rate_limited",
            retry_after_s=retry_after,
        )
    return BackendError(
        f"backend {name!r} failed upstream (HTTP {status})",
        status=502,
        retry_after_s=retry_after,
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
