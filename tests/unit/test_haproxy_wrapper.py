"""Serve's HAProxy side listeners on loopback (issue 19): the wrapper's rewrite of the config
Serve writes, and the deploy refusing Ray's bare binary in HAProxy mode."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.serve.exposure import HAPROXY_WRAPPER, check_haproxy, loopback_haproxy

# What Ray 2.60's template renders (ray/serve/_private/haproxy_templates.py), abridged.
RENDERED = """global
    stats socket /tmp/haproxy-serve/n1/admin.sock mode 666 level admin expose-fd listeners
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind *:8000
listen stats
  bind *:8404
  stats enable
"""


def test_the_wrapper_rewrites_only_the_side_listeners_and_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(RENDERED)
    env = {**os.environ, "GATEWAY_HAPROXY_BINARY": "/bin/echo"}
    env.pop("RAY_SERVE_HAPROXY_METRICS_PORT", None)
    env.pop("RAY_SERVE_HAPROXY_STATS_PORT", None)
    ran = subprocess.run(
        [str(HAPROXY_WRAPPER), "-db", "-f", str(config), "-sf", "12"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ran.stdout.split() == ["-db", "-f", str(config), "-sf", "12"]  # the same arguments
    text = config.read_text()
    assert "bind 127.0.0.1:9101" in text and "bind 127.0.0.1:8404" in text
    assert "bind *:8000" in text  # the gateway's own port is `http_options.host`'s
    assert "mode 600 level user expose-fd listeners" in text and "level admin" not in text


def test_ray_s_bare_haproxy_fails_the_deploy() -> None:
    with pytest.raises(ConfigError) as caught:
        check_haproxy({"RAY_SERVE_ENABLE_HA_PROXY": "1"})
    assert "haproxy-loopback" in str(caught.value)
    check_haproxy({"RAY_SERVE_ENABLE_HA_PROXY": "0"})  # Serve's own proxy: nothing to check
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    loopback_haproxy(env)
    check_haproxy(env)
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)
    assert Path(env["GATEWAY_HAPROXY_BINARY"]).is_file()
