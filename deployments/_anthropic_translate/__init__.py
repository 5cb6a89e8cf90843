"""OpenAI chat completions <-> Anthropic Messages, both ways: `_backend` puts the Messages API
behind the chat interface (the Anthropic backend); `_front` and `_front_stream` put it in
front of any chat backend (`POST /v1/messages`). Pure functions and translators; no I/O."""

from deployments._anthropic_translate._backend import (
    FINISH_REASONS,
    SAMPLING,
    StreamTranslator,
    chat_usage,
    native_params,
    to_chat_completion,
    to_messages_params,
)
from deployments._anthropic_translate._front import STOP_REASONS, to_chat_body, to_message
from deployments._anthropic_translate._front_stream import MessagesStream

__all__ = [
    "FINISH_REASONS",
    "SAMPLING",
    "STOP_REASONS",
    "MessagesStream",
    "StreamTranslator",
    "chat_usage",
    "native_params",
    "to_chat_body",
    "to_chat_completion",
    "to_message",
    "to_messages_params",
]
