"""A streamed chat completion (OpenAI SSE bytes) as the Responses API's typed event stream:
`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta` ... `.done`,
`response.function_call_arguments.delta` ... `.done`, `response.output_item.done`, and
`response.completed` (or `.incomplete`, or `.failed` for a stream that broke), numbered."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from deployments import ChatStreamTranslator
from gateway.fronts.responses.translate import call_item, envelope, finish, message_item


class ResponsesStream(ChatStreamTranslator):
    """A chat stream as Responses events (`feed`, then `close`). `response` is the finished
    `Response` once the stream has ended."""

    def __init__(
        self,
        body: dict[str, Any],
        response_id: str,
        searched: Sequence[dict[str, Any]] = (),
        annotate: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        """`searched`: `file_search_call` items the gateway ran before the model answered;
        `annotate`: the citations of the finished text."""
        super().__init__()
        self.response = envelope(body, response_id, str(body.get("model")))
        self._searched = list(searched)
        self._annotate = annotate
        self._sequence = 0
        self._started = False
        self._item: dict[str, Any] | None = None  # the output item being streamed
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool_calls index -> item
        self._finish_reason: str | None = None

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _broken(self, message: str) -> bytes:
        self.response.update(status="failed", error={"code": "server_error", "message": message})
        return self._event("response.failed", response=self.response)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        snapshot = copy.deepcopy(self.response)
        out = self._event("response.created", response=snapshot)
        out += self._event("response.in_progress", response=snapshot)
        return out + b"".join(self._searching(item) for item in self._searched)

    def _searching(self, item: dict[str, Any]) -> bytes:
        """A file search the gateway ran, as OpenAI streams one."""
        self.response["output"].append(item)
        index = len(self.response["output"]) - 1
        running = {**item, "status": "in_progress", "results": None}
        out = self._event("response.output_item.added", output_index=index, item=running)
        for stage in ("in_progress", "searching", "completed"):
            kind = f"response.file_search_call.{stage}"
            out += self._event(kind, output_index=index, item_id=item["id"])
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _open(self, item: dict[str, Any]) -> bytes:
        out = self._close_item()
        self._item = item
        self.response["output"].append(item)
        index = len(self.response["output"]) - 1
        out += self._event("response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            part = item["content"][0]
            out += self._event(
                "response.content_part.added",
                output_index=index,
                item_id=item["id"],
                content_index=0,
                part=part,
            )
        return out

    def _close_item(self) -> bytes:
        item, self._item = self._item, None
        if item is None:
            return b""
        index, out = self.response["output"].index(item), b""
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            for number, annotation in enumerate(
                self._annotate(part["text"]) if self._annotate else []
            ):
                part["annotations"].append(annotation)
                out += self._event(
                    "response.output_text.annotation.added",
                    output_index=index,
                    item_id=item["id"],
                    content_index=0,
                    annotation_index=number,
                    annotation=annotation,
                )
            out += self._event(
                "response.output_text.done",
                output_index=index,
                item_id=item["id"],
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            out += self._event(
                "response.content_part.done",
                output_index=index,
                item_id=item["id"],
                content_index=0,
                part=part,
            )
        else:
            out += self._event(
                "response.function_call_arguments.done",
                output_index=index,
                item_id=item["id"],
                name=item["name"],
                arguments=item["arguments"],
            )
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _delta(self, choice: dict[str, Any]) -> bytes:
        delta, out = choice.get("delta") or {}, b""
        text = delta.get("content")
        if text:
            if self._item is None or self._item["type"] != "message":
                out += self._open(message_item("", status="in_progress"))
            item = self._item
            assert item is not None
            item["content"][0]["text"] += text
            index = len(self.response["output"]) - 1
            out += self._event(
                "response.output_text.delta",
                output_index=index,
                item_id=item["id"],
                content_index=0,
                delta=text,
                logprobs=[],
            )
        for call in delta.get("tool_calls") or []:
            position = call.get("index", 0)
            function = call.get("function") or {}
            if position not in self._calls:
                item = call_item(
                    call.get("id") or "", function.get("name") or "", "", status="in_progress"
                )
                self._calls[position] = item
                out += self._open(item)
            item = self._calls[position]
            if function.get("arguments") and item is self._item:
                item["arguments"] += function["arguments"]
                index = self.response["output"].index(item)
                out += self._event(
                    "response.function_call_arguments.delta",
                    output_index=index,
                    item_id=item["id"],
                    delta=function["arguments"],
                )
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        return out

    def _finish(self) -> bytes:
        out = self._start({}) + self._close_item()
        finish(self.response, self._finish_reason, self._usage)
        kind = (
            "response.incomplete"
            if self.response["status"] == "incomplete"
            else "response.completed"
        )
        return out + self._event(kind, response=self.response)
