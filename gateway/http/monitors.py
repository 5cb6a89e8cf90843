"""The drift monitors' face: `GET /v1/gateway/monitors` (each check's targets: state, latest
run, history) and `POST /v1/gateway/monitors/{name}/runs` (run a check now, on this replica).
Admins only, where keys are on."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.core.monitoring import Monitors
from gateway.errors import OpenAIError
from gateway.http.context import Http, json_response


def _monitors(http: Http, name: str | None = None) -> Monitors:
    monitors = http.gateway.monitors
    if monitors is None:
        raise OpenAIError(
            "No drift monitor is configured; add `monitors.checks` to the gateway's config.",
            status=404,
            code="monitors_disabled",
        )
    if name is not None and name not in monitors.config.checks:
        known = ", ".join(sorted(monitors.config.checks))
        raise OpenAIError(f"unknown monitor {name!r} (known: {known})", status=404,
                          param="name", code="not_found")  # fmt: skip
    return monitors


def add_routes(app: FastAPI, http: Http) -> None:
    @app.get("/v1/gateway/monitors")
    async def describe(request: Request) -> Response:
        await http.need_key(request, admin=True)
        monitors = _monitors(http)
        described = await asyncio.to_thread(monitors.describe)
        return json_response({"object": "gateway.monitors", "monitors": described})

    @app.post("/v1/gateway/monitors/{name}/runs")
    async def run(name: str, request: Request) -> Response:
        await http.need_key(request, admin=True)
        runs = await _monitors(http, name).run(name)
        return json_response({"object": "list", "data": [r.as_dict() for r in runs]})
