"""The admin API of keys and teams: `/v1/gateway/keys` and `/v1/gateway/teams` (create, list,
get with usage, update, revoke). Master key or an admin key only; the state owner does the
work, this module only speaks HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from access import Op
from gateway.core.keys import KeyGate
from gateway.errors import OpenAIError, json_object

JSON = "application/json"
KINDS = {"keys": "key", "teams": "team"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it (`object` names its kind; nothing secret is stored)."""
    kind = record.pop("kind")
    record.pop("version", None)
    return {"object": f"gateway.{kind}", **record}


def _body(raw: bytes) -> dict[str, Any]:
    return json_object(raw or b"{}")


def add_admin_routes(app: FastAPI, keys: KeyGate | None, read_body: Any) -> None:
    """Mount the admin endpoints; without keys (`auth: {mode: none}`) they answer 404."""

    async def admin(request: Request) -> KeyGate:
        if keys is None:
            raise OpenAIError(
                "Keys are off in this gateway; set `auth: {mode: keys}` in its config.",
                status=404,
                code="auth_disabled",
            )
        await keys.authenticate_admin(request.headers)
        return keys

    async def master(request: Request, gate: KeyGate) -> bool:
        return (await gate.authenticate(request.headers)).master

    for collection, kind in KINDS.items():
        _mount(app, f"/v1/gateway/{collection}", kind, admin, master, read_body)


def _mount(app: FastAPI, path: str, kind: str, admin: Any, master: Any, read_body: Any) -> None:
    async def create(request: Request) -> Response:
        gate = await admin(request)
        spec = _body(await read_body(request))
        payload = {"kind": kind, "spec": spec, "master": await master(request, gate)}
        created = await gate.client.admin(Op.CREATE, payload)
        answer = _public(created["record"])
        if "key" in created:
            answer["key"] = created["key"]  # the only time the secret is shown
        return _json(answer, 201)

    async def listing(request: Request) -> Response:
        gate = await admin(request)
        records = await gate.client.admin(Op.LIST, {"kind": kind})
        return _json({"object": "list", "data": [_public(r) for r in records]})

    async def retrieve(id: str, request: Request) -> Response:
        gate = await admin(request)
        return _json(_public(await gate.client.admin(Op.GET, {"kind": kind, "id": id})))

    async def update(id: str, request: Request) -> Response:
        gate = await admin(request)
        patch = _body(await read_body(request))
        payload = {"kind": kind, "id": id, "patch": patch, "master": await master(request, gate)}
        return _json(_public(await gate.client.admin(Op.UPDATE, payload)))

    async def revoke(id: str, request: Request) -> Response:
        gate = await admin(request)
        return _json(await gate.client.admin(Op.REVOKE, {"kind": kind, "id": id}))

    app.add_api_route(path, create, methods=["POST"])
    app.add_api_route(path, listing, methods=["GET"])
    app.add_api_route(path + "/{id}", retrieve, methods=["GET"])
    app.add_api_route(path + "/{id}", update, methods=["PATCH"])
    app.add_api_route(path + "/{id}", revoke, methods=["DELETE"])
