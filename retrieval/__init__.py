"""Files and vector stores (OpenAI's `/v1/files` and `/v1/vector_stores`), and search over
them for the Responses API's `file_search` tool and routes' `retrieval:`: documents
extracted (text, Markdown, HTML, PDF), cut into overlapping chunks, embedded by an injected
function, kept in SQL (SQLite or PostgreSQL) and searched exactly in memory, by vectors and
BM25. Imports none of the gateway's other packages but `storage`."""

from retrieval._chunk import Chunk, chunk, count_tokens
from retrieval._config import Chunking, RetrievalConfig
from retrieval._errors import RetrievalError
from retrieval._extract import extract
from retrieval._filters import Match, compile_filter
from retrieval._index import Index, unit, words
from retrieval._objects import Passage
from retrieval._params import SearchOptions, search_options
from retrieval._service import Embed, VectorStores
from retrieval._store import Owner, SqlStore

__all__ = [
    "Chunk",
    "Chunking",
    "Embed",
    "Index",
    "Match",
    "Owner",
    "Passage",
    "RetrievalConfig",
    "RetrievalError",
    "SearchOptions",
    "SqlStore",
    "VectorStores",
    "chunk",
    "compile_filter",
    "count_tokens",
    "extract",
    "search_options",
    "unit",
    "words",
]
