"""The gateway's own views over HTTP: models, health, backends."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.errors import model_not_found
from gateway.http.context import Http, json_response
from gateway.http.views import health_report, model_cards


def add_routes(app: FastAPI, http: Http) -> None:
    gateway, config = http.gateway, http.config

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        allowed = await http.allowed_models(request)
        cards = [card for card in model_cards(config, gateway) if allowed(card["id"])]
        return json_response({"object": "list", "data": cards})

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request) -> Response:
        allowed = await http.allowed_models(request)
        for card in model_cards(config, gateway):
            if card["id"] == model_id and allowed(model_id):
                return json_response(card)
        return model_not_found(model_id).response()

    @app.get("/health")
    async def health(request: Request) -> Response:
        """Public with keys on: the why of an unavailable backend (file paths, OS errors)
        only for an admin key."""
        status, body = await health_report(config, gateway)
        if http.keys is not None and not await http.is_admin(request):
            for backend in body["backends"].values():
                backend.pop("reason", None)
        return json_response(body, status)

    @app.get("/v1/gateway/backends")
    async def backends(request: Request) -> Response:
        """Health, circuit state, live latency and replicas of every backend."""
        await http.need_key(request)
        return json_response({"object": "list", "data": await http.backend_list()})
