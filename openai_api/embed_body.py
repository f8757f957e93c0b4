"""The body of an embedding request (both surfaces) and the vectors' encodings.

JSON in: `{"input": "text" | ["text", ...], "model"?, "encoding_format"?: "float" |
"base64", "dimensions"?, "input_type"?}`. Out: an `EmbedRequest`, or an `ApiError`
(400) naming the field: token arrays (`input` as integers) are refused with
`unsupported_input`, as are empty texts and inputs over the router's limits.
`encode(vector, "base64")` is OpenAI's: little-endian float32, base64.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.models import EmbeddingRouterConfig
from openai_api.errors import ApiError
from protocol.frames import ErrorName
from providers.embed_types import EmbedRequest, InputType

UNSUPPORTED_INPUT = "unsupported_input"
"""The error name of an `input` given as token ids (Sluice embeds text only)."""
TOO_MANY_INPUTS = "too_many_inputs"
INPUT_TOO_LONG = "input_too_long"

EncodingFormat = Literal["float", "base64"]


class EmbedBody(BaseModel):
    """An embedding request body; `model` is required on `/v1/embeddings` only.

    Unknown fields (OpenAI's `user`, ...) are accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    input: Any = Field(
        description="A text, or a list of texts (token ids are refused: `unsupported_input`).",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        },
    )
    model: str | None = Field(
        default=None,
        description="`/v1/embeddings`: an embedding router's id, or `router/model-id` to pin "
        "one model.",
    )
    encoding_format: EncodingFormat = Field(
        default="float", description="`base64`: little-endian float32, base64 (OpenAI's)."
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Shorter vectors; only models whose vendor supports it are tried.",
    )
    input_type: InputType | None = Field(
        default=None,
        description="What the texts are for: Cohere's `input_type`, Gemini's `taskType`; "
        "ignored by other vendors.",
    )


def texts_of(raw: Any) -> tuple[str, ...]:
    """`input` as texts: a string is one text; a list must hold strings only.

    Token arrays (a list of integers, or of lists of integers) are refused with
    400 `unsupported_input`; anything else with 400 `invalid_request`.
    """
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw:
        if all(isinstance(item, str) for item in raw):
            return tuple(raw)
        if all(_is_token(item) or _is_token_list(item) for item in raw):
            raise ApiError(
                400,
                "input as token ids is not supported: Sluice routes between vendors whose "
                "tokenizers differ; send the text instead",
                code=UNSUPPORTED_INPUT,
                param="input",
            )
    raise ApiError(
        400,
        "input must be a string or a non-empty list of strings",
        code=ErrorName.INVALID_REQUEST,
        param="input",
    )


def _is_token(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _is_token_list(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(_is_token(t) for t in item)


def embed_request(body: EmbedBody, router: EmbeddingRouterConfig) -> EmbedRequest:
    """The body as an `EmbedRequest`, checked against the router's limits."""
    texts = texts_of(body.input)
    if len(texts) > router.max_inputs:
        raise ApiError(
            400,
            f"input has {len(texts)} texts; router {router.id!r} takes at most "
            f"{router.max_inputs} (max_inputs)",
            code=TOO_MANY_INPUTS,
            param="input",
        )
    for index, text in enumerate(texts):
        if not text:
            raise ApiError(
                400, f"input[{index}] is empty", code=ErrorName.INVALID_REQUEST, param="input"
            )
        if len(text) > router.max_input_chars:
            raise ApiError(
                400,
                f"input[{index}] has {len(text)} characters; router {router.id!r} takes at "
                f"most {router.max_input_chars} (max_input_chars)",
                code=INPUT_TOO_LONG,
                param="input",
            )
    return EmbedRequest(texts, body.dimensions, body.input_type)


def encode(vector: list[float], encoding: EncodingFormat) -> list[float] | str:
    """A vector as JSON: the floats, or base64 of little-endian float32 (OpenAI's)."""
    if encoding == "float":
        return vector
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
