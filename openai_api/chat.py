"""`POST /v1/chat/completions`: OpenAI's chat API over a Sluice language router.

OpenAI body in (`model`: `router` or `router/model-id`) -> `ChatRouter.complete`
or `.stream` (the same failover, retry, deadlines and health as the native API)
-> a `chat.completion` object, or SSE `chat.completion.chunk` events and `[DONE]`.

Streaming: the response starts with the first chunk, so a failure before it
(failover found no model) is an HTTP error with a status. Failover before the
first chunk is invisible. Tool calls stream in OpenAI's delta shape (`index`,
`id`, `type`, `function.name` and `.arguments`): whole calls by default, each
sent once complete, so a failover inside a call is invisible too; the turn ends
with `finish_reason: tool_calls`. A model that fails after chunks (text, a tool
call, or under `tool_call_streaming: fragments` part of one) were sent ends the
stream with an SSE `{"error": {...}}` event (code `model_unavailable`; the
OpenAI SDKs raise `APIError`): the answer is never spliced from two models.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from observability.telemetry import ABORTED, ERROR, OK, REJECTED, RequestTelemetry, Telemetry
from openai_api.body import invalid, read_json
from openai_api.chat_body import ChatBody, split_model
from openai_api.errors import MODEL_NOT_FOUND, ApiError, Handler, from_failure, openai_errors
from openai_api.gate import accepting, allowed, authenticated, in_flight, take_request
from openai_api.rx_iter import RxIterator
from openai_api.types import GatewayKey, GatewayView
from operators.aio import to_future
from operators.failover import Reset
from pipelines.chat_router import ChatChunk, ChatRouter, ModelInfo
from pipelines.chat_stream import tool_call_json
from protocol import jsoncodec
from protocol.chat import ChatRequest
from protocol.frames import ErrorName
from protocol.images import image_problem
from providers.types import FinishReason, TokenUsage
from transport.http_json import json_response

log = logging.getLogger("sluice.openai")

ENDPOINT = "chat_completions"
"""The endpoint label of these requests in metrics and logs."""

FINISH_REASONS: dict[str, str] = {
    "complete": "stop",
    "max_tokens": "length",
    "content_filtered": "content_filter",
    "tool_calls": "tool_calls",
}


def finish_reason(reason: FinishReason | None) -> str:
    """Sluice's finish reason -> OpenAI's (`complete` -> `stop`, `max_tokens` -> `length`,
    `content_filtered` -> `content_filter`, `tool_calls` stays, anything else -> `stop`)."""
    return FINISH_REASONS.get(reason or "", "stop")


def usage_json(usage: TokenUsage | None) -> dict[str, int]:
    """Glide's token usage -> OpenAI's `usage` object (zeros when unknown)."""
    usage = usage or TokenUsage()
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.response_tokens,
        "total_tokens": usage.total_tokens,
    }


def model_name(router: ChatRouter, model: ModelInfo) -> str:
    """The `model` field of a response: `router/model-id`."""
    return f"{router.id}/{model.model_id}"


def resolve(gateway: GatewayView, model: str) -> tuple[ChatRouter, str | None]:
    """`router` or `router/model-id` -> the router and the pinned model, or 404."""
    router_id, model_id = split_model(model)
    router = gateway.chat_routers.get(router_id)
    if router is None:
        raise ApiError(
            404,
            f"the model {model!r} does not exist: no language router {router_id!r} "
            f"(use one of: {', '.join(sorted(gateway.chat_routers)) or 'none'})",
            code=MODEL_NOT_FOUND,
            param="model",
        )
    if model_id is not None and not router.has_model(model_id):
        raise ApiError(
            404,
            f"the model {model!r} does not exist: router {router_id!r} has no enabled "
            f"model {model_id!r}",
            code=MODEL_NOT_FOUND,
            param="model",
        )
    return router, model_id


def chat_request(
    gateway: GatewayView, router: ChatRouter, pinned: str | None, body: ChatBody
) -> ChatRequest:
    """The body as Sluice's request (params for the pinned model or every model)."""
    model_ids = [pinned] if pinned else [m.id for m in router.config.enabled_models]
    try:
        request = body.to_chat_request(model_ids)
    except ValidationError as error:
        raise invalid(error) from None
    limit = gateway.config.limits.max_message_history
    if len(request.message_history) > limit:
        raise ApiError(
            400,
            f"messages has {len(request.message_history) + 1} messages; the limit is {limit + 1}",
            code=ErrorName.MESSAGE_HISTORY_TOO_LONG,
            param="messages",
        )
    problem = image_problem(request.images(), gateway.config.limits.images)
    if problem is not None:
        raise ApiError(400, problem, code=ErrorName.INVALID_IMAGE, param="messages")
    return request


