"""Glide's `POST /v1/language/{router}/chat`: one completion, with failover.

A JSON `ChatRequest` in; Glide's chat response (or a `{name, message}` error with
the right status) out. Admission: draining (503), the caller's request rate (429).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway.core import GATEWAY, Gateway
from glide_api.errors import error_response
from glide_api.lookup import caller, chat_router
from observability.telemetry import ERROR, OK, REJECTED, Telemetry
from operators.aio import to_future
from operators.failover import AllModelsUnavailable
from pipelines.chat_router import ChatRouter, MissingCapability
from pipelines.chat_stream import CHAT, glide_finish_reason
from pipelines.common import describe_validation_error
from protocol import jsoncodec
from protocol.chat import ChatRequest
from protocol.frames import ErrorName
from protocol.images import image_problem
from protocol.messages import json_depth_exceeds
from providers.types import ErrorCategory, ProviderError
from security.access import Client
from transport.http_json import json_response

log = logging.getLogger("sluice.server")


async def chat(request: web.Request) -> web.Response:
    """Glide's `POST /v1/language/{router}/chat`: one completion, with failover.

    The caller's request rate applies (429 `rate_limited` with Retry-After).
    """
    router = chat_router(request)
    if isinstance(router, web.Response):
        return router
    gateway = request.app[GATEWAY]
    telemetry = gateway.telemetry or Telemetry(gateway.clock)
    if gateway.draining:
        telemetry.rejected(CHAT, router.id, ErrorName.SHUTTING_DOWN)
        return error_response(503, ErrorName.SHUTTING_DOWN, "this instance is shutting down")
    client = caller(request)
    wait = await client.admit_request(gateway.clock())
    if wait is not None:
        telemetry.rejected(CHAT, router.id, ErrorName.RATE_LIMITED)
        return error_response(
            429,
            ErrorName.RATE_LIMITED,
            f"this API key's request rate is used up; retry in {wait:.3f} s",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    gateway.http_in_flight += 1
    try:
        return await _chat(request, router, gateway, telemetry, client)
    finally:
        gateway.http_in_flight -= 1
        gateway.work_ended.set()


async def _chat(
    request: web.Request,
    router: ChatRouter,
    gateway: Gateway,
    telemetry: Telemetry,
    client: Client,
) -> web.Response:
    request_id = str(uuid.uuid4())
    tracked = telemetry.request(CHAT, router.id, request_id, key_id=client.key_id)

    def refuse(status: int, name: str, message: str, outcome: str = REJECTED) -> web.Response:
        tracked.finish(outcome, error=name)
        return error_response(status, name, gateway.redact(message))

    try:
        body = jsoncodec.loads(await request.read())
    except (ValueError, RecursionError) as error:
        return refuse(400, ErrorName.PAYLOAD_PARSE_ERROR, f"body is not JSON: {error}")
    if json_depth_exceeds(body):
        return refuse(400, ErrorName.INVALID_REQUEST, "the body nests JSON too deeply")
    try:
        chat_request = ChatRequest.model_validate(body)
    except ValidationError as error:
        return refuse(400, ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
    max_history = gateway.config.limits.max_message_history
    if len(chat_request.message_history) > max_history:
        return refuse(
            400,
            ErrorName.MESSAGE_HISTORY_TOO_LONG,
            f"message_history has {len(chat_request.message_history)} messages; "
            f"the limit is {max_history}",
        )
    problem = image_problem(chat_request.images(), gateway.config.limits.images)
    if problem is not None:
        return refuse(400, ErrorName.INVALID_IMAGE, problem)
    try:
        completion = await to_future(
            router.complete(chat_request, telemetry=tracked), gateway.scheduler
        )
    except asyncio.CancelledError:
        tracked.finish("aborted")
        raise
    except AllModelsUnavailable as error:
        return refuse(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error), ERROR)
    except MissingCapability as error:
        return refuse(400, ErrorName.UNSUPPORTED_CAPABILITY, str(error))
    except ProviderError as error:
        if error.category is ErrorCategory.BAD_REQUEST:
            return refuse(400, ErrorName.BAD_REQUEST, str(error), ERROR)
        return refuse(503, ErrorName.ALL_MODELS_UNAVAILABLE, str(error), ERROR)
    except Exception as error:
        log.exception("chat failed", extra={"request_id": request_id, "router": router.id})
        message = f"internal error: {type(error).__name__}"
        return refuse(500, ErrorName.UNKNOWN_ERROR, message, ERROR)
    tracked.output()
    tracked.finish(OK)
    result = completion.result
    answer: dict[str, Any] = {"role": result.role, "content": result.content}
    if result.tool_calls:
        answer["tool_calls"] = [
            {"index": index, **call.to_json()} for index, call in enumerate(result.tool_calls)
        ]
    finish = glide_finish_reason(result.finish_reason)
    model_response: dict[str, Any] = {
        "metadata": result.metadata,
        "message": answer,
        "token_usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "response_tokens": result.usage.response_tokens,
            "total_tokens": result.usage.total_tokens,
        },
        "finish_reason": finish,
    }
    if finish != result.finish_reason:
        model_response["finish_detail"] = result.finish_reason
    return json_response(
        {
            "id": request_id,
            "created_at": int(gateway.clock()),
            "provider_id": completion.model.provider_id,
            "router_id": router.id,
            "model_id": completion.model.model_id,
            "model_name": completion.model.model_name,
            "cached": False,
            "model_response": model_response,
        }
    )
