"""`POST /v1/feedback`: an outcome (score, label, comment) recorded against a request id."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from gateway.errors import OpenAIError, from_validation_error
from gateway.ledger import Ledger


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: Annotated[str, Field(min_length=1, max_length=200)]
    score: float | int
    label: Annotated[str, Field(max_length=200)] | None = None
    comment: Annotated[str, Field(max_length=10_000)] | None = None

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if isinstance(value, bool) or not math.isfinite(value):
            raise ValueError("score must be a finite number")
        return float(value)


async def record_feedback(raw: bytes, ledger: Ledger | None) -> Response:
    if ledger is None:
        return OpenAIError(404, "The cost ledger is disabled.", code="ledger_disabled").response()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return OpenAIError(400, "The body must be valid JSON.", code="invalid_json").response()
    try:
        feedback = FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        return from_validation_error(exc, data).response()
    found = await asyncio.to_thread(
        ledger.add_feedback,
        feedback.request_id,
        float(feedback.score),
        feedback.label,
        feedback.comment,
    )
    if not found:
        return OpenAIError(
            404,
            f"No request with id {feedback.request_id!r} in the ledger.",
            param="request_id",
            code="request_not_found",
        ).response()
    body = {"object": "feedback", "request_id": feedback.request_id, "recorded": True}
    return Response(orjson.dumps(body), media_type="application/json")
