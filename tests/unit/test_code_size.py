"""Files a newcomer can read in one go: no module over 400 lines and no function over 60 in
the project's packages (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "gateway", "router", "deployments", "llmops", "access", "storage", "cache", "guardrails",
    "retrieval",
)  # fmt: skip
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_packages_are_all_seen() -> None:
    assert len(modules()) > 100


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_400_lines_and_no_function_over_60(package: str) -> None:
    too_long = []
    for path in (ROOT / package).rglob("*.py"):
        source = path.read_text()
        name = path.relative_to(ROOT)
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []
