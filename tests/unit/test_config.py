"""Config validation: every shipped config loads; each kind of mistake names its field path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def minimal(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backends": {
            "local": {"kind": "fake", "model": "local-1"},
            "remote": {"kind": "openai", "model": "gpt-x", "api_key_env": "SOME_KEY"},
        },
        "routes": {"auto": {"candidates": ["local", "remote"], "fallbacks": ["remote"]}},
        "default_route": "auto",
    }
    config.update(overrides)
    return config


def error_of(source: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.load(source)
    return str(caught.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    config = GatewayConfig.load(path)
    assert config.backends
    assert config.default_route is None or config.default_route in config.routes


def test_local_config_serves_smollm2_on_cpu_vllm() -> None:
    config = GatewayConfig.load(Path(__file__).resolve().parents[2] / "configs" / "local.yaml")
    smollm2 = config.backends["smollm2"]
    assert smollm2.kind == "vllm"
    assert smollm2.accelerator == "cpu"  # type: ignore[union-attr]
    assert config.backends["gpt-4o-mini"].kind == "openai"


def test_minimal_dict_loads_with_defaults() -> None:
    config = GatewayConfig.load(minimal())
    assert config.routes["auto"].policy == "first_available"
    assert config.ingress.max_body_bytes == 10 * 2**20
    assert config.backends["local"].pricing.input_per_mtok == 0.0


def test_config_path_indirection(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("backends:\n  a: {kind: fake, model: m}\n")
    assert list(GatewayConfig.load({"config_path": str(path)}).backends) == ["a"]


def test_unknown_key_names_its_path() -> None:
    config = minimal()
    config["backends"]["local"]["temprature"] = 1
    assert "backends.local.temprature: unknown field" in error_of(config)


def test_unknown_top_level_key() -> None:
    assert "rotues: unknown field" in error_of(minimal(rotues={}))


def test_unknown_backend_in_route_names_index() -> None:
    config = minimal(routes={"auto": {"candidates": ["local", "missing"]}})
    message = error_of(config)
    assert "routes.auto.candidates.1: unknown backend 'missing'" in message


def test_unknown_backend_in_fallbacks() -> None:
    config = minimal(routes={"auto": {"candidates": ["local"], "fallbacks": ["nope"]}})
    assert "routes.auto.fallbacks.0: unknown backend 'nope'" in error_of(config)


def test_duplicate_candidate_rejected() -> None:
    config = minimal(routes={"auto": {"candidates": ["local", "local"]}})
    assert "routes.auto: candidates lists backend 'local' twice" in error_of(config)


def test_duplicate_yaml_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("backends:\n  a: {kind: fake, model: m}\n  a: {kind: fake, model: n}\n")
    message = error_of(path)
    assert "duplicate key 'a'" in message and "line 3" in message


def test_route_and_backend_names_must_differ() -> None:
    config = minimal(routes={"local": {"candidates": ["remote"]}}, default_route=None)
    assert "routes.local: name is also a backend" in error_of(config)


def test_default_route_must_exist() -> None:
    assert "default_route 'nope' is not a route" in error_of(minimal(default_route="nope"))


def test_unknown_kind() -> None:
    config = minimal()
    config["backends"]["local"]["kind"] = "llama.cpp"
    assert "backends.local" in error_of(config)


def test_vllm_backend_requires_source() -> None:
    config = minimal(backends={"v": {"kind": "vllm", "model": "m"}}, routes={}, default_route=None)
    assert "backends.v.source: Field required" in error_of(config)


def test_replicas_and_autoscaling_are_exclusive() -> None:
    config = minimal()
    config["backends"]["local"]["deployment"] = {
        "num_replicas": 2,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 3},
    }
    assert "backends.local.deployment: " in error_of(config)


def test_autoscaling_bounds() -> None:
    config = minimal()
    config["backends"]["local"]["deployment"] = {
        "autoscaling_config": {"min_replicas": 4, "max_replicas": 2}
    }
    assert "min_replicas must not exceed max_replicas" in error_of(config)


def test_unknown_policy() -> None:
    config = minimal(routes={"auto": {"policy": "smartest", "candidates": ["local"]}})
    assert "routes.auto.policy: unknown policy 'smartest'" in error_of(config)


def test_policy_by_import_path() -> None:
    config = minimal(routes={"auto": {"policy": "router:FirstAvailable", "candidates": ["local"]}})
    assert GatewayConfig.load(config).routes["auto"].policy == "router:FirstAvailable"


def test_negative_price_rejected() -> None:
    config = minimal()
    config["backends"]["local"]["pricing"] = {"input_per_mtok": -1}
    assert "backends.local.pricing.input_per_mtok" in error_of(config)


def test_every_problem_is_reported_at_once() -> None:
    config = minimal()
    config["backends"]["local"]["bogus"] = 1
    config["backends"]["remote"]["max_connections"] = 0
    message = error_of(config)
    assert "2 problem(s)" in message
    assert "backends.remote.max_connections" in message


def test_openai_key_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = GatewayConfig.load(minimal()).backends["remote"]
    monkeypatch.delenv("SOME_KEY", raising=False)
    assert config.api_key() == (None, "environment variable SOME_KEY is not set")  # type: ignore[union-attr]
    monkeypatch.setenv("SOME_KEY", "sk-123")
    assert config.api_key() == ("sk-123", "")  # type: ignore[union-attr]
    key_file = tmp_path / "key"
    key_file.write_text("sk-file\n")
    from deployments import OpenAIBackendConfig

    from_file = OpenAIBackendConfig(kind="openai", model="m", api_key_file=str(key_file))
    assert from_file.api_key() == ("sk-file", "")
    missing = OpenAIBackendConfig(kind="openai", model="m", api_key_file=str(tmp_path / "no"))
    assert missing.api_key()[0] is None and "cannot read" in missing.api_key()[1]


def test_both_key_sources_rejected() -> None:
    config = minimal()
    config["backends"]["remote"]["api_key_file"] = "/tmp/k"
    assert "either api_key_env or api_key_file" in error_of(config)


def test_not_a_mapping() -> None:
    assert "must be a mapping" in error_of([1, 2])  # type: ignore[arg-type]


def test_deployment_options_reach_serve() -> None:
    config = minimal()
    config["backends"]["local"]["placement"] = "deployment"
    config["backends"]["local"]["deployment"] = {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8},
        "max_ongoing_requests": 32,
        "ray_actor_options": {"num_cpus": 0.5},
    }
    options = GatewayConfig.load(config).backends["local"].deployment.serve_options()
    assert options["autoscaling_config"]["max_replicas"] == 3
    assert options["autoscaling_config"]["target_ongoing_requests"] == 8
    assert options["max_ongoing_requests"] == 32
    assert options["ray_actor_options"] == {"num_cpus": 0.5}
    assert "num_replicas" not in options


def test_proxy_backends_run_in_the_ingress_by_default_bounded() -> None:
    from deployments import BoundedBackend
    from deployments.serving import connect_backend, plan_backend
    from gateway.config import PROJECT_ROOT

    config = minimal()
    config["backends"]["local"]["deployment"] = {"max_ongoing_requests": 3}
    backend = GatewayConfig.load(config).backends["local"]
    assert backend.placement == "ingress"
    plan = plan_backend("local", backend, PROJECT_ROOT)
    assert plan.application is None and plan.unavailable_reason == ""
    connected = connect_backend("local", backend, None)
    assert isinstance(connected, BoundedBackend)
    assert type(connected.inner).__name__ == "FakeBackend"
    assert (connected.max_ongoing, connected.max_queued) == (3, 1024)


def test_placement_deployment_is_its_own_deployment() -> None:
    from deployments.serving import plan_backend
    from gateway.config import PROJECT_ROOT

    config = minimal()
    config["backends"]["local"]["placement"] = "deployment"
    plan = plan_backend("local", GatewayConfig.load(config).backends["local"], PROJECT_ROOT)
    assert plan.application is not None


@pytest.mark.parametrize(("in_ingress", "placement"), [(True, "ingress"), (False, "deployment")])
def test_in_ingress_is_the_older_spelling_of_placement(in_ingress: bool, placement: str) -> None:
    config = minimal()
    config["backends"]["local"]["in_ingress"] = in_ingress
    assert GatewayConfig.load(config).backends["local"].placement == placement
    config["backends"]["local"]["placement"] = "deployment" if in_ingress else "ingress"
    assert "backends.local: in_ingress: " in error_of(config)


def test_replica_options_of_an_ingress_backend_are_a_config_error() -> None:
    config = minimal()
    config["backends"]["local"]["deployment"] = {"autoscaling_config": {"max_replicas": 3}}
    message = error_of(config)
    assert "backends.local: deployment.autoscaling_config applies only to `placement: " in message


def test_vllm_backend_cannot_run_in_ingress() -> None:
    config = minimal(routes={}, default_route=None)
    config["backends"] = {"v": {"kind": "vllm", "model": "m", "source": "x", "in_ingress": True}}
    assert "backends.v.in_ingress: unknown field" in error_of(config)


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["check", *map(str, CONFIGS)]) == 0
    assert "ok (2 backends, 1 routes)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  a: {kind: fake, model: m, colour: red}\n")
    assert main(["check", str(bad)]) == 1
    assert "backends.a.colour: unknown field" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_a_dumped_config_loads_again(path: Path) -> None:
    """The ingress receives `model_dump()` of the deployed config: it must validate again."""
    config = GatewayConfig.load(path)
    again = GatewayConfig.load(config.model_dump(mode="json"))
    assert again.backends.keys() == config.backends.keys()


def test_serve_command_refuses_a_bad_config_before_starting_ray(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "applications:\n  - name: gateway\n    import_path: gateway.app:build_app\n"
        "    args:\n      backends:\n        a: {kind: openai, model: m,"
        " deployment: {num_replicas: 2}}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", str(bad)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "RAY_ADDRESS": "local"},
    )  # fmt: skip
    assert run.returncode == 2
    assert "backends.a: deployment.num_replicas applies only to `placement: " in run.stderr
    assert "Ray instance" not in run.stdout + run.stderr  # no cluster was started


def test_the_database_section_names_a_variable_and_fails_with_its_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = GatewayConfig.load(minimal(database={"url_env": "GW_TEST_DB_URL"}))
    assert config.database.url_env == "GW_TEST_DB_URL"
    assert GatewayConfig.load(minimal()).database.url() is None  # SQLite: the default
    monkeypatch.delenv("GW_TEST_DB_URL", raising=False)
    with pytest.raises(ValueError, match="GW_TEST_DB_URL is not set"):
        config.database.url()
    monkeypatch.setenv("GW_TEST_DB_URL", "mysql://u:hunter2@db/x")
    with pytest.raises(ValueError, match="postgresql://") as caught:
        config.database.url()
    assert "hunter2" not in str(caught.value)  # never the URL itself
    assert "database.url" in error_of(minimal(database={"url": "postgresql://u:p@db/x"}))
    both = error_of(minimal(database={"url_env": "X"}, ledger={"scope": "cluster"}))
    assert "ledger.scope" in both


def test_retention_settings_are_positive() -> None:
    assert "ledger.retention_days" in error_of(minimal(ledger={"retention_days": 0}))
    assert "request_log.max_age_days" in error_of(minimal(request_log={"max_age_days": -1}))
    config = GatewayConfig.load(minimal(ledger={"retention_days": None}))
    assert config.ledger.retention_days is None and config.ledger.rollup_retention_days == 731
