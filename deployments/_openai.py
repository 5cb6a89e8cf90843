"""Proxy to OpenAI or any OpenAI-compatible HTTP API, over pooled connections.

The upstream client is aiohttp: a round trip costs about a third of httpx's here (measured
with `bench/floor.py`'s stub upstream), and this call is on every request's path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from deployments._base import (
    UPSTREAM_HEADERS,
    Backend,
    BackendError,
    BackendUnavailable,
    Endpoint,
    Health,
    parse_retry_after,
    provider_error,
)
from deployments._config import OpenAIBackendConfig


def _upstream_error(
    name: str, status: int, headers: Mapping[str, str], content: bytes
) -> BackendError:
    error: dict[str, Any] = {}
    try:
        parsed = orjson.loads(content)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    return provider_error(
        name,
        status,
        message=str(error["message"]) if error.get("message") else None,
        param=error["param"] if isinstance(error.get("param"), str) else None,
        code=error["code"] if isinstance(error.get("code"), str) else None,
        retry_after_s=parse_retry_after(headers.get("retry-after")),
    )


def _transport_error(name: str, exc: BaseException, streaming: bool = False) -> BackendError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return BackendError(
            f"backend {name!r} timed out ({type(exc).__name__})",
            status=504,
            code="upstream_timeout",
        )
    if streaming:
        return BackendError(
            f"backend {name!r} broke off the stream ({type(exc).__name__})",
            code="upstream_stream_broken",
        )
    return BackendError(
        f"backend {name!r} is unreachable ({type(exc).__name__})",
        status=502,
        code="upstream_unreachable",
    )


class OpenAICompatibleBackend(Backend):
    """Forwards requests with the configured model id and key; streams SSE bytes through."""

    def __init__(self, name: str, config: OpenAIBackendConfig) -> None:
        self.name = name
        self.config = config
        key, self._unavailable_reason = config.api_key()
        self._headers = {"content-type": "application/json", **config.headers}
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._base_url = config.base_url.rstrip("/") + "/"
        self._session: aiohttp.ClientSession | None = None  # made on the loop that uses it

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeouts = self.config.timeouts
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0),
                # The gateway bounds first token and total time itself; these catch a dead peer.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeouts.connect_s, sock_read=timeouts.total_s
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # a provider's cookies are not ours to keep
                skip_auto_headers=("user-agent",),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._session

    def _payload(self, body: dict[str, Any]) -> bytes:
        if self._unavailable_reason:
            raise BackendUnavailable(
                f"backend {self.name!r} is unavailable: {self._unavailable_reason}"
            )
        return orjson.dumps({**body, "model": self.config.model})

    async def _send(self, endpoint: Endpoint, payload: bytes) -> aiohttp.ClientResponse:
        try:
            extra = UPSTREAM_HEADERS.get()  # a trace's `traceparent`
            return await self._client().post(
                self._base_url + endpoint, data=payload, headers=extra or None
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport_error(self.name, exc) from None

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(endpoint, self._payload(body))
        try:
            content = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            response.close()
            raise _transport_error(self.name, exc) from None
        except BaseException:  # cancelled: the client went away; drop the upstream call
            response.close()
            raise
        response.release()
        if response.status != 200:
            raise _upstream_error(self.name, response.status, response.headers, content)
        try:
            result: dict[str, Any] = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise BackendError(f"backend {self.name!r} returned invalid JSON") from None
        return result

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        response = await self._send(endpoint, self._payload({**body, "stream": True}))
        try:
            if response.status != 200:
                raise _upstream_error(
                    self.name, response.status, response.headers, await response.read()
                )
            async for chunk in response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport_error(self.name, exc, streaming=True) from None
        finally:
            # Closing (not releasing) drops the upstream connection, which cancels the work
            # there when the client went away; a finished stream's connection is reused.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def health(self) -> Health:
        if self._unavailable_reason:
            return Health(available=False, reason=self._unavailable_reason)
        return Health(available=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
