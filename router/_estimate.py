"""Cost and latency estimates for one backend and one request."""

from __future__ import annotations

from dataclasses import dataclass

from router._profile import BackendProfile
from router._stats import LatencySnapshot

# An idle self-hosted replica is a sunk cost; a request on it is charged at least this share.
MIN_UTILISATION = 0.05


@dataclass(slots=True)  # built per candidate per request: not frozen, for speed
class Estimate:
    prompt_tokens: int
    output_tokens: int
    output_tokens_source: str  # "max_tokens", "history" or "default"
    cost_usd: float
    latency_ms: float  # at the route's quantile, queueing and cold start included
    queue_ms: float
    latency_source: str  # "measured" or "prior"
    cold_start_ms: float = 0.0  # no replica running: until one is expected to be
    # The most this request can cost here: every choice (`n`, `best_of`) at its output limit
    # (`max_tokens`, else the caller's cap within the context window); None: unbounded.
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None

    @property
    def capacity_ms(self) -> float:
        """What waiting for capacity adds: queueing behind other requests, or a cold start."""
        return self.queue_ms + self.cold_start_ms


def estimate(
    profile: BackendProfile,
    snapshot: LatencySnapshot,
    prompt_tokens: int,
    max_tokens: int | None,
    default_output_tokens: int,
    quantile: str,
    cold_start_ms: float = 0.0,
    choices: int = 1,
    output_cap: int | None = None,
) -> Estimate:
    """`choices`: completions billed per request (`n`, `best_of`); `output_cap`: the output
    limit the gateway sets where the request sets none (a budgeted caller's)."""
    if max_tokens is not None:
        output_tokens, source = max_tokens, "max_tokens"
    elif snapshot.mean_output_tokens is not None:
        output_tokens, source = max(1, round(snapshot.mean_output_tokens)), "history"
    else:
        output_tokens, source = default_output_tokens, "default"

    ttft = snapshot.ttft_p90_ms if quantile == "p90" else snapshot.ttft_ms
    tpot = snapshot.tpot_p90_ms if quantile == "p90" else snapshot.tpot_ms
    service_ms = ttft + output_tokens * tpot
    # Requests beyond capacity wait for a slot: about one mean service time per full round.
    waiting = max(0, snapshot.in_flight + 1 - profile.capacity)
    mean_service = snapshot.ttft_ms + output_tokens * snapshot.tpot_ms
    queue_ms = waiting / profile.capacity * mean_service if waiting else 0.0

    limit = max_tokens if max_tokens is not None else output_cap
    if limit is not None and max_tokens is None and profile.context_window is not None:
        limit = max(1, min(limit, profile.context_window - prompt_tokens))
    cost = _tokens_usd(profile, prompt_tokens, output_tokens * choices)
    max_cost = None if limit is None else _tokens_usd(profile, prompt_tokens, limit * choices)
    if profile.gpu_hour_usd:
        # The replica's hour is shared by `capacity` concurrent requests at saturation; charge
        # this request its share of the time it occupies, scaled by how busy the replica is.
        utilisation = min(1.0, max(MIN_UTILISATION, (snapshot.in_flight + 1) / profile.capacity))
        seconds = mean_service / 1000.0
        share = profile.gpu_hour_usd / 3600.0 * seconds / profile.capacity * utilisation
        cost += share
        if max_cost is not None and limit is not None:  # the replica's time for every token
            max_cost += share * max(1.0, limit * choices / max(1, output_tokens))
    return Estimate(
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        output_tokens_source=source,
        cost_usd=cost,
        latency_ms=service_ms + queue_ms + cold_start_ms,
        queue_ms=queue_ms,
        latency_source=snapshot.source,
        cold_start_ms=cold_start_ms,
        max_output_tokens=limit,
        max_cost_usd=max_cost,
    )


def _tokens_usd(profile: BackendProfile, prompt_tokens: int, output_tokens: int) -> float:
    return (prompt_tokens * profile.input_per_mtok + output_tokens * profile.output_per_mtok) / 1e6
