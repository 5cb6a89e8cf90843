"""No web page can drive the gateway, and no foreign host name reaches it.

A page on any site may POST to `http://127.0.0.1:8000` without a CORS preflight when its body
is a "simple" type (text/plain, a form, multipart): the browser sends it and only hides the
answer. Such a request would spend the operator's provider keys. And a page served from a
name that resolves to 127.0.0.1 after a DNS rebinding reads the gateway as its own origin.
So, before anything else runs (no body read, no key checked):

* a state-changing request (not GET, HEAD or OPTIONS) that a browser marks as coming from
  another site (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is not the
  request's own host) gets 403 `cross_site_request`;
* a state-changing request with a body must say `application/json` (415), except the
  console's sign-in forms, which are same-origin only by the rule above, and a file upload
  (`POST /v1/files`, multipart) that carries an `Authorization` header: a page cannot add
  one to a form it posts without a CORS preflight, which the gateway never grants;
* a `Host` that is not allowed gets 400 `host_not_allowed`: by default, with auth off, only
  loopback names; with keys, any (keys guard it) unless `ingress.allowed_hosts` names some.

Clients that are not browsers (SDKs, curl) send no `Origin` or `Sec-Fetch-Site` and are
not affected beyond naming their JSON body as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
FOREIGN_SITES = frozenset({b"cross-site", b"same-site"})
FORM_PATHS = ("/console/login", "/console/logout")  # the console's own forms
FORM_TYPES = (b"application/x-www-form-urlencoded",)
UPLOAD_PATH = "/v1/files"  # OpenAI's Files API takes multipart only
ANTHROPIC_PREFIX = "/v1/messages"


def host_name(host: str) -> str:
    """`name:port`, `[v6]:port` or a bare name -> the lower-case name."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """`*` allows all; `.example.com` a domain and its subdomains; else exact names."""
    name = host_name(host)
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith(".") and (name.endswith(pattern) or name == pattern[1:]):
            return True
    return False


def _error(status: int, code: str, message: str, anthropic: bool) -> bytes:
    if anthropic:
        kind = {403: "permission_error"}.get(status, "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    kind = "invalid_request_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


class BrowserGuard:
    """ASGI middleware; `allowed_hosts` None allows every Host."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, body = refusal
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Any) -> tuple[int, bytes] | None:
        headers = dict(scope["headers"])  # lower-case names; a repeated one: the last
        path = str(scope.get("path", ""))
        anthropic = path.startswith(ANTHROPIC_PREFIX)
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and not host_allowed(host, self.allowed_hosts):
            message = (
                f"Host {host_name(host)!r} is not one this gateway answers to (a DNS "
                "rebinding guard); add it to `ingress.allowed_hosts`."
            )
            return 400, _error(400, "host_not_allowed", message, anthropic)
        if scope["method"].encode() in SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        foreign = headers.get(b"sec-fetch-site") in FOREIGN_SITES or (
            origin is not None and not _same_origin(origin.decode("latin-1"), host)
        )
        if foreign:
            message = "Requests from another site's pages are refused (cross-site request)."
            return 403, _error(403, "cross_site_request", message, anthropic)
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media == b"application/json" or media.endswith(b"+json"):
            return None
        if path.endswith(FORM_PATHS) and media in FORM_TYPES:
            return None
        upload = path.endswith(UPLOAD_PATH) and media == b"multipart/form-data"
        if upload and b"authorization" in headers:
            return None
        if not media and not _has_body(headers):
            return None
        message = (
            f"Content-Type {media.decode('latin-1') or '(none)'!r} is not accepted: send the "
            "body as JSON with `Content-Type: application/json`."
        )
        return 415, _error(415, "unsupported_media_type", message, anthropic)


def _same_origin(origin: str, host: str) -> bool:
    """Whether a browser's `Origin` (scheme://name[:port]) is the request's own host."""
    _, _, authority = origin.partition("://")
    return bool(authority) and authority.lower() == host.strip().lower()


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or length not in (b"", b"0")


def default_allowed_hosts(configured: Iterable[str] | None, keys: bool) -> tuple[str, ...] | None:
    """What `ingress.allowed_hosts` means: as configured, else loopback names without keys
    and any Host with them."""
    if configured is not None:
        return tuple(configured)
    return None if keys else LOOPBACK_HOSTS
