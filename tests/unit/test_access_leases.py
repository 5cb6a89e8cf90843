"""The lease arithmetic, whatever the interleaving of replicas: the real `AccessClient`s
(one per replica) over one `AccessState`, on a clock the test moves."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access import (
    WINDOW_S,
    AccessClient,
    AccessError,
    AccessState,
    AuthConfig,
    LocalTransport,
    Need,
    lease_size,
    overshoot_bound,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Yielding(LocalTransport):
    """The state in process, but every call lets other requests run meanwhile, as a remote
    call does: renewals interleave with admissions on the same replica."""

    async def call(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        answer = await super().call(op, payload)
        await asyncio.sleep(0)
        return answer


def cluster(
    tmp: Path, replicas: int, fraction: float, key: dict[str, Any], team: dict[str, Any] | None
) -> tuple[Clock, AccessState, list[AccessClient], str]:
    clock = Clock()
    state = AccessState(tmp / "access.sqlite", fraction, 2.0, clock)
    config = AuthConfig(mode="keys", lease_fraction=fraction)
    if team is not None:
        assert "ok" in state.call("create", {"kind": "team", "spec": team, "master": True})
    created = state.call("create", {"kind": "key", "spec": key, "master": True})["ok"]
    clients = [
        AccessClient(config, Yielding(state), None, replica=f"r{i}", clock=clock)
        for i in range(replicas)
    ]
    return clock, state, clients, f"Bearer {created['key']}"


async def try_admit(client: AccessClient, auth: str, need: Need) -> Any:
    caller = await client.authenticate(auth)
    try:
        return await client.admit(caller, need)
    except AccessError as exc:
        assert exc.status == 429
        return None


def most_in_any_window(times: list[float], amounts: list[float] | None = None) -> float:
    """The largest total of admissions inside any 60 s window."""
    amounts = amounts or [1.0] * len(times)
    window: deque[tuple[float, float]] = deque()
    total = best = 0.0
    for at, amount in zip(times, amounts, strict=True):
        window.append((at, amount))
        total += amount
        while window[0][0] <= at - WINDOW_S:
            total -= window.popleft()[1]
        best = max(best, total)
    return best


events = st.lists(
    st.tuples(
        st.integers(0, 3),  # which replica
        st.sampled_from([0.0, 0.01, 0.1, 0.3, 1.5, 10.0, 40.0]),  # seconds before it
        st.booleans(),  # does an earlier request of that replica finish first
    ),
    min_size=10,
    max_size=300,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    replicas=st.integers(1, 4),
    limit=st.integers(1, 80),
    fraction=st.sampled_from([0.05, 0.1, 0.25]),
    script=events,
)
def test_requests_per_minute_hold_within_the_documented_overshoot(
    tmp_path_factory: pytest.TempPathFactory,
    replicas: int,
    limit: int,
    fraction: float,
    script: list[tuple[int, float, bool]],
) -> None:
    tmp = tmp_path_factory.mktemp("leases")
    clock, _, clients, auth = cluster(tmp, replicas, fraction, {"name": "k", "rpm": limit}, None)
    admitted: list[float] = []

    async def admit(replica: int) -> None:
        ticket = await try_admit(clients[replica], auth, Need())
        if ticket is not None:
            admitted.append(clock.now)
            tickets[replica].append(ticket)

    tickets: list[list[Any]] = [[] for _ in clients]

    async def run() -> None:
        together: list[Any] = []  # requests arriving at the same moment run concurrently
        for replica, wait, finish in script:
            if wait > 0 and together:
                await asyncio.gather(*together)
                together = []
            clock.now += wait
            replica %= replicas
            if finish and tickets[replica]:
                clients[replica].finish(tickets[replica].pop(0), 0, 0)
            if wait > 1.0:
                await clients[replica].sync()  # the background loop's turn
            together.append(admit(replica))
        await asyncio.gather(*together)

    asyncio.run(run())
    bound = limit + overshoot_bound(limit, fraction, replicas)
    assert most_in_any_window(admitted) <= bound
    # ... and the limit is reachable: a lone replica asking steadily gets all of it.
    if replicas == 1 and len(script) >= limit and sum(w for _, w, _ in script) < 30:
        assert len(admitted) >= min(limit, len(script)) * 0.5


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    replicas=st.integers(1, 3),
    tpm=st.integers(100, 1500),
    sizes=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 400), st.sampled_from([0.0, 0.1, 0.5, 5.0])),
        min_size=30,
        max_size=150,
    ),
)
def test_tokens_per_minute_hold_when_estimates_are_right(
    tmp_path_factory: pytest.TempPathFactory,
    replicas: int,
    tpm: int,
    sizes: list[tuple[int, int, float]],
) -> None:
    tmp = tmp_path_factory.mktemp("tokens")
    clock, _, clients, auth = cluster(tmp, replicas, 0.05, {"name": "k", "tpm": tpm}, None)
    times: list[float] = []
    amounts: list[float] = []

    async def run() -> None:
        for replica, tokens, wait in sizes:
            clock.now += wait
            client = clients[replica % replicas]
            ticket = await try_admit(client, auth, Need(tokens=tokens))
            if ticket is not None:
                client.finish(ticket, tokens, 0)
                times.append(clock.now)
                amounts.append(tokens)

    asyncio.run(run())
    biggest = max((t for _, t, _ in sizes), default=0)
    lease = lease_size(tpm, 0.05, "tokens")
    assert most_in_any_window(times, amounts) <= tpm + replicas * max(lease, biggest)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    replicas=st.integers(1, 3),
    costs=st.lists(st.tuples(st.integers(0, 2), st.floats(0.0001, 0.003)), min_size=1, max_size=80),
)
def test_a_budget_stops_within_one_request_of_its_cost(
    tmp_path_factory: pytest.TempPathFactory,
    replicas: int,
    costs: list[tuple[int, float]],
) -> None:
    """Sequential requests whose cost is only known afterwards (the estimate says half)."""
    tmp = tmp_path_factory.mktemp("budget")
    budget = 0.01
    clock, state, clients, auth = cluster(
        tmp, replicas, 0.05, {"name": "k", "budget_usd": budget, "budget_period": "day"}, None
    )
    spent = 0.0

    async def run() -> None:
        nonlocal spent
        for replica, cost in costs:
            clock.now += 0.5
            client = clients[replica % replicas]
            ticket = await try_admit(client, auth, Need(usd=cost / 2))
            if ticket is not None:
                client.finish(ticket, 0, cost)
                spent += cost
        for client in clients:
            await client.aclose()

    asyncio.run(run())
    assert spent <= budget + max(cost for _, cost in costs) * replicas
    # Every cent admitted is in the store, nothing more.
    recorded = sum(
        state.store.spend_of(next(iter(state.store.principals.values())).entity).values()
    )
    assert recorded == pytest.approx(spent)


def test_parallel_slots_are_never_exceeded_across_replicas(tmp_path: Path) -> None:
    _, _, clients, auth = cluster(tmp_path, 3, 0.5, {"name": "k", "max_parallel": 4}, None)

    async def run() -> int:
        held = []
        for round_ in range(12):
            ticket = await try_admit(clients[round_ % 3], auth, Need())
            if ticket is not None:
                held.append(ticket)
        return len(held)

    assert asyncio.run(run()) == 4


def test_a_spent_budget_is_remembered_and_the_next_period_starts_fresh(tmp_path: Path) -> None:
    clock, wall = Clock(), [1_800_000_000.0]  # 2027-01-15, mid-day UTC
    config = AuthConfig(mode="keys", lease_fraction=0.05)

    def open_state() -> tuple[AccessState, AccessClient]:
        state = AccessState(tmp_path / "access.sqlite", 0.05, 2.0, clock, lambda: wall[0])
        return state, AccessClient(config, LocalTransport(state), None, clock=clock)

    state, client = open_state()
    spec = {"name": "k", "budget_usd": 0.01, "budget_period": "day"}
    auth = (
        "Bearer " + state.call("create", {"kind": "key", "spec": spec, "master": True})["ok"]["key"]
    )

    async def spend_until_refused() -> int:
        for n in range(100):
            ticket = await try_admit(client, auth, Need(usd=0.001))
            if ticket is None:
                return n
            client.finish(ticket, 0, 0.003)
            clock.now += 0.1
        return 100

    assert 3 <= asyncio.run(spend_until_refused()) <= 5
    asyncio.run(client.aclose())
    state.close()
    clock.now += 10
    state, client = open_state()  # a restart: the spend is read back, the key still refused
    assert asyncio.run(spend_until_refused()) == 0
    wall[0] += 86_400  # the next day
    clock.now += 10
    assert 3 <= asyncio.run(spend_until_refused()) <= 5
