"""OpenAI's Vector Stores API: stores (`/v1/vector_stores`), their files (`.../files`) and
file batches (`.../file_batches`), and search (`POST .../search`). Ingest is done when the
request returns (status `completed` or `failed`); its embeddings go through the gateway's
embedding model on the caller's key. A store is seen only by the key that made it and its
team (admins see all); another key gets 404."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.errors import json_object
from gateway.http.context import Http, json_response
from gateway.http.files import caller_owner, library
from retrieval import VectorStores

BASE = "/v1/vector_stores"


def add_routes(app: FastAPI, http: Http) -> None:
    _store_routes(app, http)
    _file_routes(app, http)


def _tools(http: Http) -> tuple[Any, Any]:
    async def body(request: Request) -> dict[str, Any]:
        return json_object(await http.body(request))

    def stores() -> VectorStores:
        return library(http).stores()

    return body, stores


def _store_routes(app: FastAPI, http: Http) -> None:
    body, stores = _tools(http)

    @app.post(BASE)
    async def create_store(request: Request) -> Response:
        owner = await caller_owner(http, request)
        data = await body(request)
        return json_response(await stores().create_store(owner, data, request.headers))

    @app.get(BASE)
    async def list_stores(request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().list_stores(owner, dict(request.query_params)))

    @app.get(BASE + "/{store_id}")
    async def get_store(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().get_store(owner, store_id))

    @app.post(BASE + "/{store_id}")
    async def modify_store(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().modify_store(owner, store_id, await body(request)))

    @app.delete(BASE + "/{store_id}")
    async def delete_store(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().delete_store(owner, store_id))

    @app.post(BASE + "/{store_id}/search")
    async def search(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        data = await body(request)
        return json_response(await stores().search_body(owner, store_id, data, request.headers))


def _file_routes(app: FastAPI, http: Http) -> None:
    body, stores = _tools(http)

    @app.post(BASE + "/{store_id}/files")
    async def add_file(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        data = await body(request)
        return json_response(await stores().add_file(owner, store_id, data, request.headers))

    @app.get(BASE + "/{store_id}/files")
    async def list_files(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        query = dict(request.query_params)
        return json_response(await stores().list_store_files(owner, store_id, query))

    @app.get(BASE + "/{store_id}/files/{file_id}")
    async def get_file(store_id: str, file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().get_store_file(owner, store_id, file_id))

    @app.post(BASE + "/{store_id}/files/{file_id}")
    async def update_file(store_id: str, file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        data = await body(request)
        return json_response(await stores().update_store_file(owner, store_id, file_id, data))

    @app.delete(BASE + "/{store_id}/files/{file_id}")
    async def remove_file(store_id: str, file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().remove_store_file(owner, store_id, file_id))

    @app.post(BASE + "/{store_id}/file_batches")
    async def add_batch(store_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        data = await body(request)
        return json_response(await stores().add_batch(owner, store_id, data, request.headers))

    @app.get(BASE + "/{store_id}/file_batches/{batch_id}")
    async def get_batch(store_id: str, batch_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await stores().get_batch(owner, store_id, batch_id))

    @app.post(BASE + "/{store_id}/file_batches/{batch_id}/cancel")
    async def cancel_batch(store_id: str, batch_id: str, request: Request) -> Response:
        """A batch is done when it is made: nothing is left to cancel."""
        owner = await caller_owner(http, request)
        return json_response(await stores().get_batch(owner, store_id, batch_id))

    @app.get(BASE + "/{store_id}/file_batches/{batch_id}/files")
    async def batch_files(store_id: str, batch_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        query = dict(request.query_params)
        return json_response(await stores().list_store_files(owner, store_id, query, batch_id))
