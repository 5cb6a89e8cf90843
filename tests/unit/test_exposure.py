"""Secure by default: without keys, the gateway may listen on loopback addresses only."""

from __future__ import annotations

import pytest

from access import AuthConfig
from gateway.config import ConfigError
from gateway.exposure import check_exposure, serve_file_hosts


def test_without_keys_only_loopback_listeners_are_allowed() -> None:
    closed = AuthConfig()
    check_exposure(closed, ["127.0.0.1", "::1", "localhost"])
    for hosts in (["0.0.0.0"], ["127.0.0.1", "::"], ["gateway.example.com"]):
        with pytest.raises(ConfigError, match="allow_open"):
            check_exposure(closed, hosts)
    check_exposure(AuthConfig(mode="none", allow_open=True), ["0.0.0.0"])
    check_exposure(AuthConfig(mode="keys"), ["0.0.0.0"])
    # HAProxy mode binds every interface unless the file names a host.
    assert serve_file_hosts({}, haproxy=True) == ["0.0.0.0"]
    assert serve_file_hosts({"http_options": {"host": "127.0.0.1"}}, haproxy=True) == ["127.0.0.1"]
    assert serve_file_hosts({}, haproxy=False) == ["127.0.0.1"]
