"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) in front of
any chat backend, or passed through to backends that speak it."""

from gateway.fronts.messages.front import (
    AnthropicHandler,
    anthropic_error,
    count_tokens,
    serve_messages,
)
from gateway.fronts.messages.stream import MessagesStream
from gateway.fronts.messages.translate import STOP_REASONS, to_chat_body, to_message

__all__ = [
    "STOP_REASONS",
    "AnthropicHandler",
    "MessagesStream",
    "anthropic_error",
    "count_tokens",
    "serve_messages",
    "to_chat_body",
    "to_message",
]
