"""What the stores refuse: an HTTP status and OpenAI's error fields, mapped by the gateway."""

from __future__ import annotations


class RetrievalError(Exception):
    def __init__(
        self, message: str, status: int = 400, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


def not_found(kind: str, object_id: str, param: str | None = None) -> RetrievalError:
    """Also what another owner's object gets: its existence is not told."""
    return RetrievalError(f"No {kind} found with id '{object_id}'.", 404, "not_found", param)


def invalid(message: str, param: str | None = None) -> RetrievalError:
    return RetrievalError(message, 400, "invalid_request_error", param)
