"""OpenAI's chat completion request body, and its translation into Sluice's.

JSON in -> `ChatBody` (validated) -> `ChatRequest` with the sampling params as
per-model overrides for every model of the router. `model` is `router` or
`router/model-id`; `split_model` parses it.

Messages keep their order: the last one becomes `message`, the ones before it
`message_history` (system, developer -> system; user, assistant and tool are
kept; assistant `tool_calls` and tool `tool_call_id` pass on; text parts of
non-user messages are joined; user messages keep their text and `image_url`
parts in order). `tools`, `tool_choice` (string or object form) and
`parallel_tool_calls` pass on as the request's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.chat import ChatRequest, ToolCallIn, ToolChoiceIn, ToolIn

PASSED_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "user",
)
"""Body fields sent on to every model as request parameters (OpenAI's names)."""


class ImageUrl(BaseModel):
    """`image_url` of an image part: a `data:` URL or an https URL, and `detail`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """One part of a message's content: `text`, or `image_url` (user messages)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None

    def to_sluice(self) -> dict[str, Any]:
        """The part in Sluice's shape."""
        if self.type == "image_url" and self.image_url is not None:
            return {"type": "image_url", "image_url": self.image_url.model_dump(exclude_none=True)}
        return {"type": "text", "text": self.text or ""}


class MessageIn(BaseModel):
    """One OpenAI chat message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content if part.type == "text")

    def to_sluice(self) -> dict[str, Any]:
        """The message in Sluice's shape (validated there)."""
        role = "system" if self.role == "developer" else self.role
        content: Any = self.text()
        if isinstance(self.content, list) and any(p.type == "image_url" for p in self.content):
            content = [part.to_sluice() for part in self.content]
        out: dict[str, Any] = {"role": role, "content": content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class StreamOptions(BaseModel):
    """`stream_options`: only `include_usage` has an effect."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    include_usage: bool = False


class ChatBody(BaseModel):
    """The body of `POST /v1/chat/completions` (fields Sluice does not use are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    # Sluice's own (`extra_body` in the OpenAI SDKs): the request's deadline budget
    deadline_ms: int | None = Field(
        default=None,
        ge=1,
        description="Sluice's own (`extra_body`): the request's deadline budget in "
        "milliseconds across all attempts and retry passes; the router's `deadline` caps it.",
    )

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def params(self) -> dict[str, Any]:
        """The request parameters every model receives (`max_completion_tokens` as
        `max_tokens`)."""
        out = {k: getattr(self, k) for k in PASSED_PARAMS if getattr(self, k) is not None}
        if self.max_completion_tokens is not None and "max_tokens" not in out:
            out["max_tokens"] = self.max_completion_tokens
        return out

    def to_chat_request(self, model_ids: Iterable[str]) -> ChatRequest:
        """Sluice's request: last message, history before it, params for each model id."""
        *history, last = (m.to_sluice() for m in self.messages)
        params = self.params()
        body: dict[str, Any] = {"message": last, "message_history": history}
        if self.deadline_ms is not None:
            body["deadline_ms"] = self.deadline_ms
        if self.tools is not None:
            body["tools"] = [tool.model_dump(exclude_none=True) for tool in self.tools]
        if isinstance(self.tool_choice, ToolChoiceIn):
            body["tool_choice"] = self.tool_choice.model_dump()
        elif self.tool_choice is not None:
            body["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = self.parallel_tool_calls
        if params:
            body["override_params"] = {model_id: dict(params) for model_id in model_ids}
        return ChatRequest.model_validate(body)


def split_model(model: str) -> tuple[str, str | None]:
    """`router` -> (router, None); `router/model-id` -> (router, model-id)."""
    router_id, sep, model_id = model.partition("/")
    return router_id, (model_id if sep else None)
