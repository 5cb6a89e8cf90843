"""Imports flow one way: `gateway` uses `access`, `llmops`, `router` and `deployments`; they
never import `gateway`; `access` imports none of the others, `llmops` never imports `router` or
`deployments`, and neither `router`, `access` nor `llmops` imports Ray when imported."""

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
    assert loaded_after("router, deployments, llmops, access", ("gateway", "ray")) == []


def test_the_pipeline_imports_neither_ray_nor_a_web_framework() -> None:
    roots = ("ray", "fastapi", "starlette")
    assert loaded_after("gateway.pipeline, gateway.build", roots) == []
