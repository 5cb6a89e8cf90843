"""The `retrieval:` section: where files and vector stores are kept, how documents are cut
and embedded, and what each owner may store."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Chunking(_Frozen):
    """OpenAI's `static` chunking strategy (and its defaults, which `auto` means)."""

    max_chunk_size_tokens: int = Field(
        default=800, ge=100, le=4096, description="The most tokens in one chunk."
    )
    chunk_overlap_tokens: int = Field(
        default=400, ge=0, description="Tokens a chunk repeats from the one before it."
    )

    @model_validator(mode="after")
    def _overlap(self) -> Self:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class RetrievalConfig(_Frozen):
    """Files and vector stores (`/v1/files`, `/v1/vector_stores`) and the Responses API's
    `file_search` tool. Stored beside the ledger (its SQLite file, or the cluster's database
    when `database:` is set)."""

    embedding_model: str = Field(
        default="embed",
        description="The gateway model (a route or backend with the embeddings endpoint) that "
        "embeds chunks and queries: through the gateway's pipeline, so keys, cost and the "
        "ledger apply to them.",
    )
    path: str | None = Field(
        default=None,
        description="SQLite file of files, stores and chunks (default: the ledger's file). "
        "Unused with `database:`.",
    )
    chunking: Chunking = Field(
        default_factory=Chunking, description="How documents are cut where a request says `auto`."
    )
    text_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="BM25's share of a result's score (the rest: cosine similarity of the "
        "embeddings); 0: vectors only. A search may set its own "
        "(`ranking_options.hybrid_search`). docs/retrieval.md has the measured difference.",
    )
    max_file_bytes: int = Field(
        default=32 * MIB, ge=1, description="The largest file `POST /v1/files` takes."
    )
    quota_bytes: int = Field(
        default=512 * MIB,
        ge=0,
        description="What one key (or its team, for a team's keys) may store in files, in bytes.",
    )
    embed_batch: int = Field(
        default=64, ge=1, le=2048, description="Chunks per embeddings request while ingesting."
    )
    tool_max_num_results: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Passages `file_search` adds to a request when the tool sets no "
        "`max_num_results`.",
    )
    passage_chars: int = Field(
        default=2000, ge=100, description="The most characters of one passage given to a model."
    )
