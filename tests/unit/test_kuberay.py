"""The KubeRay manifest is a valid RayService (KubeRay's own CRD schema, unknown fields
refused as `kubectl --validate=strict` would) and its embedded Serve config passes
`python -m gateway check`."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "configs" / "kuberay" / "ray-service.gateway.yaml"
SCHEMA = ROOT / "tests" / "fixtures" / "kuberay" / "rayservice-v1.schema.json.gz"


def strict(schema: Any) -> Any:
    """Refuse unknown fields wherever the schema lists the known ones."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(strict(schema))


def service() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return next(d for d in documents if d["kind"] == "RayService")


def test_the_manifest_is_a_valid_rayservice(validator: Draft202012Validator) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(service())]
    assert errors == []
    # ... and the validation can fail: a typo'd field, a bad quantity.
    typo = service()
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 4
    assert any("maxReplica" in e.message for e in validator.iter_errors(typo))
    quantity = copy.deepcopy(service())
    head = quantity["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["resources"]["limits"]["cpu"] = "4 cores"
    assert list(validator.iter_errors(quantity))


def test_the_embedded_serve_config_passes_the_gateway_check(tmp_path: Path) -> None:
    embedded = tmp_path / "serve.yaml"
    embedded.write_text(service()["spec"]["serveConfigV2"])
    assert main(["check", str(embedded)]) == 0
    serve = yaml.safe_load(embedded.read_text())
    args = serve["applications"][0]["args"]
    assert args["auth"]["mode"] == "keys"  # it listens on 0.0.0.0
    assert serve["http_options"]["host"] == "0.0.0.0"


def test_secrets_come_from_kubernetes_secrets_on_every_pod() -> None:
    cluster = service()["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        env = {item["name"]: item for item in pod["template"]["spec"]["containers"][0]["env"]}
        assert "secretKeyRef" in env["GATEWAY_MASTER_KEY"]["valueFrom"]
        assert "value" not in env["GATEWAY_MASTER_KEY"]
        # Ray's own ports refuse callers without the cluster's token (issue 19).
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert "sk-" not in service()["spec"]["serveConfigV2"]
