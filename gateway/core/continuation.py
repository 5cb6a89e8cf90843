"""Continuing a stream that broke after the client got part of the answer: the text already
sent goes to the next backend of the decision, as a prefill where the backend takes one (a
final assistant turn it carries on from) or with a continuation prompt where it does not,
and that backend's events are passed on as if they were the rest of the first stream.

The client's stream stays one well-formed stream: the first stream's id on every event, no
second role event, no text sent twice (a prefill never repeats it; a leading space already
sent is not doubled), one usage object that adds up what every backend billed, and the
finishing event naming the continuation (`x_gateway_continuation`). Chat completions and
completions, the wire the Messages and Responses fronts translate from; tool calls already
streamed, `n > 1` and a list of prompts are not continued (they end with the error event)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

from deployments import Endpoint

# Said to a backend that cannot continue a final assistant turn by itself.
CONTINUE_PROMPT = (
    "Your answer above was cut off. Continue it from exactly where it stops: do not repeat "
    "any of it, do not start over, add no preface."
)
FIELD = "x_gateway_continuation"  # on the finishing event of a continued stream
# After a continuation prompt, the new text held back before it is sent: enough to see it
# repeat the end of the text sent (longer: while it repeats the text from its start).
HOLD_CHARS = 64


class Style(enum.Enum):
    """How a backend continues a text: a final assistant turn it carries on from (vLLM's
    `continue_final_message`, or Anthropic's prefill), or a continuation prompt."""

    VLLM_PREFILL = "prefill"
    ASSISTANT_PREFILL = "assistant_prefill"
    PROMPT = "prompt"


STYLES = {
    "vllm": Style.VLLM_PREFILL,
    "fake": Style.VLLM_PREFILL,
    "anthropic": Style.ASSISTANT_PREFILL,
}


def style_of(kind: str) -> Style:
    """An OpenAI-compatible provider may not take a prefill (OpenAI's does not): a prompt."""
    return STYLES.get(kind, Style.PROMPT)


@dataclass(slots=True)
class Sent:
    """What a chat-wire stream (chat completions or completions) has sent the client."""

    endpoint: Endpoint
    id: str | None = None
    parts: list[str] = field(default_factory=list)
    tokens: int = 0  # text events: one token each, as the relay counts them
    tool_calls: bool = False
    several: bool = False  # a choice other than the first: `n > 1`
    finished: bool = False
    finish_reason: str | None = None
    # Chunks not read yet: a stream is read only when it breaks or ends (`settle`), so the
    # relay of each token pays an append, not a JSON parse.
    pending: list[bytes] = field(default_factory=list)

    def observe(self, ready: bytes) -> None:
        self.pending.append(ready)

    def settle(self) -> Sent:
        """Read what was observed since the last time (the fields are up to date after)."""
        pending, self.pending = self.pending, []
        for ready in pending:
            self._read(ready)
        return self

    def _read(self, ready: bytes) -> None:
        if b"data: {" not in ready:
            return
        chat = self.endpoint == "chat/completions"
        for event in ready.split(b"\n\n"):
            if not event.startswith(b"data: {"):
                continue
            try:
                data = orjson.loads(event[6:])
            except orjson.JSONDecodeError:
                continue
            self.id = self.id or data.get("id")
            for choice in data.get("choices") or ():
                self._choice(choice, chat)

    def _choice(self, choice: dict[str, Any], chat: bool) -> None:
        if choice.get("index", 0):
            self.several = True
        part = choice.get("delta") or {} if chat else choice
        if chat and part.get("tool_calls"):
            self.tool_calls = True
        text = part.get("content") if chat else part.get("text")
        if text:
            self.parts.append(text)
            self.tokens += 1
        if choice.get("finish_reason"):
            self.finished = True
            self.finish_reason = choice["finish_reason"]

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def why_not(self, body: dict[str, Any]) -> str | None:
        """Why this stream cannot be continued (None: it can)."""
        if self.tool_calls:
            return "tool-call arguments were streamed: resuming them could corrupt the call"
        if self.several or (body.get("n") or 1) > 1:
            return "n > 1: each choice would need its own continuation"
        if self.endpoint == "completions" and not isinstance(body.get("prompt"), str):
            return "a list of prompts"
        if self.finished:
            return "the answer had finished"
        return None


def continued_body(
    endpoint: Endpoint, body: dict[str, Any], sent: Sent, style: Style
) -> dict[str, Any]:
    """The request for the rest of the answer: the text sent so far, as a prefill or with the
    continuation prompt, and what is left of its output limit."""
    text = sent.text
    result = dict(body)
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int):
            result[name] = max(1, body[name] - sent.tokens)
    if endpoint == "completions":
        result["prompt"] = body["prompt"] + text
        return result
    messages = list(body.get("messages") or [])
    if style is Style.ASSISTANT_PREFILL:
        # Anthropic refuses a final assistant turn ending in whitespace; the model's next
        # token brings the space back (and a doubled one is dropped: `Segment`).
        messages.append({"role": "assistant", "content": text.rstrip()})
    else:
        messages.append({"role": "assistant", "content": text})
    if style is Style.VLLM_PREFILL:
        result["continue_final_message"] = True
        result["add_generation_prompt"] = False
    elif style is Style.PROMPT:
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    result["messages"] = messages
    return result


