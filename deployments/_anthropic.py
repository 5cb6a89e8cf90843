"""Anthropic's Messages API behind the OpenAI chat completions interface, via the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from deployments._anthropic_translate import (
    StreamTranslator,
    native_params,
    to_chat_completion,
    to_messages_params,
)
from deployments._base import (
    UPSTREAM_HEADERS,
    Backend,
    BackendError,
    BackendUnavailable,
    Endpoint,
    Health,
    Recovery,
    parse_retry_after,
    provider_error,
)
from deployments._config import AnthropicBackendConfig


def _error_from_sdk(name: str, exc: Exception) -> BackendError:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return BackendError(f"backend {name!r} timed out", status=504, code="upstream_timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return BackendError(
            f"backend {name!r} is unreachable", status=502, code="upstream_unreachable"
        )
    if not isinstance(exc, anthropic.APIStatusError):
        return BackendError(f"backend {name!r} failed ({type(exc).__name__})")
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else None
    return provider_error(
        name,
        exc.status_code,
        message=str(error["message"]) if error and error.get("message") else None,
        retry_after_s=parse_retry_after(exc.response.headers.get("retry-after")),
    )


class AnthropicBackend(Backend):
    """Translates each chat completion into a Messages call and the answer back; a Messages
    request (endpoint "messages") passes through as the client sent it, answer included."""

    def __init__(self, name: str, config: AnthropicBackendConfig) -> None:
        import anthropic

        self.name = name
        self.config = config
        key, self._unavailable_reason = config.api_key()
        if key is None and not self._unavailable_reason:
            self._unavailable_reason = "no api_key_env or api_key_file configured"
        self._client = anthropic.AsyncAnthropic(
            api_key=key or "unset",
            base_url=config.base_url,
            default_headers=dict(config.headers),
            max_retries=0,  # the gateway retries, with its own backoff and fallbacks
            timeout=anthropic.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
        )

    def _params(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        if self._unavailable_reason:
            raise BackendUnavailable(
                f"backend {self.name!r} is unavailable: {self._unavailable_reason}"
            )
        if endpoint == "messages":
            return native_params(body, self.config.model)
        if endpoint != "chat/completions":
            raise BackendError(
                f"backend {self.name!r} serves chat completions only",
                status=400,
                type="invalid_request_error",
                code="unsupported_endpoint",
                recovery=Recovery.FALLBACK,  # another backend of the route may serve it
            )
        params = to_messages_params(body, self.config.model, self.config.default_max_tokens)
        if extra := UPSTREAM_HEADERS.get():  # a trace's `traceparent`
            params["extra_headers"] = dict(extra)
        return params

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        params = self._params(endpoint, body)
        if endpoint == "messages":
            return await self._pass_through(params)
        try:
            message = await self._client.messages.create(**params)
        except Exception as exc:
            raise _error_from_sdk(self.name, exc) from None
        return to_chat_completion(message, self.config.model)

    async def _pass_through(self, params: dict[str, Any]) -> dict[str, Any]:
        """The upstream's Message as it sent it (the SDK's parse skipped)."""
        try:
            raw = await self._client.messages.with_raw_response.create(**params)
        except Exception as exc:
            raise _error_from_sdk(self.name, exc) from None
        result: dict[str, Any] = orjson.loads(raw.http_response.content)
        return result

    async def _stream_through(self, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """The upstream's event stream, bytes as they come."""
        try:
            async with self._client.messages.with_streaming_response.create(
                **params, stream=True
            ) as response:
                async for chunk in response.http_response.aiter_bytes():
                    yield chunk
        except Exception as exc:
            raise _error_from_sdk(self.name, exc) from None

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        params = self._params(endpoint, body)
        if endpoint == "messages":
            async for chunk in self._stream_through(params):
                yield chunk
            return
        options = body.get("stream_options") or {}
        translator = StreamTranslator(self.config.model, bool(options.get("include_usage")))
        try:
            events = await self._client.messages.create(**params, stream=True)
        except Exception as exc:
            raise _error_from_sdk(self.name, exc) from None
        try:
            async for event in events:
                data = translator.translate(event)
                if data:
                    yield data
        except Exception as exc:
            raise _error_from_sdk(self.name, exc) from None
        finally:
            await events.close()  # drops the upstream connection when the client went away

    async def health(self) -> Health:
        if self._unavailable_reason:
            return Health(available=False, reason=self._unavailable_reason)
        return Health(available=True)

    async def close(self) -> None:
        await self._client.close()
