"""Cost, latency and task routing: hints, estimates, eligibility, policies, properties."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import (
    Availability,
    BackendProfile,
    BackendStats,
    BudgetInfeasible,
    HintError,
    LatencyPrior,
    NoBackendAvailable,
    RequestSummary,
    RouteConfig,
    Router,
    RoutingConfig,
    RoutingHints,
    TaskClassifier,
    TaskConfig,
    parse_hints,
)

# cheap-slow, mid, dear-fast: prices per 1M tokens (input, output) and latency priors.
PROFILES = {
    "cheap": BackendProfile(
        "cheap",
        0.1,
        0.2,
        latency_prior=LatencyPrior(800, 40),
        context_window=1000,
        quality={"default": 0.4, "code": 0.2},
    ),
    "mid": BackendProfile(
        "mid", 1.0, 2.0, latency_prior=LatencyPrior(300, 15), quality={"default": 0.7}
    ),
    "dear": BackendProfile(
        "dear",
        5.0,
        15.0,
        latency_prior=LatencyPrior(100, 5),
        quality={"default": 0.95},
        tasks=frozenset({"chat", "code"}),
    ),
}
NAMES = tuple(PROFILES)


def router(policy: str = "cheapest", **route: object) -> Router:
    config = RoutingConfig(
        routes={"r": RouteConfig(policy=policy, candidates=NAMES, **route)},  # type: ignore[arg-type]
        tasks={"code": TaskConfig(min_quality=0.3), "math": TaskConfig()},
    )
    return Router(config, PROFILES)


def ask(r: Router, **summary: object) -> object:
    summary.setdefault("max_tokens", 100)
    return r.decide("r", {}, RequestSummary(prompt_text="x" * 400, **summary))  # type: ignore[arg-type]


# ---- hints ----------------------------------------------------------------------------------


def test_hints_from_body_win_over_headers() -> None:
    hints = parse_hints(
        {"latency_budget_ms": 500},
        {"x-latency-budget-ms": "9000", "x-task": "code", "x-max-cost-usd": "0.01"},
    )
    assert hints == RoutingHints(latency_budget_ms=500.0, task="code", max_cost_usd=0.01)


@pytest.mark.parametrize(
    ("routing", "headers", "field"),
    [
        ({"latency_budget_ms": "soon"}, {}, "routing.latency_budget_ms"),
        ({"latency_budget_ms": -5}, {}, "routing.latency_budget_ms"),
        ({"max_cost_usd": True}, {}, "routing.max_cost_usd"),
        ({"task": 3}, {}, "routing.task"),
        ({"speed": "max"}, {}, "routing.speed"),
        (None, {"x-latency-budget-ms": "fast"}, "x-latency-budget-ms"),
        ("fast", {}, "routing"),
    ],
)
def test_ill_typed_hints_name_the_field(
    routing: object, headers: dict[str, str], field: str
) -> None:
    with pytest.raises(HintError) as caught:
        parse_hints(routing, headers)
    assert caught.value.field == field
    assert field.split(".")[-1] in str(caught.value) or field == "routing"


# ---- estimates ------------------------------------------------------------------------------


def test_cost_estimate_uses_prices_and_tokens() -> None:
    decision = ask(router())
    by_name = {e.backend: e for e in decision.evaluations}  # type: ignore[attr-defined]
    mid = by_name["mid"].estimate
    assert mid.prompt_tokens == 100  # 400 characters, approximated at 4 per token
    assert mid.output_tokens == 100 and mid.output_tokens_source == "max_tokens"
    assert mid.cost_usd == pytest.approx((100 * 1.0 + 100 * 2.0) / 1e6)
    assert mid.latency_ms == pytest.approx(300 + 100 * 15)
    assert mid.latency_source == "prior"


def test_output_tokens_from_history_then_default() -> None:
    r = router()
    decision = r.decide("r", {}, RequestSummary(prompt_text="hi"))
    assert {e.estimate.output_tokens_source for e in decision.evaluations} == {"default"}
    stats = BackendStats(LatencyPrior())
    for _ in range(6):
        stats.record(100, 10, 40)
    decision = r.decide("r", {}, RequestSummary(prompt_text="hi"), {"mid": stats.snapshot()})
    mid = next(e for e in decision.evaluations if e.backend == "mid").estimate
    assert (mid.output_tokens, mid.output_tokens_source) == (40, "history")


def test_gpu_hour_cost_is_marginal() -> None:
    profile = BackendProfile("gpu", gpu_hour_usd=3.6, capacity=10)
    r = Router(RoutingConfig(routes={"r": RouteConfig(candidates=("gpu",))}), {"gpu": profile})
    idle = BackendStats(profile.latency_prior).snapshot()
    busy = BackendStats(profile.latency_prior)
    busy.in_flight = 9
    summary = RequestSummary(max_tokens=100)
    cost_idle = r.decide("r", {}, summary, {"gpu": idle}).evaluations[0].estimate.cost_usd
    cost_busy = (
        r.decide("r", {}, summary, {"gpu": busy.snapshot()}).evaluations[0].estimate.cost_usd
    )
    # A saturated replica charges this request its full share: 1 $/s / 10 slots * 2.5 s.
    assert cost_busy == pytest.approx(3.6 / 3600 * 2.5 / 10)
    assert 0 < cost_idle < cost_busy / 5


def test_queueing_adds_wait_beyond_capacity() -> None:
    profile = BackendProfile("q", capacity=2, latency_prior=LatencyPrior(100, 10))
    r = Router(RoutingConfig(routes={"r": RouteConfig(candidates=("q",))}), {"q": profile})
    stats = BackendStats(profile.latency_prior)
    stats.in_flight = 5
    estimate = r.decide("r", {}, RequestSummary(max_tokens=10), {"q": stats.snapshot()})
    assert estimate.evaluations[0].estimate.queue_ms == pytest.approx(4 / 2 * 200)


def test_stats_use_prior_until_enough_samples_and_p90_sees_outliers() -> None:
    stats = BackendStats(LatencyPrior(ttft_ms=999, tpot_ms=9))
    for _ in range(4):
        stats.record(100, 10, 20)
    assert stats.snapshot().ttft_ms == 999 and stats.snapshot().source == "prior"
    for ttft in (100, 100, 100, 100, 100, 2000):
        stats.record(ttft, 10, 20)
    snapshot = stats.snapshot()
    assert snapshot.source == "measured"
    assert snapshot.ttft_p90_ms == 2000 > snapshot.ttft_ms


def test_non_streamed_total_is_split_with_token_rate() -> None:
    stats = BackendStats(LatencyPrior(ttft_ms=50, tpot_ms=10))
    stats.record_total(total_ms=590, output_tokens=50)
    assert stats.ttft.value == pytest.approx(100)


# ---- eligibility ----------------------------------------------------------------------------


def test_context_window_task_and_quality_constraints() -> None:
    decision = ask(router(), max_tokens=950, task="math")
    reasons = {e.backend: e.reasons for e in decision.evaluations}  # type: ignore[attr-defined]
    assert any("context window 1000" in r for r in reasons["cheap"])
    assert any("does not serve task 'math'" in r for r in reasons["dear"])
    assert decision.chosen == "mid"  # type: ignore[attr-defined]
    code = ask(router(), task="code")
    assert any("min_quality" in r for r in code.skipped["cheap"].split("; "))  # type: ignore[attr-defined]
    assert code.chosen == "mid"  # type: ignore[attr-defined]


def test_max_cost_excludes_dear_backends() -> None:
    decision = ask(router("fastest"), hints=RoutingHints(max_cost_usd=0.0005))
    assert decision.chosen == "mid"  # type: ignore[attr-defined]
    assert "max_cost_usd" in decision.skipped["dear"]  # type: ignore[attr-defined]


def test_budget_between_latencies_picks_cheapest_that_fits() -> None:
    # Predicted: cheap 4800 ms, mid 1800 ms, dear 600 ms.
    assert ask(router(), hints=RoutingHints(latency_budget_ms=2000)).chosen == "mid"  # type: ignore[attr-defined]
    assert ask(router(), hints=RoutingHints(latency_budget_ms=700)).chosen == "dear"  # type: ignore[attr-defined]
    assert ask(router(), hints=RoutingHints(latency_budget_ms=60000)).chosen == "cheap"  # type: ignore[attr-defined]


def test_a_cold_backend_spills_requests_with_a_budget_and_keeps_the_others() -> None:
    # cheap would answer in 4800 ms once up; it is scaled to zero with a 30 s cold start.
    cold = {"cheap": Availability(cold_start_ms=30_000)}
    summary = {"prompt_text": "x" * 400, "max_tokens": 100}
    budget = RequestSummary(hints=RoutingHints(latency_budget_ms=6000), **summary)  # type: ignore[arg-type]
    spilled = router().decide("r", cold, budget)
    assert (spilled.chosen, spilled.spillover) == ("mid", ("cheap", "cold_start"))
    assert spilled.chosen_evaluation is not None
    cheap = next(e for e in spilled.evaluations if e.backend == "cheap")
    assert cheap.estimate.cold_start_ms == 30_000 and cheap.estimate.latency_ms > 30_000
    # Without a budget the request waits for the cheap backend; once it is up, no spill.
    waits = router().decide("r", cold, RequestSummary(**summary))  # type: ignore[arg-type]
    assert (waits.chosen, waits.spillover) == ("cheap", None)
    warm = router().decide("r", {}, budget)
    assert (warm.chosen, warm.spillover) == ("cheap", None)
    # A budget nothing but capacity rules out is no spill-over: mid is chosen on its merits.
    tight = RequestSummary(hints=RoutingHints(latency_budget_ms=2000), **summary)  # type: ignore[arg-type]
    assert router().decide("r", cold, tight).spillover is None


def test_a_queued_backend_spills_with_the_queue_as_reason() -> None:
    busy = BackendStats(LatencyPrior(800, 40))
    for _ in range(64 + 20):  # its capacity (64) in flight and 20 queued
        busy.started()
    stats = {"cheap": busy.snapshot()}
    request = RequestSummary(
        prompt_text="x" * 400, max_tokens=100, hints=RoutingHints(latency_budget_ms=6000)
    )
    decision = router().decide("r", {}, request, stats)
    assert decision.spillover == ("cheap", "queue") and decision.chosen == "mid"


def test_infeasible_budget_serves_fastest_and_says_so() -> None:
    decision = ask(router(), hints=RoutingHints(latency_budget_ms=10))
    assert decision.chosen == "dear" and decision.budget_infeasible  # type: ignore[attr-defined]


def test_infeasible_budget_can_reject() -> None:
    with pytest.raises(BudgetInfeasible, match="within 10 ms"):
        ask(router(on_infeasible="reject"), hints=RoutingHints(latency_budget_ms=10))


def test_nothing_eligible_explains_each() -> None:
    with pytest.raises(NoBackendAvailable) as caught:
        ask(router(), hints=RoutingHints(max_cost_usd=1e-9))
    assert all("max_cost_usd" in why for why in caught.value.reasons.values())


# ---- policies -------------------------------------------------------------------------------


def test_fastest_and_balanced() -> None:
    assert ask(router("fastest")).chosen == "dear"  # type: ignore[attr-defined]
    assert ask(router("ordered")).chosen == "cheap"  # type: ignore[attr-defined]
    cost_only = router("balanced", balance={"cost": 1, "latency": 0, "quality": 0})
    assert ask(cost_only).chosen == "cheap"  # type: ignore[attr-defined]
    quality_only = router("balanced", balance={"cost": 0, "latency": 0, "quality": 1})
    assert ask(quality_only).chosen == "dear"  # type: ignore[attr-defined]


def test_weighted_split_follows_weights() -> None:
    r = router("weighted", weights={"cheap": 3, "mid": 1})
    counts = collections.Counter(ask(r, seed=seed).chosen for seed in range(4000))  # type: ignore[attr-defined]
    assert counts["dear"] == 0
    assert counts["cheap"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_weighted_needs_weights() -> None:
    with pytest.raises(ValueError, match="needs positive `weights`"):
        RouteConfig(policy="weighted", candidates=("a",))
    with pytest.raises(ValueError, match="non-candidates"):
        RouteConfig(policy="weighted", candidates=("a",), weights={"b": 1})


# ---- properties -----------------------------------------------------------------------------

prices = st.floats(min_value=0, max_value=50, allow_nan=False)
latencies = st.floats(min_value=1, max_value=5000, allow_nan=False)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[str, BackendProfile], dict[str, Availability], RequestSummary]:
    count = draw(st.integers(min_value=1, max_value=8))
    profiles = {
        f"b{i}": BackendProfile(
            f"b{i}",
            draw(prices),
            draw(prices),
            context_window=draw(st.none() | st.integers(min_value=50, max_value=4000)),
            latency_prior=LatencyPrior(draw(latencies), draw(st.floats(0, 100))),
        )
        for i in range(count)
    }
    availability = {
        name: Availability(draw(st.booleans()) or name == "b0", "down", True) for name in profiles
    }
    hints = RoutingHints(
        latency_budget_ms=draw(st.none() | latencies),
        max_cost_usd=draw(st.none() | st.floats(min_value=1e-6, max_value=1)),
    )
    summary = RequestSummary(
        prompt_text="y" * draw(st.integers(0, 4000)),
        max_tokens=draw(st.none() | st.integers(1, 2000)),
        hints=hints,
        seed=draw(st.integers(0, 2**32)),
    )
    return profiles, availability, summary


def decide(
    policy: str, scenario: tuple[dict[str, BackendProfile], dict[str, Availability], RequestSummary]
) -> object:
    profiles, availability, summary = scenario
    route = RouteConfig(
        policy=policy,
        candidates=tuple(profiles),
        weights={n: 1.0 for n in profiles} if policy == "weighted" else {},
    )
    r = Router(RoutingConfig(routes={"r": route}), profiles)
    try:
        return r.decide("r", availability, summary)
    except (NoBackendAvailable, BudgetInfeasible):
        return None


POLICIES: Sequence[str] = ("cheapest", "fastest", "balanced", "ordered", "weighted")


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_cheapest_never_picks_a_costlier_eligible_candidate(scenario: object) -> None:
    decision = decide("cheapest", scenario)  # type: ignore[arg-type]
    if decision is None or decision.budget_infeasible:  # type: ignore[attr-defined]
        return
    eligible = [e for e in decision.evaluations if e.eligible]  # type: ignore[attr-defined]
    chosen = next(e for e in eligible if e.backend == decision.chosen)  # type: ignore[attr-defined]
    assert all(chosen.estimate.cost_usd <= e.estimate.cost_usd for e in eligible)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.sampled_from(POLICIES))
def test_nothing_ineligible_is_chosen(scenario: object, policy: str) -> None:
    decision = decide(policy, scenario)  # type: ignore[arg-type]
    if decision is None:
        return
    chosen = next(e for e in decision.evaluations if e.backend == decision.chosen)  # type: ignore[attr-defined]
    if decision.budget_infeasible:  # type: ignore[attr-defined]
        assert all(r.startswith("predicted latency") for r in chosen.reasons)
    else:
        assert chosen.eligible and not chosen.reasons


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.sampled_from(POLICIES))
def test_decisions_are_deterministic(scenario: object, policy: str) -> None:
    assert decide(policy, scenario) == decide(policy, scenario)  # type: ignore[arg-type]


# ---- tasks ----------------------------------------------------------------------------------


def bag_of_words(texts: Sequence[str]) -> list[list[float]]:
    """A tiny deterministic embedder for unit tests: normalised counts over a vocabulary."""
    vocabulary = ["python", "code", "bug", "solve", "integral", "hello", "day", "math"]
    vectors = []
    for text in texts:
        counts = [float(text.lower().count(word)) for word in vocabulary]
        norm = sum(c * c for c in counts) ** 0.5 or 1.0
        vectors.append([c / norm for c in counts])
    return vectors


def test_task_precedence_hint_keyword_classifier_default() -> None:
    config = RoutingConfig(
        tasks={
            "code": TaskConfig(examples=("fix this python bug",), keywords=(r"\bstack ?trace\b",)),
            "math": TaskConfig(examples=("solve the integral",)),
        },
        default_task="chat",
    )
    classifier = TaskClassifier(config, bag_of_words)
    assert classifier.classify("solve it", hint="code").source == "hint"
    keyword = classifier.classify("here is my Stack Trace, solve the integral")
    assert (keyword.task, keyword.source) == ("code", "keyword")
    learned = classifier.classify("please solve this integral")
    assert (learned.task, learned.source) == ("math", "classifier")
    assert classifier.classify("hello, nice day").task == "chat"
