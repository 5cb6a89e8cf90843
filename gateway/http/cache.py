"""The response cache's admin face: `GET /v1/gateway/cache` (entries, hits, misses, what the
near misses the verifier refused) and `DELETE /v1/gateway/cache` (purge everything, or one
route's or one backend's entries: `?route=`, `?backend=`). Admins only, where keys are on."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.core.caching import ResponseCache
from gateway.errors import OpenAIError
from gateway.http.context import Http, json_response


def _cache(http: Http) -> ResponseCache:
    if http.gateway.cache is None:
        raise OpenAIError(
            "No route caches answers in this gateway; add a `cache:` section to its config.",
            status=404,
            code="cache_disabled",
        )
    return http.gateway.cache


def add_routes(app: FastAPI, http: Http) -> None:
    @app.get("/v1/gateway/cache")
    async def describe(request: Request) -> Response:
        """What this ingress replica's cache holds and how it has done."""
        await http.need_key(request, admin=True)
        return json_response({"object": "gateway.cache", **await _cache(http).describe()})

    @app.delete("/v1/gateway/cache")
    async def purge(request: Request) -> Response:
        """Remove entries: all, or those of `route` or of `backend`."""
        await http.need_key(request, admin=True)
        cache = _cache(http)
        query = request.query_params
        route, backend = query.get("route"), query.get("backend")
        for param, value, known in (
            ("route", route, http.config.routes),
            ("backend", backend, http.config.backends),
        ):
            if value is not None and value not in known:
                raise OpenAIError(
                    f"unknown {param} {value!r}", status=400, param=param, code="invalid_value"
                )
        removed = await cache.purge(route=route, backend=backend)
        return json_response(
            {
                "object": "gateway.cache.purge",
                "route": route,
                "backend": backend,
                "removed": removed,
            }
        )
