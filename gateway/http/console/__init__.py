"""A read-only console for operators (`GET /console`): backends with health, circuits,
replicas and live latency; routes; requests, tokens and cost over time; experiments with
their verdicts; recent errors. Server-rendered HTML and SVG from the package (no script, no
CDN). With keys on, it needs the master key or an admin key: as a bearer token, or signed
in once through its form, which opens a server-side session (`access.SessionClient`): the
cookie holds its random token (HttpOnly, SameSite=Strict, scoped to /console, `Secure`
unless the browser is on this machine), signing out needs the session's CSRF token and ends
it on every replica, and revoking the key ends its sessions."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from access import AccessError
from gateway.config import GatewayConfig
from gateway.core.keys import KeyGate
from gateway.http.browsers import LOOPBACK_HOSTS, host_name
from gateway.http.console import _pages
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


class Console:
    """The console's pages and sign-in, over the ledger and the backends' view."""

    def __init__(
        self,
        config: GatewayConfig,
        keys: KeyGate | None,
        ledger: LedgerReader | None,
        backends: Callable[[], Awaitable[list[dict[str, Any]]]],
        monitors: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config, self.keys, self.ledger, self.backends = config, keys, ledger, backends
        self.describe_monitors = monitors  # blocking: read in a thread

    async def admitted(self, request: Request) -> tuple[bool, str]:
        """Whether an admin asks, and its session's CSRF token (none for a bearer key)."""
        if self.keys is None:
            return True, ""
        if "authorization" in request.headers:
            try:
                await self.keys.authenticate_admin(request.headers)
            except AccessError:
                return False, ""
            return True, ""
        found = await self.keys.sessions.find(request.cookies.get(COOKIE, ""))
        return (found is not None), (found[1] if found else "")

    async def read(self, call: Callable[[], Any]) -> Any:
        if self.ledger is None:
            return None
        await asyncio.to_thread(self.ledger.flush, 1.0)
        return await asyncio.to_thread(call)

    def guarded(
        self, render: Callable[[Request], Awaitable[str]], title: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            ok, csrf = await self.admitted(request)
            if not ok:
                return _html(_pages.login_page(_prefix(request)), 401)
            return _html(_pages.page(title, await render(request), _prefix(request), csrf))

        return endpoint

    async def overview(self, _: Request) -> str:
        since, ledger = time.time() - 86400, self.ledger
        totals = await self.read(lambda: ledger.totals("backend", since)) if ledger else None
        errors = await self.read(lambda: ledger.recent_errors(since, 20)) if ledger else None
        routes = await self.read(lambda: ledger.totals("route", since)) if ledger else None
        cached = [t for t in routes or [] if t["cache_hits"] + t["cache_misses"]]
        summary = {
            "requests": sum(t["requests"] for t in totals or []),
            "tokens": sum(t["prompt_tokens"] + t["completion_tokens"] for t in totals or []),
            "cost_usd": round(sum(t["cost_usd"] for t in totals or []), 6),
            "errors": sum(t["errors"] for t in totals or []),
            "saved_usd": round(sum(t["saved_usd"] for t in totals or []), 6),
            "guarded": sum(t["guardrail_interventions"] for t in totals or []),
        }
        guarded = [t for t in routes or [] if t["guardrail_interventions"]]
        backends = await self.backends()
        return _pages.overview(backends, self.config.routes, summary, errors or [], cached, guarded)

    async def usage(self, request: Request) -> str:
        ledger = self.ledger
        if ledger is None:
            return "<p class=muted>The ledger is disabled (`ledger: {enabled: false}`).</p>"
        by = request.query_params.get("by", "backend")
        period = request.query_params.get("since", "24h")
        by = by if by in _pages.GROUPINGS else "backend"
        period = period if period in _pages.PERIODS else "24h"
        now = time.time()
        span, bucket = _pages.PERIODS[period]
        since = now - span
        totals = await self.read(lambda: ledger.totals(by, since))
        series = await self.read(lambda: ledger.series(by, since, bucket))
        return _pages.usage(by, period, series, totals, now)

    async def experiments(self, _: Request) -> str:
        if self.ledger is None:
            return "<p class=muted>The ledger is disabled (`ledger: {enabled: false}`).</p>"
        reports = [
            await self.read(functools.partial(build_report, self.ledger, name))
            for name in self.config.experiments
        ]
        return _pages.experiments(reports)

    async def monitors(self, _: Request) -> str:
        describe = self.describe_monitors
        return _pages.monitors(await asyncio.to_thread(describe) if describe else None)

    async def login(self, request: Request) -> Response:
        form = parse_qs((await _bounded_body(request)).decode(errors="replace"))
        key = (form.get("key") or [""])[0].strip()
        if self.keys is None:
            return RedirectResponse(f"{_prefix(request)}/console", 303)
        try:
            caller = await self.keys.authenticate_admin({"authorization": f"Bearer {key}"})
        except AccessError as exc:
            return _html(_pages.login_page(_prefix(request), exc.message), 401)
        token, _ = await self.keys.sessions.open(caller, SESSION_S)
        response = RedirectResponse(f"{_prefix(request)}/console", 303)
        response.set_cookie(
            COOKIE,
            token,  # a session's random token, never the key: signing out ends it everywhere
            max_age=SESSION_S,
            path=f"{_prefix(request)}/console",
            httponly=True,
            samesite="strict",
            secure=not _loopback(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        form = parse_qs((await _bounded_body(request)).decode(errors="replace"))
        token = request.cookies.get(COOKIE, "")
        if self.keys is not None and token:
            found = await self.keys.sessions.find(token)
            sent = (form.get("csrf") or [""])[0]
            if found is not None and not secrets.compare_digest(sent, found[1]):
                return _html(_pages.login_page(_prefix(request), "Sign-out refused."), 403)
            await self.keys.sessions.end(token)
        response = RedirectResponse(f"{_prefix(request)}/console", 303)
        response.delete_cookie(COOKIE, path=f"{_prefix(request)}/console")
        return response


def add_console_routes(
    app: FastAPI,
    config: GatewayConfig,
    keys: KeyGate | None,
    ledger: LedgerReader | None,
    backends: Callable[[], Awaitable[list[dict[str, Any]]]],
    monitors: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """`backends` gives what `GET /v1/gateway/backends` lists, `monitors` what
    `GET /v1/gateway/monitors` does (None: no monitor is configured)."""
    console = Console(config, keys, ledger, backends, monitors)
    app.add_api_route("/console", console.guarded(console.overview, "Overview"), methods=["GET"])
    usage = console.guarded(console.usage, "Usage")
    app.add_api_route("/console/usage", usage, methods=["GET"])
    experiments = console.guarded(console.experiments, "Experiments")
    app.add_api_route("/console/experiments", experiments, methods=["GET"])
    watched = console.guarded(console.monitors, "Monitors")
    app.add_api_route("/console/monitors", watched, methods=["GET"])
    app.add_api_route("/console/static/console.css", _stylesheet, methods=["GET"])
    app.add_api_route("/console/login", console.login, methods=["POST"])
    app.add_api_route("/console/logout", console.logout, methods=["POST"])


async def _stylesheet() -> Response:
    return Response(STYLESHEET, media_type="text/css", headers={"cache-control": "max-age=3600"})


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _loopback(request: Request) -> bool:
    """Plain HTTP is only for a browser on this machine: a cookie is `Secure` otherwise (a
    TLS proxy in front sends another Host)."""
    return host_name(request.headers.get("host", "")) in LOOPBACK_HOSTS


async def _bounded_body(request: Request) -> bytes:
    """A form body of at most FORM_MAX_BYTES (a larger one is cut off, then refused)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_MAX_BYTES:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)
