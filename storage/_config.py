"""The `database:` section of the gateway config: where shared state lives in a cluster."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


class DatabaseConfig(BaseModel):
    """Unset (`url_env: null`): every store keeps its SQLite file on its host, as the
    embedded default does. Set: the ledger, feedback, keys, teams and spend, stored Responses
    and learned task prototypes live in that PostgreSQL database, shared by every replica on
    every node. The URL itself is a secret: only the name of the variable holding it is
    configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str | None = Field(
        default=None,
        description="Environment variable holding the PostgreSQL URL "
        "(`postgresql://user:password@host:5432/db`), e.g. GATEWAY_DATABASE_URL; unset: SQLite.",
    )
    pool_min: int = Field(default=1, ge=0, le=100, description="Connections kept open per process.")
    pool_max: int = Field(default=8, ge=1, le=200, description="Connections at most per process.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="How long opening the database may take at start."
    )

    def url(self) -> str | None:
        """The URL from the environment (None without `url_env`); ValueError when the variable
        is not set where the gateway runs."""
        if self.url_env is None:
            return None
        value = os.environ.get(self.url_env, "")
        if not value:
            raise ValueError(
                f"environment variable {self.url_env} is not set where the gateway runs "
                "(it holds the PostgreSQL URL; never put the URL in the config)"
            )
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"environment variable {self.url_env} does not hold a postgresql:// URL"
            )
        return value
