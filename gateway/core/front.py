"""The seam between the pipeline and the client APIs in front of it (`gateway.fronts`).

The pipeline speaks chat completions. A front translates its client's API to chat and back;
where some backends speak that API themselves (`speaks`), the front also hands the pipeline
the client's own body with a `PassThrough` that says how to call, account and relay it. The
pipeline names no client API: it asks these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from deployments import BackendError, Endpoint


class Wire(Protocol):
    """How to read a backend's SSE stream in one API while relaying it."""

    def usage(self, ready: bytes) -> tuple[dict[str, object] | None, bytes]:
        """The usage seen in `ready` (whole events) in chat terms, and the events to pass on."""
        ...

    def tokens(self, ready: bytes) -> int:
        """Output tokens in `ready`, counted by events, for when no usage arrives."""
        ...

    def error(self, exc: BackendError) -> bytes:
        """The event that ends a broken stream, in this API's error shape."""
        ...

    def ended(self, ready: bytes) -> bool:
        """Whether `ready` holds the stream's last event: once it is sent the client has the
        whole answer, and a client that then hangs up has not left early."""
        ...


class PassThrough(Protocol):
    """A client API some backends serve as the client sent it."""

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint backends list in `speaks` and are called with."""
        ...

    def wire(self) -> Wire:
        """A reader for one stream in this API."""
        ...

    def usage_in_chat_terms(self, usage: dict[str, Any]) -> dict[str, Any]:
        """An answer's usage object, as the ledger counts it."""
        ...

    def with_output_limit(self, body: dict[str, Any], limit: int) -> dict[str, Any]:
        """`body` limited to `limit` output tokens where it sets no limit of its own (the
        output cap a budgeted caller's reservation was made for)."""
        ...

    def with_context(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        """`body` with `text` added to its system instructions (retrieved passages)."""
        ...


@dataclass(frozen=True, slots=True)
class Native:
    """The client's own body, in an API some backends speak natively."""

    api: PassThrough
    body: dict[str, Any]
