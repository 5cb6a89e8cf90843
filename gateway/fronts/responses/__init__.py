"""OpenAI's Responses API (`/v1/responses`): stored conversations, translated to chat for any
backend, or passed through to backends that speak it."""

from gateway.fronts.responses.front import ResponsesAPI

__all__ = ["ResponsesAPI"]
