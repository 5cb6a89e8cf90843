"""A read-only console for operators (`GET /console`): backends with health, circuits,
replicas and live latency; routes; requests, tokens and cost over time; experiments with
their verdicts; recent errors. Server-rendered HTML and SVG from the package (no script, no
CDN). With keys on, it needs the master key or an admin key: as a bearer token, or signed
in once through its form (an HttpOnly, SameSite=Strict cookie scoped to /console)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from access import AccessError
from gateway.config import GatewayConfig
from gateway.console import _pages
from gateway.keys import KeyGate
from llmops import LedgerReader, build_report

__all__ = ["add_console_routes"]
COOKIE = "gateway_console"
FORM_MAX_BYTES = 4096  # a sign-in form: one key
SESSION_S = 8 * 3600
STYLESHEET = (Path(__file__).parent / "static" / "console.css").read_bytes()
# Nothing but this origin's stylesheet and forms: no script runs on these pages at all.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def add_console_routes(
    app: FastAPI,
    config: GatewayConfig,
    keys: KeyGate | None,
    ledger: LedgerReader | None,
    backends: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> None:
    """`backends` gives what `GET /v1/gateway/backends` lists."""

    async def admitted(request: Request) -> bool:
        if keys is None:
            return True
        headers: Mapping[str, str] = request.headers
        cookie = request.cookies.get(COOKIE)
        if "authorization" not in headers and cookie:
            headers = {"authorization": f"Bearer {cookie}"}
        try:
            await keys.authenticate_admin(headers)
        except AccessError:
            return False
        return True

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def read(call: Callable[[], Any]) -> Any:
        if ledger is None:
            return None
        await asyncio.to_thread(ledger.flush, 1.0)
        return await asyncio.to_thread(call)

    def guarded(
        render: Callable[[Request], Awaitable[str]], title: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not await admitted(request):
                return html(_pages.login_page(prefix(request)), 401)
            return html(_pages.page(title, await render(request), prefix(request)))

        return endpoint

    async def overview(_: Request) -> str:
        since = time.time() - 86400
        totals = await read(lambda: ledger.totals("backend", since)) if ledger else None
        rows = await read(lambda: ledger.rows(since)) if ledger else None
        summary = {
            "requests": sum(t["requests"] for t in totals or []),
            "tokens": sum(t["prompt_tokens"] + t["completion_tokens"] for t in totals or []),
            "cost_usd": round(sum(t["cost_usd"] for t in totals or []), 6),
            "errors": sum(t["errors"] for t in totals or []),
        }
        errors = [r for r in reversed(rows or []) if (r["status"] or 0) >= 400][:20]
        return _pages.overview(await backends(), config.routes, summary, errors)

    async def usage(request: Request) -> str:
        if ledger is None:
            return "<p class=muted>The ledger is disabled (`ledger: {enabled: false}`).</p>"
        by = request.query_params.get("by", "backend")
        period = request.query_params.get("since", "24h")
        by = by if by in _pages.GROUPINGS else "backend"
        period = period if period in _pages.PERIODS else "24h"
        now = time.time()
        since = now - _pages.PERIODS[period][0]
        totals = await read(lambda: ledger.totals(by, since))
        rows = await read(lambda: ledger.rows(since))
        return _pages.usage(by, period, rows, totals, now)

    async def experiments(_: Request) -> str:
        if ledger is None:
            return "<p class=muted>The ledger is disabled (`ledger: {enabled: false}`).</p>"
        reports = [
            await read(functools.partial(build_report, ledger, name)) for name in config.experiments
        ]
        return _pages.experiments(reports)

    app.add_api_route("/console", guarded(overview, "Overview"), methods=["GET"])
    app.add_api_route("/console/usage", guarded(usage, "Usage"), methods=["GET"])
    app.add_api_route("/console/experiments", guarded(experiments, "Experiments"), methods=["GET"])

    @app.get("/console/static/console.css")
    async def stylesheet() -> Response:
        return Response(
            STYLESHEET, media_type="text/css", headers={"cache-control": "max-age=3600"}
        )

    @app.post("/console/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await _bounded_body(request)).decode(errors="replace"))
        key = (form.get("key") or [""])[0].strip()
        if keys is None:
            return RedirectResponse(f"{prefix(request)}/console", 303)
        try:
            await keys.authenticate_admin({"authorization": f"Bearer {key}"})
        except AccessError as exc:
            return html(_pages.login_page(prefix(request), exc.message), 401)
        response = RedirectResponse(f"{prefix(request)}/console", 303)
        response.set_cookie(
            COOKIE,
            key,
            max_age=SESSION_S,
            path=f"{prefix(request)}/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/console/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{prefix(request)}/console", 303)
        response.delete_cookie(COOKIE, path=f"{prefix(request)}/console")
        return response


async def _bounded_body(request: Request) -> bytes:
    """A form body of at most FORM_MAX_BYTES (a larger one is cut off, then refused)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_MAX_BYTES:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)
