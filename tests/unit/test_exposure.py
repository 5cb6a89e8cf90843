"""Secure by default: without keys, the gateway may listen on loopback addresses only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from access import AuthConfig
from gateway.config import ConfigError
from gateway.serve.exposure import check_exposure, serve_file_hosts


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


def test_check_refuses_a_keyless_file_listening_on_every_interface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    app = {"name": "gateway", "import_path": "gateway.app:build_app",
           "args": {"backends": {"echo": {"kind": "fake", "model": "echo-1"}}}}  # fmt: skip
    exposed = tmp_path / "exposed.yaml"
    exposed.write_text(yaml.safe_dump({"http_options": {"host": "0.0.0.0"}, "applications": [app]}))
    assert main(["check", str(exposed)]) == 1
    assert "would listen on 0.0.0.0 without authentication" in capsys.readouterr().err
    app["args"]["auth"] = {"mode": "keys"}
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(yaml.safe_dump({"http_options": {"host": "0.0.0.0"}, "applications": [app]}))
    assert main(["check", str(keyed)]) == 0


def test_the_cli_reads_budgets_and_expiry() -> None:
    from gateway.cli.keys import budget, expiry

    assert budget("20/day") == (20.0, "day") and budget("500/month") == (500.0, "month")
    assert budget("1000") == (1000.0, "total")
    with pytest.raises(ValueError, match="day, month or total"):
        budget("5/week")
    assert expiry("30d", now=1000.0) == 1000.0 + 30 * 86400
    assert expiry("2027-01-01T00:00:00Z") == "2027-01-01T00:00:00Z"  # the server parses it
