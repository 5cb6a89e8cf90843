"""OpenAI request shapes the gateway validates before routing.

They mirror OpenAI's spec for the fields whose type or range a backend would otherwise trip
over; unknown fields are allowed and passed through untouched (vendor extensions such as
vLLM's `top_k`). Validation happens once, here: backends receive the client's own dict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Temperature = Annotated[float, Field(ge=0, le=2, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True)]
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None


class _Sampling(_Open):
    model: StrictStr | None = Field(default=None, description="Backend, route or alias name.")
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None
    n: Annotated[int, Field(ge=1, le=128, strict=True)] | None = None
    max_tokens: Annotated[int, Field(ge=1, strict=True)] | None = None
    stop: Stop = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, strict=True)]] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1, strict=True)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20, strict=True)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1)]
        | Annotated[list[StrictInt], Field(min_length=1)]
        | Annotated[list[list[StrictInt]], Field(min_length=1)]
    )
    logprobs: Annotated[int, Field(ge=0, le=5, strict=True)] | None = None
    echo: StrictBool | None = None
    best_of: Annotated[int, Field(ge=1, le=20, strict=True)] | None = None
    suffix: StrictStr | None = None


REQUEST_MODELS: dict[str, type[_Sampling]] = {
    "chat/completions": ChatCompletionRequest,
    "completions": CompletionRequest,
}
