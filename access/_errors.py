"""The one exception of `access`: a refusal with the HTTP status and OpenAI error code it
should be answered with. Callers map it; nothing here knows HTTP."""

from __future__ import annotations

from typing import Any


class AccessError(Exception):
    """401 unknown key, 403 not allowed, 429 over a limit or budget, 4xx admin mistakes,
    503 state unreachable. Built as every error of the project is: the message, then the
    rest by name (`deployments.BackendError`, `gateway.errors.OpenAIError`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.retry_after_s = retry_after_s
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccessError:
        return cls(
            data["message"],
            status=data["status"],
            code=data["code"],
            type=data.get("type") or "invalid_request_error",
            param=data.get("param"),
            retry_after_s=data.get("retry_after_s"),
        )
