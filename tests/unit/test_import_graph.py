"""Imports flow one way: `gateway` uses `access`, `llmops`, `router`, `deployments` and
`storage`, `cache`, `guardrails`, `retrieval` and `tracing`; they never import `gateway`;
`storage` (SQL), `guardrails` and `tracing` (OpenTelemetry) import none of ours, `cache` and
`retrieval` only `storage`, `access` only `storage`, `llmops` never imports `router` or
`deployments`, and neither `router`, `access`, `storage` nor `llmops` imports Ray when
imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> set[str]:
    """Top-level names every module of `package` imports, at any depth of the file."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("router", {"gateway", "llmops", "deployments", "ray", "fastapi", "starlette"}),
        ("deployments", {"gateway", "llmops"}),
        ("llmops", {"gateway", "router", "deployments", "fastapi", "starlette", "httpx"}),
        ("access", {"gateway", "router", "deployments", "llmops", "ray", "fastapi", "starlette"}),
        (
            "storage",
            {"gateway", "router", "deployments", "llmops", "access", "ray", "fastapi", "httpx"},
        ),
        (
            "cache",
            {"gateway", "router", "deployments", "llmops", "access", "ray", "fastapi"},
        ),
        (
            "guardrails",
            {
                "gateway",
                "router",
                "deployments",
                "llmops",
                "access",
                "storage",
                "cache",
                "ray",
                "fastapi",
                "starlette",
            },
        ),
        (
            "retrieval",
            {
                "gateway",
                "router",
                "deployments",
                "llmops",
                "access",
                "cache",
                "guardrails",
                "ray",
                "fastapi",
                "starlette",
                "httpx",
            },
        ),
        (
            "tracing",
            {
                "gateway",
                "router",
                "deployments",
                "llmops",
                "access",
                "storage",
                "cache",
                "guardrails",
                "retrieval",
                "ray",
                "fastapi",
                "starlette",
                "httpx",
            },
        ),
    ],
)
def test_packages_import_one_way(package: str, forbidden: set[str]) -> None:
    assert imported_packages(package) & forbidden == set()


def loaded_after(imports: str, roots: tuple[str, ...]) -> list[str]:
    """Modules under `roots` that a fresh interpreter has loaded after `import {imports}`."""
    code = (
        f"import sys, {imports}\n"
        f"print(','.join(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_importing_the_pure_packages_loads_no_gateway_and_no_ray() -> None:
    assert (
        loaded_after(
            "router, deployments, llmops, access, storage, cache, guardrails, retrieval, tracing",
            ("gateway", "ray"),
        )
        == []
    )


def test_the_pipeline_imports_neither_ray_nor_a_web_framework() -> None:
    roots = ("ray", "fastapi", "starlette")
    assert loaded_after("gateway.core.pipeline, gateway.core.build", roots) == []


def gateway_imports(layer: str) -> set[str]:
    """Every module path the files of `gateway/<layer>` (a folder or a module) import, at any
    depth of the file, relative ones resolved."""
    base = ROOT / "gateway" / layer
    paths = [base.with_suffix(".py")] if base.with_suffix(".py").exists() else base.rglob("*.py")
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert not node.level, f"{path}: a relative import"
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def reaching(imports: set[str], prefixes: set[str]) -> set[str]:
    return {name for name in imports if any(name.split(".")[: len(p.split("."))] ==
                                            p.split(".") for p in prefixes)}  # fmt: skip


FRAMEWORKS = {"ray", "fastapi", "starlette", "uvicorn"}
LAYERS = {"gateway.core", "gateway.fronts", "gateway.http", "gateway.serve", "gateway.cli"}


@pytest.mark.parametrize(
    ("layer", "allowed", "frameworks"),
    [
        ("core", {"gateway.core"}, set()),
        ("fronts", {"gateway.core", "gateway.fronts"}, set()),
        ("http", {"gateway.core", "gateway.fronts", "gateway.http"}, {"fastapi", "starlette"}),
        ("serve", {"gateway.core", "gateway.http", "gateway.serve"}, FRAMEWORKS),
        ("config", {"gateway.core"}, set()),
        ("errors", set(), {"starlette"}),
        ("app", {"gateway.serve"}, set()),
    ],
)
def test_gateway_layers_import_downwards(
    layer: str, allowed: set[str], frameworks: set[str]
) -> None:
    """core imports no other layer and no framework; fronts only core; http fronts and core
    (FastAPI); serve http and core (and Ray); nothing imports cli (but `python -m gateway`)."""
    imports = gateway_imports(layer)
    assert reaching(imports, LAYERS - allowed) == set()
    assert reaching(imports, FRAMEWORKS - frameworks) == set()


def test_each_front_imports_no_other_front() -> None:
    fronts = [path.name for path in (ROOT / "gateway" / "fronts").iterdir() if path.is_dir()]
    assert {"messages", "responses"} <= set(fronts)
    for front in fronts:
        if front == "__pycache__":
            continue
        others = {f"gateway.fronts.{other}" for other in fronts if other != front}
        assert reaching(gateway_imports(f"fronts/{front}"), others) == set(), front


def test_the_core_loads_no_framework() -> None:
    roots = ("ray", "fastapi", "starlette", "gateway")
    loaded = loaded_after("gateway.core.pipeline, gateway.core.build", roots)
    assert loaded and not [name for name in loaded if name.split(".")[0] != "gateway"]
    assert not [name for name in loaded if name.startswith(tuple(LAYERS - {"gateway.core"}))]


def test_no_private_names_are_imported_across_packages() -> None:
    """What gateway uses of router/, llmops/, deployments/ and access/ is their public surface."""
    private = {name for name in gateway_imports("") if name.split(".")[0] in
               {"router", "llmops", "deployments", "access", "storage", "cache", "guardrails",
                "retrieval", "tracing"} and "._" in name}  # fmt: skip
    assert private == set()
