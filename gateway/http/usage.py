"""The ledger's two HTTP faces: `POST /v1/feedback` (an outcome recorded against a request id)
and `GET /v1/gateway/usage` (totals)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from gateway.errors import OpenAIError, from_validation_error, json_object
from gateway.http.context import Http
from llmops import GROUPS, LedgerReader, RecordsUnavailable, parse_since


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


def _unavailable(exc: RecordsUnavailable) -> Response:
    message = f"The cluster's ledger cannot be read now: {exc}. Retry shortly."
    return OpenAIError(message, status=503, code="ledger_unavailable").response()


async def record_feedback(
    raw: bytes, ledger: LedgerReader | None, key_id: str | None = None
) -> Response:
    """`key_id`: the caller's key, which may score only its own requests (None: any)."""
    if ledger is None:
        return OpenAIError(
            "The cost ledger is disabled.", status=404, code="ledger_disabled"
        ).response()
    try:
        data = json_object(raw)
    except OpenAIError as exc:
        return exc.response()
    try:
        feedback = FeedbackRequest.model_validate(data)
    except ValidationError as exc:
        return from_validation_error(exc, data).response()
    try:
        found = await asyncio.to_thread(
            ledger.add_feedback,
            feedback.request_id,
            float(feedback.score),
            feedback.label,
            feedback.comment,
            key_id,
        )
    except RecordsUnavailable as exc:
        return _unavailable(exc)
    if not found:
        return OpenAIError(
            f"No request with id {feedback.request_id!r} of yours in the ledger.",
            status=404,
            param="request_id",
            code="request_not_found",
        ).response()
    body = {"object": "feedback", "request_id": feedback.request_id, "recorded": True}
    return Response(orjson.dumps(body), media_type="application/json")


async def usage_totals(query: Mapping[str, str], ledger: LedgerReader | None) -> Response:
    group_by = query.get("group_by", "backend")
    if group_by not in GROUPS:
        return OpenAIError(
            f"group_by must be one of {', '.join(GROUPS)}",
            status=400,
            param="group_by",
            code="invalid_value",
        ).response()
    try:
        since = parse_since(query.get("since"))
    except ValueError as exc:
        return OpenAIError(str(exc), status=400, param="since", code="invalid_value").response()
    if ledger is None:
        return OpenAIError(
            "The cost ledger is disabled.", status=404, code="ledger_disabled"
        ).response()

    def totals() -> list[dict[str, Any]]:
        ledger.flush(1.0)  # include requests that just finished
        return ledger.totals(group_by, since)

    try:
        data = await asyncio.to_thread(totals)
    except RecordsUnavailable as exc:
        return _unavailable(exc)
    body = {"object": "list", "group_by": group_by, "since": since, "data": data}
    return Response(orjson.dumps(body), media_type="application/json")


def add_routes(app: FastAPI, http: Http) -> None:
    @app.get("/v1/gateway/usage")
    async def usage(request: Request) -> Response:
        """Requests, tokens and actual cost from the ledger, grouped, since a time."""
        await http.need_key(request, admin=True)
        return await usage_totals(request.query_params, http.ledger)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        """Record an outcome against a request id (`x-request-id` of its response)."""
        owner = None
        if http.keys is not None:  # metered; a key scores its own requests only (admins: any)
            caller = await http.keys.meter(request.headers)
            owner = None if caller.admin or caller.key is None else caller.key.id
        return await record_feedback(await http.body(request), http.ledger, owner)
