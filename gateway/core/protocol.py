"""OpenAI request shapes the gateway validates before routing.

They mirror OpenAI's spec for the fields whose type or range a backend would otherwise trip
over; unknown fields are allowed and passed through untouched (vendor extensions such as
vLLM's `top_k`). Validation happens once, here: backends receive the client's own dict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from gateway.errors import OpenAIError, from_validation_error, json_object

Temperature = Annotated[float, Field(ge=0, le=2, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True)]
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


class ImageURL(_Open):
    url: StrictStr
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Open):
    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: StrictStr | None = None
    image_url: ImageURL | None = None
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _payload_present(self) -> ContentPart:
        # Each part type needs its own field (OpenAI rejects {"type": "text"} alone).
        if self.type in ("text", "image_url", "refusal") and getattr(self, self.type) is None:
            raise ValueError(f"a {self.type!r} part needs a `{self.type}` field")
        return self


class FunctionCall(_Open):
    name: StrictStr
    arguments: StrictStr


class ToolCall(_Open):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None


class FunctionDefinition(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: dict[Literal["name"], StrictStr]


class JSONSchemaFormat(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a `json_schema` object")
        return self


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
    tools: Annotated[list[Tool], Field(min_length=1)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatCompletionRequest:
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice is only allowed when tools are specified")
        return self


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


class EmbeddingRequest(_Open):
    """OpenAI's embeddings request: one input or a batch (text, or token ids)."""

    model: StrictStr | None = Field(default=None, description="Backend, route or alias name.")
    input: (
        Annotated[StrictStr, Field(min_length=1)]
        | Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[StrictInt], Field(min_length=1)]
        | Annotated[list[Annotated[list[StrictInt], Field(min_length=1)]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, strict=True)] | None = None
    user: StrictStr | None = None


REQUEST_MODELS: dict[str, type[_Open]] = {
    "chat/completions": ChatCompletionRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}

# Roles whose messages carry their content in `content` (an assistant's may be tool calls).
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def _check_contents(messages: list[dict[str, Any]]) -> None:
    for index, message in enumerate(messages):
        if message.get("role") in _CONTENT_REQUIRED and message.get("content") is None:
            param = f"messages[{index}].content"
            if "content" not in message:
                raise OpenAIError(
                    f"Missing required parameter: '{param}'.",
                    status=400,
                    param=param,
                    code="missing_required_parameter",
                )
            raise OpenAIError(
                f"Invalid type for '{param}': expected one of a string or array of objects, "
                "but got null instead.",
                status=400,
                param=param,
                code="invalid_type",
            )


def parse_body(raw: bytes | dict[str, Any], endpoint: str) -> dict[str, Any]:
    """The client's JSON object, checked against OpenAI's shapes; it is passed on as it is."""
    data = json_object(raw)
    try:
        REQUEST_MODELS[endpoint].model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, data) from None
    if endpoint == "chat/completions":
        _check_contents(data["messages"])
    return data