def chat_completions(gateway_key: GatewayKey) -> Handler:
    """The handler of `POST /v1/chat/completions` for the gateway at `app[gateway_key]`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        client = authenticated(request)
        gateway: GatewayView = request.app[gateway_key]
        accepting(gateway)
        body = await read_json(request, ChatBody)
        router, pinned = resolve(gateway, body.model)
        allowed(client, router.id)
        sluice_request = chat_request(gateway, router, pinned, body)
        await take_request(client, gateway)
        telemetry = gateway.telemetry or Telemetry(gateway.clock)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        tracked = telemetry.request(ENDPOINT, router.id, completion_id, key_id=client.key_id)
        with in_flight(gateway):
            try:
                if body.stream:
                    return await _stream(
                        request,
                        gateway,
                        router,
                        pinned,
                        sluice_request,
                        body,
                        completion_id,
                        tracked,
                    )
                return await _complete(
                    gateway, router, pinned, sluice_request, completion_id, tracked
                )
            except asyncio.CancelledError:
                tracked.finish(ABORTED)
                raise
            except ApiError as error:
                tracked.finish(REJECTED if error.status < 500 else ERROR, error=error.code)
                raise

    return openai_errors(handle)


def _failure(gateway: GatewayView, router: ChatRouter, error: Exception) -> ApiError:
    api_error = from_failure(error, gateway.redact)
    if api_error.status == 500:
        log.error("chat completion failed", exc_info=error, extra={"router": router.id})
    return api_error


async def _complete(
    gateway: GatewayView,
    router: ChatRouter,
    pinned: str | None,
    request: ChatRequest,
    completion_id: str,
    tracked: RequestTelemetry,
) -> web.Response:
    try:
        completion = await to_future(
            router.complete(request, telemetry=tracked, only_model=pinned), gateway.scheduler
        )
    except asyncio.CancelledError:
        raise
    except Exception as error:
        raise _failure(gateway, router, error) from None
    tracked.output()
    tracked.finish(OK)
    result = completion.result
    message: dict[str, Any] = {"role": result.role, "content": result.content}
    if result.tool_calls:
        message["content"] = result.content or None
        message["tool_calls"] = [call.to_json() for call in result.tool_calls]
    return json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(gateway.clock()),
            "model": model_name(router, completion.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(result.finish_reason),
                }
            ],
            "usage": usage_json(result.usage),
            "system_fingerprint": None,
        }
    )


class _Sse:
    """Writes one completion's `chat.completion.chunk` events."""

    def __init__(self, response: web.StreamResponse, completion_id: str, created: int) -> None:
        self.response = response
        self.completion_id = completion_id
        self.created = created
        self.role_sent = False

    async def send(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else jsoncodec.dumps_text(payload)
        await self.response.write(f"data: {data}\n\n".encode())

    async def chunk(self, model: str, delta: dict[str, Any], finish: str | None = None) -> None:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        await self.send(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    async def usage(self, model: str, usage: TokenUsage | None) -> None:
        await self.send(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "choices": [],
                "usage": usage_json(usage),
            }
        )


async def _stream(
    request: web.Request,
    gateway: GatewayView,
    router: ChatRouter,
    pinned: str | None,
    sluice_request: ChatRequest,
    body: ChatBody,
    completion_id: str,
    tracked: RequestTelemetry,
) -> web.StreamResponse:
    source = router.stream(sluice_request, telemetry=tracked, only_model=pinned)
    async with RxIterator(source, gateway.scheduler) as events:
        try:
            event = await anext(events)
        except StopAsyncIteration:
            raise ApiError(
                500, "the answer ended without content", code=ErrorName.UNKNOWN_ERROR
            ) from None
        except Exception as error:
            raise _failure(gateway, router, error) from None
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        sse = _Sse(response, completion_id, int(gateway.clock()))
        try:
            outcome = await _relay(event, events, sse, router, body, gateway, tracked)
        except ConnectionResetError:
            tracked.finish(ABORTED)
            return response
        if outcome is None:
            tracked.finish(OK)
        else:
            tracked.finish(ERROR, error=outcome.code)
            await sse.send(outcome.body())
        return response


async def _relay(
    event: ChatChunk | Reset,
    events: RxIterator[ChatChunk | Reset],
    sse: _Sse,
    router: ChatRouter,
    body: ChatBody,
    gateway: GatewayView,
    tracked: RequestTelemetry,
) -> ApiError | None:
    """Write events until the answer ends: None when complete, else the error to send."""
    while True:
        if isinstance(event, Reset):
            return ApiError(
                502,
                f"model {router.id}/{event.model_id} failed after part of the answer was "
                f"streamed ({gateway.redact(str(event.error))}); discard the partial answer "
                "and send the request again",
                code=ErrorName.MODEL_UNAVAILABLE,
            )
        model = model_name(router, event.model)
        delta = event.delta
        if delta.tool_calls:
            calls = [tool_call_json(call) for call in delta.tool_calls]
            await sse.chunk(model, {"content": delta.content or None, "tool_calls": calls})
            tracked.output()
        elif delta.content:
            await sse.chunk(model, {"content": delta.content})
            tracked.output()
        if delta.finish_reason is not None:
            await sse.chunk(model, {}, finish_reason(delta.finish_reason))
            if body.include_usage:
                await sse.usage(model, delta.usage)
            await sse.send("[DONE]")
            return None
        try:
            event = await anext(events)
        except StopAsyncIteration:
            return ApiError(
                500, "the answer ended without a finish_reason", code=ErrorName.UNKNOWN_ERROR
            )
        except Exception as error:
            return _failure(gateway, router, error)
