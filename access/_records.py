"""Keys and teams: what an admin sends (`KeySpec`, `TeamSpec`, their patches) and what is
stored (`Principal`: one key or team record, never a secret)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

SECRET_PREFIX = "sk-gw-"
PREFIX_CHARS = 10  # "sk-gw-" and four characters of the secret: enough to tell keys apart
Period = Literal["day", "month", "total"]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.@:-]*$")]
Pattern = Annotated[str, Field(min_length=1, max_length=200)]
METADATA_MAX_BYTES = 4096
KEY_ID_PREFIX = "key_"


def new_secret() -> str:
    """A key to hand out: 256 random bits after a recognisable prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What is stored instead of the key. A fast hash is enough for 256-bit random keys (no
    dictionary to try); a low-entropy master key is never stored at all."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (or their hashes)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def model_allowed(patterns: tuple[str, ...] | None, model: str) -> bool:
    """No patterns: every model. Otherwise names or shell globs (`gpt-4o*`), case-sensitive."""
    return not patterns or any(fnmatchcase(model, pattern) for pattern in patterns)


def _timestamp(value: Any) -> Any:
    """ISO 8601 (`2027-01-01T00:00:00Z`) or Unix seconds -> Unix seconds."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError("expected an ISO 8601 time or Unix seconds") from None
    return value


class _Limits(BaseModel):
    """Limits shared by keys and teams; None means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[Pattern, ...] | None = Field(
        default=None, description="Allowed models and routes (names or globs); None: all."
    )
    budget_usd: float | None = Field(default=None, ge=0, description="USD per period.")
    budget_period: Period = Field(default="month", description="day, month (UTC) or total.")
    rpm: int | None = Field(default=None, ge=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=0, description="Prompt + completion tokens/min.")
    max_parallel: int | None = Field(default=None, ge=0, description="Requests in flight.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Owner, tags...: copied into the request log and ledger."
    )

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        import orjson

        if value is not None and len(orjson.dumps(value)) > METADATA_MAX_BYTES:
            raise ValueError(f"metadata must encode to at most {METADATA_MAX_BYTES} bytes")
        return value


class TeamSpec(_Limits):
    """`POST /v1/gateway/teams`: a team's name is its id (`key_...` is kept for keys)."""

    name: Name

    @field_validator("name")
    @classmethod
    def _not_a_key_id(cls, value: str) -> str:
        if value.startswith(KEY_ID_PREFIX):
            raise ValueError(f"team names may not start with {KEY_ID_PREFIX!r} (keys' ids do)")
        return value


class KeySpec(_Limits):
    """`POST /v1/gateway/keys`."""

    name: Name
    team: Name | None = Field(default=None, description="An existing team's name.")
    role: Literal["user", "admin"] = Field(
        default="user", description="`admin` keys may use the admin API (not make admins)."
    )
    expires_at: float | None = Field(default=None, description="ISO 8601 or Unix seconds.")

    _expiry = field_validator("expires_at", mode="before")(_timestamp)


def patch_model(spec: type[BaseModel], *, frozen: tuple[str, ...]) -> type[BaseModel]:
    """A PATCH body for `spec`: every field optional, `frozen` ones refused."""
    from pydantic import create_model

    fields: dict[str, Any] = {
        name: (Optional[info.annotation], Field(default=None, description=info.description))  # noqa: UP045
        for name, info in spec.model_fields.items()
        if name not in frozen
    }
    validators = {"_expiry": field_validator("expires_at", mode="before")(_timestamp)}
    return create_model(
        f"{spec.__name__}Patch",
        __config__=ConfigDict(extra="forbid"),
        __validators__=validators if "expires_at" in fields else {},
        **fields,
    )


KeyPatch = patch_model(KeySpec, frozen=("name",))
TeamPatch = patch_model(TeamSpec, frozen=("name",))


class Principal(BaseModel):
    """A stored key or team, as admins and replicas see it: no secret, only its prefix."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Literal["key", "team"]
    name: str
    team: str | None = None
    role: Literal["user", "admin"] = "user"
    prefix: str | None = None
    models: tuple[str, ...] | None = None
    budget_usd: float | None = None
    budget_period: Period = "month"
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    metadata: dict[str, Any] | None = None
    expires_at: float | None = None
    created_at: float = 0.0
    revoked_at: float | None = None
    version: int = 0

    def refusal(self, now: float | None = None) -> str | None:
        """Why this key cannot be used now, or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return None

    @property
    def entity(self) -> str:
        """The name its limits are counted under."""
        return f"{self.kind}:{self.id}"
