"""Fixtures every suite may use: one real PostgreSQL server for the session (Debian's
`postgresql`, installed by `make test`), and a clean database per test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.postgres import PostgresServer, postgres_available


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if not postgres_available():
        pytest.fail("PostgreSQL is not installed: `make test` installs Debian's postgresql")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The server's database, emptied: every test starts from no schema at all."""
    if not postgres_server.running():
        postgres_server.start()
    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        db.execute("DROP SCHEMA IF EXISTS public CASCADE")
        db.execute("CREATE SCHEMA public")
    return postgres_server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Each store's tests run on both: None (a SQLite file) and PostgreSQL's URL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url