@dataclass(frozen=True, slots=True)
class Continuation:
    """One hand-over: the backend that broke, the one that carried on, after how many tokens."""

    broke: str
    to: str
    after_tokens: int
    style: Style

    def describe(self) -> dict[str, Any]:
        return {
            "from": self.broke,
            "to": self.to,
            "after_tokens": self.after_tokens,
            "mode": self.style.value,
        }


def trim_overlap(sent: str, rest: str, shortest: int = 6) -> str:
    """`rest` without what it says again of `sent`: the whole answer again (a model that started
    over), or the last words of it (a model that picked up a little way back). Only a
    continuation prompt needs this: a prefill carries on from the exact text."""
    said, head = sent.strip(), rest.lstrip()
    if said and head.startswith(said):
        return head[len(said) :]
    for size in range(min(len(said), len(head)), shortest - 1, -1):
        boundary = size == len(head) or not head[size].isalnum()
        if boundary and said.endswith(head[:size]) and not said[-size - 1 : -size].isalnum():
            return head[size:]
    return rest


class Segment:
    """Rewrites a continuing backend's events into the rest of the client's stream. After a
    continuation prompt, its first text is held back until it is long enough to tell what it
    repeats of the text sent (`trim_overlap`)."""

    def __init__(
        self, sent: Sent, done: list[Continuation], billed: tuple[int, int], style: Style
    ) -> None:
        self.sent = sent.settle()
        self.done = done
        self.billed = billed  # (prompt, completion) tokens earlier backends billed
        self._trim = sent.text[-1:].isspace()  # drop one leading space of the next text
        self._said = sent.text
        # Text held back (None: nothing is): as much as the sent text, and a little more.
        prompted = style is Style.PROMPT and sent.endpoint == "chat/completions"
        self._held: str | None = "" if prompted else None

    def __call__(self, ready: bytes) -> bytes:
        out = []
        for event in ready.split(b"\n\n"):
            if event.startswith(b"data: {"):
                event = self._event(orjson.loads(event[6:]))
                if not event:
                    continue
            out.append(event)
        return b"\n\n".join(out)

    def _text(self, text: str, last: bool) -> str | None:
        """The text to send of `text` (None: held back for now)."""
        if self._held is not None:
            self._held += text
            head, said = self._held.lstrip(), self._said.strip()
            # Held while it may still be the answer starting over (a prefix of the text sent),
            # or while it is shorter than any repeat of the text's end worth finding.
            if not last and (len(head) < HOLD_CHARS or (said.startswith(head) and head != said)):
                return None
            text, self._held = trim_overlap(self._said, self._held), None
        if text and self._trim:
            text = text[1:] if text[:1].isspace() else text
            self._trim = False
        return text

    def _event(self, data: dict[str, Any]) -> bytes:
        data["id"] = self.sent.id or data.get("id")
        chat = self.sent.endpoint == "chat/completions"
        key = "content" if chat else "text"
        for choice in data.get("choices") or ():
            part = _delta(choice) if chat else choice
            if (
                chat
                and part.pop("role", None) is not None
                and not (
                    part.get("content") or part.get("tool_calls") or choice.get("finish_reason")
                )
            ):
                return b""  # the second backend's opening role event: the client had one
            finishing = bool(choice.get("finish_reason"))
            if part.get(key) or (finishing and self._held):
                text = self._text(part.get(key) or "", finishing)
                if text is None:
                    return b""
                part[key] = text
            if finishing:
                data[FIELD] = [c.describe() for c in self.done]
        usage = data.get("usage")
        if isinstance(usage, dict):
            data["usage"] = added(usage, self.billed)
        event = b"data: " + orjson.dumps(data)
        self.sent.observe(event)  # a later break continues from all of it
        return event


def _delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A chat choice's delta, made where there is none (so text can be put in it)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice["delta"] = {}
    return delta


def added(usage: dict[str, Any], billed: tuple[int, int]) -> dict[str, Any]:
    """`usage` with what earlier backends billed: one total for the whole stream."""
    prompt = int(usage.get("prompt_tokens") or 0) + billed[0]
    completion = int(usage.get("completion_tokens") or 0) + billed[1]
    return {**usage, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip
