"""No provider key in any log the run produced. Runs last, after every other test wrote logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.destructive]


def _log_files(stack: Stack) -> list[Path]:
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    return [p for root in (session, stack.logs) for p in root.rglob("*") if p.is_file()]


def test_no_key_appears_in_any_log(stack: Stack) -> None:
    files = _log_files(stack)
    logs = [p for p in files if "logs" in p.parts]
    assert len(logs) > 20, "expected the Ray session's and the upstreams' logs"
    leaks = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks += [
            f"{path}: {secret[:10]}..." for secret in stack.secrets if secret.encode() in data
        ]
    assert leaks == []
