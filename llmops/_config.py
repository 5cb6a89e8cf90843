"""The `ledger:` and `request_log:` sections of the gateway config, owned by llmops."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops._redact import DEFAULT_REDACTIONS


class Strict(BaseModel):
    """Base of llmops' config sections: unknown keys are mistakes, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerConfig(Strict):
    """Where actual cost per request is stored (SQLite, WAL mode)."""

    enabled: bool = Field(default=True, description="False keeps no ledger.")
    path: str = Field(
        default="var/ledger.sqlite",
        description="SQLite file; relative paths resolve against the project root. With "
        "scope `host`, one per ingress host (replicas on one host share it: WAL allows "
        "concurrent writers); with scope `cluster`, on the owner's node.",
    )
    scope: Literal["host", "cluster"] = Field(
        default="host",
        description="`host`: each ingress host writes its own ledger and request log. "
        "`cluster`: one records owner (a single replica) writes them for every ingress "
        "replica of the cluster, so usage and reports agree whichever replica answers; "
        "replicas ship records in batches and spool what the owner cannot take.",
    )
    owner_node: str | None = Field(
        default=None,
        description="With scope `cluster`: a custom Ray resource the owner's node has (e.g. "
        "`head`), so the files stay on one node across restarts.",
    )
    spool_path: str = Field(
        default="var/records.spool.sqlite",
        description="With scope `cluster` or a `database`: where an ingress host keeps "
        "records the owner or the database could not take yet (shipped, oldest first, once "
        "it answers).",
    )
    retention_days: float | None = Field(
        default=90,
        gt=0,
        description="Request rows (and their feedback) older than this are deleted; usage "
        "totals for older windows come from the hourly rollups. null: kept for ever.",
    )
    rollup_retention_days: float | None = Field(
        default=731,
        gt=0,
        description="Hourly rollups older than this are deleted. null: kept for ever.",
    )


class RequestLogConfig(Strict):
    """One JSON line per request."""

    enabled: bool = Field(default=True, description="False writes no request log.")
    path: str = Field(
        default="var/requests.jsonl", description="Log file; relative to the project root."
    )
    max_bytes: int = Field(default=100 * 2**20, ge=1024, description="Rotate beyond this size.")
    backups: int = Field(default=5, ge=0, description="Rotated files kept.")
    rotate_after_days: float | None = Field(
        default=1, gt=0, description="Also rotate once the file's first line is this old."
    )
    max_age_days: float | None = Field(
        default=30,
        gt=0,
        description="Rotated files last written longer ago than this are deleted, however "
        "few there are. null: only `backups` bounds them.",
    )
    bodies: bool = Field(
        default=False, description="Also log prompts and completions (after redaction)."
    )
    redact: tuple[str, ...] = Field(
        default=DEFAULT_REDACTIONS,
        description="Regular expressions replaced by [REDACTED] in logged bodies (defaults: "
        "e-mail addresses, API-key-like strings, card numbers).",
    )


class ResponsesConfig(Strict):
    """Where `POST /v1/responses` keeps responses stored for `previous_response_id`."""

    path: str | None = Field(
        default=None,
        description="SQLite file; unset: the ledger's file (its own table). Relative paths "
        "resolve against the project root. Ingress replicas on one host share it.",
    )
    retention_days: float = Field(
        default=30, gt=0, description="Stored responses older than this are deleted."
    )
    store_by_default: bool = Field(
        default=True, description="Store a response when the request does not say (`store`)."
    )
