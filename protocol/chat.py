"""Glide 0.1.0's chat request schema (HTTP chat and websocket chatStream).

A JSON object flows in; `ChatRequest.params_for(model_id, model_name)` gives the
`ChatParams` one attempt sends: history, then the message (or a per-model
override of it), with per-model parameter overrides.

`override_params` takes both of Glide's shapes: a map keyed by model id or model
name (`{"my-model": {"message": {...}, "temperature": 0.2}}`), or one override
`{"model": "my-model", "message": {...}}` (also accepted under `override`, which
is what Glide's Python client sends).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from providers.types import ChatParams, Message


class ChatMessageIn(BaseModel):
    """One message: role system/user/assistant, non-empty content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"] = "user"
    content: str = Field(min_length=1)
    name: str | None = None

    def to_message(self) -> Message:
        """The provider-side message."""
        return Message(self.role, self.content, self.name)


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

    def params_for(self, model_id: str, model_name: str) -> ChatParams:
        """Messages and parameter overrides for one attempt on one model."""
        override = self.override_for(model_id, model_name)
        message = self.message
        params: dict[str, Any] = {}
        if override is not None:
            message = override.message or message
            params = override.params
        history = tuple(m.to_message() for m in self.message_history)
        return ChatParams((*history, message.to_message()), params)
