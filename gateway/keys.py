"""Keys, limits and budgets as steps of the pipeline: `authenticate` before anything else,
`admit` once the request is routed (its model, token and cost estimates known), and an
observer that settles each admitted request from its outcome record (actual tokens and cost,
streamed or not)."""

from __future__ import annotations

from collections.abc import Mapping

from access import AccessClient, AccessError, Caller, Need, Ticket
from gateway.attempts import Observer
from gateway.routing import Routed
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
        self._tickets: dict[int, Ticket] = {}  # id(record) -> its reservation

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        return await self.client.authenticate(authorization(headers))

    async def authenticate_admin(self, headers: Mapping[str, str]) -> Caller:
        caller = await self.authenticate(headers)
        if not caller.admin:
            raise AccessError(
                403, "admin_required", "This endpoint needs the master key or an admin key."
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

    async def admit(self, caller: Caller, routed: Routed, record: RequestRecord) -> dict[str, str]:
        """Check the model and reserve the request against the caller's limits; the answer's
        rate-limit headers."""
        self.client.check_model(caller, routed.prepared.target)
        chosen = routed.decision.chosen_evaluation
        need = Need()
        if chosen is not None:
            need.tokens = chosen.estimate.prompt_tokens + chosen.estimate.output_tokens
            need.usd = chosen.estimate.cost_usd
        ticket = await self.client.admit(caller, need)
        if ticket.accounts:
            self._tickets[id(record)] = ticket
        return ticket.headers

    def request_finished(self, record: RequestRecord) -> None:
        ticket = self._tickets.pop(id(record), None)
        if ticket is not None:
            tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
            self.client.finish(ticket, tokens, record.cost_usd or 0.0)

    def start(self) -> None:
        self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()
