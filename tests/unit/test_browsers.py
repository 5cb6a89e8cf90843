"""No web page drives the gateway and no foreign Host reaches it (issue 19): the guard in
front of the real app, auth off (loopback) and on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.http.app import create_app
from gateway.http.browsers import BrowserGuard, host_allowed, host_name
from tests.helpers import fake_backends

CONFIG: dict[str, Any] = {
    "backends": {"echo": {"kind": "fake", "model": "echo-1"}},
    "routes": {"auto": {"candidates": ["echo"]}},
    "request_log": {"enabled": False},
}
CHAT = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
JSON = {"content-type": "application/json"}


def client_for(tmp_path: Path, **ingress: Any) -> Iterator[TestClient]:
    config = GatewayConfig.load(
        {**CONFIG, "ledger": {"path": str(tmp_path / "l.sqlite")}, "ingress": ingress}
    )
    gateway, ledger = build_gateway(config, fake_backends(config), tmp_path)
    with TestClient(create_app(gateway, config, ledger), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from client_for(tmp_path)


def test_a_plain_json_client_is_served(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", content=CHAT, headers=JSON).status_code == 200
    charset = {"content-type": "application/json; charset=utf-8"}
    assert client.post("/v1/chat/completions", content=CHAT, headers=charset).status_code == 200
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        # A page on another site: no preflight is needed for a text/plain body.
        {"content-type": "text/plain", "origin": "https://evil.example",
         "sec-fetch-site": "cross-site"},
        {**JSON, "origin": "https://evil.example"},  # JSON too: an Origin not our own
        {**JSON, "sec-fetch-site": "same-site"},  # a sibling subdomain's page
        {**JSON, "origin": "null"},  # a sandboxed frame or a file:// page
    ],
)  # fmt: skip
def test_a_cross_site_page_cannot_post(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/chat/completions", content=CHAT, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cross_site_request"


@pytest.mark.parametrize(
    "media", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", ""]
)
def test_a_body_must_be_json(client: TestClient, media: str) -> None:
    """A browser's simple request types, even from no page at all (no Origin)."""
    headers = {"content-type": media} if media else {}
    response = client.post("/v1/chat/completions", content=CHAT, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_anthropic_endpoints_refuse_in_anthropic_shape(client: TestClient) -> None:
    headers = {"content-type": "text/plain", "origin": "https://evil.example"}
    response = client.post("/v1/messages", content=CHAT, headers=headers)
    assert response.status_code == 403
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize("path", ["/console", "/v1/gateway/usage", "/v1/models", "/health"])
def test_a_rebound_host_name_is_refused(client: TestClient, path: str) -> None:
    """DNS rebinding: a page at evil.example:8000, resolving to 127.0.0.1, reads as itself."""
    response = client.get(path, headers={"host": "evil.example:8000"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get(path, headers={"host": host}).status_code != 400


def test_same_origin_forms_pass(client: TestClient) -> None:
    headers = {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}
    response = client.post(
        "/console/login", data={"key": "x"}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303  # auth off: straight to the console


def test_allowed_hosts_are_configurable(tmp_path: Path) -> None:
    for client in client_for(tmp_path, allowed_hosts=["gateway.internal", ".corp.example"]):
        ok = {"host": "api.corp.example"}
        assert client.get("/v1/models", headers=ok).status_code == 200
        assert client.get("/v1/models", headers={"host": "gateway.internal:80"}).status_code == 200
        assert client.get("/v1/models", headers={"host": "127.0.0.1"}).status_code == 400


def test_host_names() -> None:
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost:1") == "localhost"
    assert host_name("::1") == "::1"
    assert host_allowed("a.b.example", [".b.example"])
    assert not host_allowed("evilb.example", [".b.example"])
    assert host_allowed("anything", ["*"])


def test_a_file_upload_is_multipart_only_with_a_bearer_no_form_can_send() -> None:
    """`POST /v1/files` takes multipart (OpenAI's SDK sends it with `Authorization`); a page's
    form cannot add that header without a preflight, so without it the upload is refused."""
    guard = BrowserGuard(None, allowed_hosts=None)
    media = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"9")]

    def scope(path: str, extra: list[tuple[bytes, bytes]]) -> dict[str, object]:
        return {"type": "http", "method": "POST", "path": path, "headers": media + extra}

    bearer = [(b"authorization", b"Bearer sk-x")]
    assert guard.refusal(scope("/v1/files", bearer)) is None
    assert guard.refusal(scope("/rag/v1/files", bearer)) is None
    assert guard.refusal(scope("/v1/files", []))[0] == 415  # type: ignore[index]
    assert guard.refusal(scope("/v1/chat/completions", bearer))[0] == 415  # type: ignore[index]
    foreign = [*bearer, (b"origin", b"https://evil.example"), (b"host", b"127.0.0.1:8000")]
    assert guard.refusal(scope("/v1/files", foreign))[0] == 403  # type: ignore[index]
