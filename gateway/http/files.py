"""OpenAI's Files API for what vector stores search: `POST /v1/files` (multipart: `file`,
`purpose` `assistants` or `user_data`), `GET /v1/files`, `GET` and `DELETE
/v1/files/{file_id}`, `GET /v1/files/{file_id}/content`. A file is seen only by the key that
uploaded it and its team (admins see all); another key gets 404."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from gateway.core.retrieving import Library, owner_of
from gateway.errors import OpenAIError
from gateway.http.context import Http, json_response
from retrieval import Owner

FORM_OVERHEAD = 64 * 1024  # multipart framing and the purpose field


async def caller_owner(http: Http, request: Request) -> Owner:
    """Who asks (checked: a key where keys are on)."""
    if http.keys is None:
        return owner_of(None)
    return owner_of(await http.keys.authenticate(request.headers))


def library(http: Http) -> Library:
    assert http.gateway.library is not None  # build_gateway always makes one
    return http.gateway.library


async def _upload(http: Http, request: Request) -> tuple[str, str, bytes]:
    limit = library(http).config.max_file_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise OpenAIError(
            f"The file is larger than {limit} bytes.", status=413, code="file_too_large"
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise OpenAIError(
            "Send the file as multipart/form-data with the fields `file` and `purpose`.",
            status=400,
            code="invalid_request_error",
        )
    form = await request.form(max_files=1, max_fields=8)
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise OpenAIError("Missing the `file` field.", status=400, param="file")
    if not isinstance(purpose, str):
        raise OpenAIError("Missing the `purpose` field.", status=400, param="purpose")
    data = await upload.read(limit + 1)
    await form.close()
    if len(data) > limit:
        raise OpenAIError(
            f"The file is larger than {limit} bytes.", status=413, code="file_too_large"
        )
    return upload.filename or "upload", purpose, data


def add_routes(app: FastAPI, http: Http) -> None:
    @app.post("/v1/files")
    async def create_file(request: Request) -> Response:
        owner = await caller_owner(http, request)
        filename, purpose, data = await _upload(http, request)
        stored = await library(http).stores().create_file(owner, filename, purpose, data)
        return json_response(stored)

    @app.get("/v1/files")
    async def list_files(request: Request) -> Response:
        owner = await caller_owner(http, request)
        query = dict(request.query_params)
        return json_response(await library(http).stores().list_files(owner, query))

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await library(http).stores().get_file(owner, file_id))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        content = await library(http).stores().file_content(owner, file_id)
        return Response(content, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> Response:
        owner = await caller_owner(http, request)
        return json_response(await library(http).stores().delete_file(owner, file_id))
