"""OpenAI's chat completions, completions and embeddings: the pipeline's own language, so
this front translates nothing. It checks the caller before the body is read, hands the body
to the pipeline, and explains routing decisions."""

from gateway.fronts.chat.front import ChatFront

__all__ = ["ChatFront"]
