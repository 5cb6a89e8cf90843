"""Keys, limits and budgets as steps of the pipeline: `authenticate` before anything else,
`admit` once the request is routed (its model, token and cost estimates known), and an
observer that settles each admitted request from its outcome record (actual tokens and cost,
streamed or not)."""

from __future__ import annotations

from collections.abc import Mapping

from access import AccessClient, AccessError, Caller, Need, SessionClient, Ticket
from gateway.core.attempts import Observer
from gateway.core.routing import Routed
from llmops import RequestRecord


def authorization(headers: Mapping[str, str]) -> str | None:
    """The client's credentials: `Authorization`, or Anthropic's `x-api-key` as a bearer."""
    value = headers.get("authorization")
    if value is None and (api_key := headers.get("x-api-key")):
        return f"Bearer {api_key}"
    return value


class KeyGate(Observer):
    """One per ingress replica, around its `AccessClient`."""

    def __init__(self, client: AccessClient) -> None:
        self.client = client
        self.sessions = SessionClient(client)  # the console's sign-ins
        self._tickets: dict[int, Ticket] = {}  # id(record) -> its reservation

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return await self.client.authenticate(authorization(headers))

    async def authenticate_admin(self, headers: Mapping[str, str]) -> Caller:
        caller = await self.authenticate(headers)
        if not caller.admin:
            raise AccessError(
                "This endpoint needs the master key or an admin key.",
                status=403,
                code="admin_required",
            )
        return caller

    @staticmethod
    def describe(record: RequestRecord, caller: Caller) -> None:
        key = caller.key
        if key is None:
            record.key_id, record.key_name = "master", "master"
            return
        record.key_id, record.key_name, record.team = key.id, key.name, key.team
        record.key_metadata = key.metadata

    async def gate(self, headers: Mapping[str, str]) -> Caller:
        """Who is calling, refused at once if this replica knows the caller is over a limit:
        before the body is parsed, routed or tokenized."""
        caller = await self.authenticate(headers)
        self.client.precheck(caller)
        return caller

    async def meter(self, headers: Mapping[str, str]) -> Caller:
        """An unbilled call (routing explain, count_tokens, feedback): authenticated and
        counted against the caller's request rate like any other request."""
        caller = await self.gate(headers)
        ticket = await self.client.admit(caller, Need())
        self.client.finish(ticket, 0.0, 0.0)
        return caller

    def output_cap(self, caller: Caller) -> int | None:
        """The output limit of a request from a budgeted caller that sets none: its worst
        case must be known to be reserved (None: no budget, no cap)."""
        if any(p is not None and p.budget_usd is not None for p in (caller.key, caller.team)):
            return self.client.config.budgeted_max_tokens
        return None

    async def admit(self, caller: Caller, routed: Routed, record: RequestRecord) -> dict[str, str]:
        """Check the model and reserve the request's worst case against the caller's limits
        (refused if it does not fit); the answer's rate-limit headers."""
        self.client.check_model(caller, routed.prepared.target)
        chosen = routed.decision.chosen_evaluation
        need = Need(usd=routed.worst_cost_usd())
        if chosen is not None:
            estimate = chosen.estimate
            need.tokens = estimate.prompt_tokens + (
                estimate.max_output_tokens or estimate.output_tokens
            )
        return await self._admit(caller, need, record)

    async def admit_shadow(self, caller: Caller, usd: float, record: RequestRecord) -> bool:
        """Reserve a shadow request's estimate against the caller who caused it; False (no
        shadow) when it does not fit: the primary request never pays for a refused copy."""
        try:
            await self._admit(caller, Need(usd=usd), record)
        except AccessError:
            return False
        return True

    async def _admit(self, caller: Caller, need: Need, record: RequestRecord) -> dict[str, str]:
        ticket = await self.client.admit(caller, need)
        if ticket.accounts:
            self._tickets[id(record)] = ticket
        return ticket.headers

    def request_finished(self, record: RequestRecord) -> None:
        ticket = self._tickets.pop(id(record), None)
        if ticket is not None:
            # A cache hit used no provider tokens; its cost is 0 (`Accounting`).
            spent = record.cache != "hit"
            tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0) if spent else 0
            self.client.finish(ticket, tokens, record.cost_usd or 0.0)

    def start(self) -> None:
        self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()
