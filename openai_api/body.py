"""Reading a JSON request body into a pydantic model, with OpenAI-shaped 400s."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from openai_api.errors import ApiError
from pipelines.common import describe_validation_error
from protocol import jsoncodec
from protocol.frames import ErrorName
from protocol.messages import json_depth_exceeds

M = TypeVar("M", bound=BaseModel)


def invalid(error: ValidationError) -> ApiError:
    """A validation error -> 400 `invalid_request` naming the first bad field as `param`."""
    errors = error.errors(include_input=False, include_url=False)
    param = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    return ApiError(
        400, describe_validation_error(error), code=ErrorName.INVALID_REQUEST, param=param or None
    )


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request's JSON body validated as `model`, or a 400 `ApiError`."""
    try:
        data = jsoncodec.loads(await request.read())
    except (ValueError, RecursionError) as error:
        raise ApiError(
            400, f"the body is not JSON: {error}", code=ErrorName.PAYLOAD_PARSE_ERROR
        ) from None
    if json_depth_exceeds(data):
        raise ApiError(400, "the body nests JSON too deeply", code=ErrorName.INVALID_REQUEST)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code=ErrorName.INVALID_REQUEST)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None
