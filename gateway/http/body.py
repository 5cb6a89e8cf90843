"""The one reader of request bodies: bounded by `ingress.max_body_bytes`, gzip or deflate
inflated within that bound (no decompression bombs)."""

from __future__ import annotations

import zlib

from fastapi import Request

from gateway.errors import OpenAIError


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(f"Request body exceeds {limit} bytes.", status=413, code="body_too_large")


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated up to `limit` bytes (no decompression bombs)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OpenAIError(
            f"Unsupported content-encoding {encoding!r}; use gzip, deflate or none.",
            status=415,
            code="unsupported_content_encoding",
        )
    inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise OpenAIError(
            f"The body is not valid {encoding} data.", status=400, code="invalid_content_encoding"
        ) from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return data


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    return decode(b"".join(chunks), encoding, limit)
