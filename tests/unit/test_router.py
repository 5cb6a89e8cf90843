"""Router resolution: model -> route -> candidates, availability, fallbacks, policies."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from router import (
    Availability,
    BackendProfile,
    Candidate,
    ModelNotFound,
    NoBackendAvailable,
    Policy,
    RouteConfig,
    Router,
    RoutingConfig,
    available_policies,
    policy_class,
    register_policy,
)

BACKENDS = {"local": "smollm2", "remote": "gpt-4o-mini", "spare": "spare-model"}
PROFILES = {name: BackendProfile(name) for name in BACKENDS}


def make_router(default_route: str | None = "auto", **route: object) -> Router:
    routes = {
        "auto": RouteConfig(
            candidates=("local", "remote"),
            fallbacks=("remote", "spare"),
            **route,  # type: ignore[arg-type]
        )
    }
    return Router(RoutingConfig(routes=routes, default_route=default_route), PROFILES, BACKENDS)


def down(reason: str = "probe failed", definite: bool = False) -> Availability:
    return Availability(False, reason, definite)


def test_route_name_picks_first_available_and_orders_fallbacks() -> None:
    decision = make_router().decide("auto", {})
    assert decision.route == "auto"
    assert decision.chosen == "local"
    assert decision.attempts == ("local", "remote", "spare")


def test_backend_name_is_direct() -> None:
    decision = make_router().decide("remote", {})
    assert decision.route is None and decision.attempts == ("remote",)


def test_upstream_model_id_resolves_to_backend() -> None:
    assert make_router().decide("gpt-4o-mini", {}).chosen == "remote"


def test_missing_model_uses_default_route() -> None:
    assert make_router().decide(None, {}).route == "auto"
    assert make_router().decide("", {}).route == "auto"


def test_missing_model_without_default_route() -> None:
    with pytest.raises(ModelNotFound) as caught:
        make_router(default_route=None).decide(None, {})
    assert caught.value.model is None


def test_unknown_model_is_not_found_even_with_default_route() -> None:
    with pytest.raises(ModelNotFound) as caught:
        make_router().decide("gpt-17", {})
    assert caught.value.model == "gpt-17"
    assert "auto" in caught.value.known and "local" in caught.value.known


def test_unavailable_candidate_is_skipped_with_reason() -> None:
    decision = make_router().decide("auto", {"local": down("engine dead")})
    assert decision.chosen == "remote"
    assert decision.skipped == {"local": "unavailable: engine dead"}
    assert decision.attempts == ("remote", "spare")


def test_unavailable_fallback_is_left_out() -> None:
    decision = make_router().decide("auto", {"spare": down(definite=True)})
    assert decision.attempts == ("local", "remote")


def test_all_definitely_down_raises_with_reasons() -> None:
    state = {
        "local": down("disabled", True),
        "remote": down("no key", True),
        "spare": down("circuit open", True),
    }
    with pytest.raises(NoBackendAvailable) as caught:
        make_router().decide("auto", state)
    assert caught.value.reasons == {
        "local": "unavailable: disabled",
        "remote": "unavailable: no key",
    }
    assert "no key" in str(caught.value)


def test_fallbacks_serve_when_every_candidate_is_down() -> None:
    state = {"local": down("disabled", True), "remote": down("circuit open", True)}
    decision = make_router().decide("auto", state)
    assert decision.chosen == "spare" and decision.attempts == ("spare",)
    assert decision.skipped["remote"] == "unavailable: circuit open"


def test_retry_after_of_the_soonest_backend_is_reported() -> None:
    state = {
        "local": Availability(False, "circuit open", definite=True, retry_after_s=20),
        "remote": Availability(False, "circuit open", definite=True, retry_after_s=7),
        "spare": down("no key", True),
    }
    with pytest.raises(NoBackendAvailable) as caught:
        make_router().decide("auto", state)
    assert caught.value.retry_after_s == 7


def test_probe_failures_alone_do_not_empty_a_route() -> None:
    # When every candidate only failed a probe, they are still tried, in order.
    decision = make_router().decide("auto", {"local": down(), "remote": down()})
    assert decision.chosen == "local"


def test_direct_request_to_definitely_unavailable_backend() -> None:
    with pytest.raises(NoBackendAvailable) as caught:
        make_router().decide("remote", {"remote": down("OPENAI_API_KEY is not set", True)})
    assert caught.value.reasons == {"remote": "OPENAI_API_KEY is not set"}


def test_direct_request_to_probe_failed_backend_is_tried() -> None:
    assert make_router().decide("local", {"local": down()}).chosen == "local"


def test_registry_lists_builtin_policies() -> None:
    assert {"first_available", "ordered", "cheapest", "fastest", "balanced", "weighted"} <= set(
        available_policies()
    )


def test_policy_by_import_path_and_errors() -> None:
    assert policy_class("router:Ordered").name == "ordered"
    with pytest.raises(KeyError, match="unknown policy"):
        policy_class("nope")
    with pytest.raises(KeyError, match="cannot import"):
        policy_class("no.such.module:Thing")
    with pytest.raises(KeyError, match=r"not a router\.Policy"):
        policy_class("router:Router")


def test_custom_policy_is_used() -> None:
    @register_policy
    class LastFirst(Policy):
        name = "test_last_first"

        def scores(self, eligible: Sequence[Candidate]) -> list[float]:
            return [-float(index) for index in range(len(eligible))]

    decision = make_router(policy="test_last_first").decide("auto", {})
    assert decision.chosen == "remote"
    assert decision.policy == "test_last_first"


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_policy
        class Impostor(Policy):
            name = "first_available"

            def scores(self, eligible: Sequence[Candidate]) -> list[float]:
                return [0.0] * len(eligible)
