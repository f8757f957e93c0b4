"""Glide 0.1.0's chat request schema (HTTP chat and websocket chatStream).

A JSON object flows in; `ChatRequest.params_for(model_id, model_name)` gives the
`ChatParams` one attempt sends: history, then the message (or a per-model
override of it), with per-model parameter overrides, and the request's tools.

`override_params` takes both of Glide's shapes: a map keyed by model id or model
name (`{"my-model": {"message": {...}, "temperature": 0.2}}`), or one override
`{"model": "my-model", "message": {...}}` (also accepted under `override`, which
is what Glide's Python client sends).

Tools and images (Sluice's additions, all optional, in OpenAI's shapes): `tools`,
`tool_choice` and `parallel_tool_calls` beside `message`; assistant messages
may carry `tool_calls` (content may then be empty), `tool` messages answer one
call by `tool_call_id`, and a user message's `content` may be a list of parts
(`{"type": "text", "text"}` and `{"type": "image_url", "image_url": {"url"}}`).
A Glide 0.1.0 request has none of them and is read exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from protocol.images import ParsedImage, parse_image_url
from providers.types import (
    ChatParams,
    ContentPart,
    Message,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

Capability = Literal["tools", "images", "image_urls"]
"""What a request may need of a model beyond text (`ChatRequest.needs`)."""


class ImageUrlIn(BaseModel):
    """`image_url` of an image part: a `data:` URL (base64) or an https URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="A `data:<type>;base64,...` URL or an https URL.")
    detail: Literal["auto", "low", "high"] | None = None
    _parsed: ParsedImage | None = PrivateAttr(default=None)

    @property
    def parsed(self) -> ParsedImage:
        """The URL read once: the image part, or what is wrong with it."""
        if self._parsed is None:
            self._parsed = parse_image_url(self.url, self.detail)
        return self._parsed


class ContentPartIn(BaseModel):
    """One part of a message's content: text, or an image (user messages only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrlIn | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> ContentPartIn:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs `text`")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs `image_url: {url}`")
        return self


class FunctionIn(BaseModel):
    """A function the model may call: a name, a description, JSON-schema parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None


class ToolIn(BaseModel):
    """One entry of `tools` (OpenAI's shape; only function tools exist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"] = "function"
    function: FunctionIn

    def to_spec(self) -> ToolSpec:
        """The provider-side tool."""
        f = self.function
        return ToolSpec(f.name, f.description, f.parameters, f.strict)


class NamedFunction(BaseModel):
    """`tool_choice.function`: the one function to call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)


class ToolChoiceIn(BaseModel):
    """`tool_choice` object form: `{"type": "function", "function": {"name"}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["function"] = "function"
    function: NamedFunction


class ToolCallFunctionIn(BaseModel):
    """The function of a call an assistant message made: name and JSON arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: str = "{}"


