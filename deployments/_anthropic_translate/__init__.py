"""OpenAI chat completions -> Anthropic Messages and back, for the Anthropic backend: it puts
the Messages API behind the chat interface. The other direction (`POST /v1/messages` in front
of any chat backend) is the gateway's Messages front (`gateway/fronts/messages/`). Pure
functions and translators; no I/O."""

from deployments._anthropic_translate._backend import (
    FINISH_REASONS,
    SAMPLING,
    StreamTranslator,
    native_params,
    to_chat_completion,
    to_messages_params,
)
from deployments._anthropic_translate._usage import chat_usage

__all__ = [
    "FINISH_REASONS",
    "SAMPLING",
    "StreamTranslator",
    "chat_usage",
    "native_params",
    "to_chat_completion",
    "to_messages_params",
]
