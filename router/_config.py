"""The `routes:` section of the gateway config, owned by the router."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router._policies import policy_exists


class RouteConfig(BaseModel):
    """One route: a named set of candidate backends and how to pick among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(
        default="first_available",
        description=(
            "Name of a registered policy (see `router.available_policies()`) or an import path "
            "`package.module:ClassName` of a `Policy` subclass."
        ),
    )
    candidates: tuple[str, ...] = Field(
        min_length=1,
        description="Backend names the policy chooses from, in preference order.",
    )
    fallbacks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Backend names tried in order after the chosen candidate fails before any output "
            "reached the client. Candidates not chosen are not retried unless listed here."
        ),
    )
    description: str = Field(default="", description="Free text shown in `GET /v1/models`.")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        if not policy_exists(name):
            raise ValueError(f"unknown policy {name!r}")
        return name

    @model_validator(mode="after")
    def _no_duplicates(self) -> RouteConfig:
        for field in ("candidates", "fallbacks"):
            names: tuple[str, ...] = getattr(self, field)
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{field} lists backend {name!r} twice")
                seen.add(name)
        return self


class RoutingConfig(BaseModel):
    """Routes and the default route; backend names are checked against the backends section
    by the composing config (`check_backend_names`), since the router does not own backends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: dict[str, RouteConfig] = Field(
        default_factory=dict,
        description="Route name -> route. A request whose `model` is a route name is routed.",
    )
    default_route: str | None = Field(
        default=None,
        description="Route used when a request omits `model`. Unknown model names still get 404.",
    )

    @model_validator(mode="after")
    def _default_route_exists(self) -> RoutingConfig:
        if self.default_route is not None and self.default_route not in self.routes:
            raise ValueError(f"default_route {self.default_route!r} is not a route")
        return self

    def unknown_backend_references(self, backend_names: set[str]) -> list[tuple[str, str]]:
        """(field path, name) for every route entry that names no backend."""
        problems: list[tuple[str, str]] = []
        for route_name, route in self.routes.items():
            for field in ("candidates", "fallbacks"):
                for index, name in enumerate(getattr(route, field)):
                    if name not in backend_names:
                        problems.append((f"routes.{route_name}.{field}.{index}", name))
        return problems