class ToolCallIn(BaseModel):
    """A tool call in an assistant message of the history."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: ToolCallFunctionIn


class ChatMessageIn(BaseModel):
    """One message: role system/user/assistant/tool, non-empty content.

    Content may be empty (or null) only for an assistant message with `tool_calls`;
    a list of parts is taken on user messages (images) and as text elsewhere; a
    `tool` message answers the call `tool_call_id`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"] = "user"
    content: str | list[ContentPartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = Field(
        default=None, description="Sluice's own (OpenAI's shape): calls this assistant made."
    )
    tool_call_id: str | None = Field(
        default=None, description="Sluice's own: the call a `tool` message answers."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChatMessageIn:
        empty = not self.content
        if empty and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content must not be empty (only an assistant's tool calls may)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only tool messages carry a tool_call_id")
        if isinstance(self.content, list) and self.role != "user":
            if any(part.type == "image_url" for part in self.content):
                raise ValueError("only user messages may carry images")
        return self

    def images(self) -> Iterator[ParsedImage]:
        """The message's images, read."""
        if isinstance(self.content, list):
            for part in self.content:
                if part.image_url is not None:
                    yield part.image_url.parsed

    def to_message(self) -> Message:
        """The provider-side message."""
        content = self.content
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ()
        )
        if content is None or isinstance(content, str):
            return Message(self.role, content or "", self.name, calls, self.tool_call_id)
        parts: list[ContentPart] = []
        for part in content:
            if part.image_url is not None:
                parts.append(part.image_url.parsed.part)
            else:
                parts.append(TextPart(part.text or ""))
        text = "".join(part.text for part in parts if isinstance(part, TextPart))
        has_images = any(not isinstance(part, TextPart) for part in parts)
        return Message(
            self.role, text, self.name, calls, self.tool_call_id, tuple(parts) if has_images else ()
        )


class ModelOverride(BaseModel):
    """What to change when one particular model serves the request."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str | None = None
    message: ChatMessageIn | None = None

    @property
    def params(self) -> dict[str, Any]:
        """Vendor parameters given beside `message` (temperature, max_tokens, ...)."""
        extra = self.model_extra or {}
        nested = extra.get("params")
        out = {k: v for k, v in extra.items() if k != "params"}
        if isinstance(nested, dict):
            out.update(nested)
        return out


class ChatRequest(BaseModel):
    """Glide's ChatRequest / ChatStreamRequest body (envelope fields are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    message: ChatMessageIn
    message_history: list[ChatMessageIn] = Field(
        default_factory=list, validation_alias=AliasChoices("message_history", "messageHistory")
    )
    override_params: dict[str, ModelOverride] | None = Field(
        default=None,
        validation_alias=AliasChoices("override_params", "override", "overrideMessage"),
    )
    # Sluice's own (additive): this request's deadline budget in milliseconds,
    # across all attempts and retry passes; the router's `deadline` caps it.
    deadline_ms: int | None = Field(
        default=None,
        ge=1,
        description="Sluice's own: this request's deadline budget in milliseconds across "
        "all attempts and retry passes; the router's `deadline` caps it.",
    )
    tools: list[ToolIn] | None = Field(
        default=None, description="Sluice's own (OpenAI's shape): functions the model may call."
    )
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceIn | None = Field(
        default=None,
        description="Sluice's own (OpenAI's shape): `auto`, `none`, `required`, or one function.",
    )
    parallel_tool_calls: bool | None = Field(
        default=None,
        description="Sluice's own: whether the model may call several tools at once "
        "(passed to vendors that have the switch).",
    )
    _messages: tuple[Message, ...] | None = PrivateAttr(default=None)
    _tools: tuple[ToolSpec, ...] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _single_override(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in ("override_params", "override", "overrideMessage"):
            value = data.get(key)
            if isinstance(value, dict) and isinstance(value.get("model"), str):
                data = {**data, key: {value["model"]: value}}
        return data

    def override_for(self, model_id: str, model_name: str) -> ModelOverride | None:
        """The override for this model: by id first, else by model name."""
        if not self.override_params:
            return None
        return self.override_params.get(model_id) or self.override_params.get(model_name)

    def all_messages(self) -> Iterator[ChatMessageIn]:
        """History, the message and every override's message."""
        yield from self.message_history
        yield self.message
        for override in (self.override_params or {}).values():
            if override.message is not None:
                yield override.message

    def images(self) -> Iterator[ParsedImage]:
        """Every image of the request (history, message, overrides), read."""
        for message in self.all_messages():
            yield from message.images()

    def needs(self) -> frozenset[Capability]:
        """What a model must be able to do to serve this request: `tools` when it
        offers tools or its history has tool calls or results, `images` for inline
        images, `image_urls` for https images. Empty for a text-only request."""
        needs: set[Capability] = set()
        if self.tools:
            needs.add("tools")
        for message in self.all_messages():
            if message.tool_calls or message.role == "tool":
                needs.add("tools")
            if isinstance(message.content, list):
                for image in message.images():
                    needs.add("image_urls" if image.part.url is not None else "images")
        return frozenset(needs)

    def _tool_specs(self) -> tuple[ToolSpec, ...]:
        if self._tools is None:
            self._tools = tuple(tool.to_spec() for tool in self.tools or ())
        return self._tools

    def _tool_choice(self) -> ToolChoice | None:
        choice = self.tool_choice
        if choice is None:
            return None
        if isinstance(choice, ToolChoiceIn):
            return ToolChoice("function", choice.function.name)
        return ToolChoice(choice)

    def params_for(self, model_id: str, model_name: str) -> ChatParams:
        """Messages and parameter overrides for one attempt on one model (with the
        request's tools, tool choice and `parallel_tool_calls` when it has them)."""
        override = self.override_for(model_id, model_name)
        params: dict[str, Any] = {}
        if self._messages is None:
            history = [m.to_message() for m in self.message_history]
            self._messages = (*history, self.message.to_message())
        messages = self._messages
        if override is not None:
            if override.message is not None:
                messages = (*messages[:-1], override.message.to_message())
            params = override.params
        if self.tools is None and self.parallel_tool_calls is None:
            return ChatParams(messages, params)
        if self.parallel_tool_calls is not None and self.tools:
            params = {**params, "parallel_tool_calls": self.parallel_tool_calls}
        return ChatParams(
            messages, params, tools=self._tool_specs(), tool_choice=self._tool_choice()
        )
