"""The Responses API's `file_search` tool, run by the gateway for every backend: the
request's question is searched in the named vector stores (the caller's, or its team's),
the passages are added to the request's instructions, and the response gets a
`file_search_call` output item (with `results` when `include` asks for
`file_search_call.results`) and `file_citation` annotations on its text.

Citations: the files whose passages share words with the answer (in the order they ranked),
or the best passage's file when none does; each at the end of the text, as the gateway does
not know which sentence came from which passage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.retrieving import Library, context_text, last_user_text, with_context
from gateway.errors import OpenAIError
from gateway.fronts.responses.translate import new_id
from retrieval import Owner, Passage, SearchOptions, search_options, words

RESULTS = "file_search_call.results"
_SHARED_WORDS = 2  # an answer naming one word of a passage may do so by chance


@dataclass(frozen=True)
class FileSearch:
    store_ids: tuple[str, ...]
    options: SearchOptions
    include_results: bool
    param: str


def _bad(message: str, param: str) -> OpenAIError:
    return OpenAIError(message, status=400, param=param, code="invalid_value")


def parse(body: dict[str, Any], default_results: int) -> FileSearch | None:
    """The request's `file_search` tool, checked (None: it has none): its ranking options
    as the search endpoint checks them."""
    found = [
        (i, t) for i, t in enumerate(body.get("tools") or []) if t.get("type") == "file_search"
    ]
    if not found:
        return None
    if len(found) > 1:
        raise _bad("Give one file_search tool (it may name several stores).", "tools")
    index, tool = found[0]
    param = f"tools[{index}]"
    ids = tool.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise _bad("vector_store_ids is a non-empty list of ids.", f"{param}.vector_store_ids")
    options = search_options(tool, default_results, f"{param}.")
    include = RESULTS in (body.get("include") or [])
    return FileSearch(tuple(ids), options, include, param)


@dataclass(frozen=True)
class Searched:
    """A search the gateway ran: its output item, and what the answer cites from."""

    item: dict[str, Any]
    passages: tuple[Passage, ...]
    question: str

    def annotate(self, text: str) -> list[dict[str, Any]]:
        return citations(text, self.passages, self.question)


async def run(
    library: Library, search: FileSearch, owner: Owner, chat: dict[str, Any], headers: Any
) -> tuple[Searched, dict[str, Any]]:
    """Search for the chat body's last user turn; the body with the passages added."""
    stores = library.stores()
    await stores.check_stores(owner, search.store_ids, f"{search.param}.vector_store_ids")
    question = last_user_text(chat)
    if not question.strip():
        raise _bad("file_search needs a user message to search for.", "input")
    passages = await stores.search(search.store_ids, question, search.options, headers)
    searched = Searched(
        call_item(question, passages, search.include_results), tuple(passages), question
    )
    if passages:
        chat = with_context(chat, context_text(passages, library.config.passage_chars))
    return searched, chat


def call_item(query: str, passages: Sequence[Passage], include: bool) -> dict[str, Any]:
    results = [
        {
            "file_id": p.file_id,
            "filename": p.filename,
            "score": round(p.score, 6),
            "text": p.text,
            "attributes": p.attributes,
        }
        for p in passages
    ]
    return {
        "id": new_id("fs"),
        "type": "file_search_call",
        "status": "completed",
        "queries": [query],
        "results": results if include else None,
    }


def citations(text: str, passages: Sequence[Passage], question: str) -> list[dict[str, Any]]:
    if not text.strip() or not passages:
        return []
    said = set(words(text)) - set(words(question))
    cited: dict[str, Passage] = {}
    for passage in passages:
        if passage.file_id not in cited and len(said & set(words(passage.text))) >= _SHARED_WORDS:
            cited[passage.file_id] = passage
    chosen = list(cited.values()) or [passages[0]]
    return [
        {"type": "file_citation", "file_id": p.file_id, "filename": p.filename, "index": len(text)}
        for p in chosen
    ]


def annotate(response: dict[str, Any], passages: Sequence[Passage], question: str) -> None:
    """Citations on a whole response's message text, in place."""
    for item in response["output"]:
        if item.get("type") == "message":
            part = item["content"][0]
            part["annotations"] = citations(part["text"], passages, question)
