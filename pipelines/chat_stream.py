"""The chatStream websocket pipeline: client messages in, tagged frames out.

inbound ─► per_request(request_id) ─► validate ─► ChatRouter.stream (failover,
retry, deadlines) ─► chunk / model_unavailable frames ─► cancel / duplicate
handling ─► terminal rule ─► merge ─► the socket writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import reactivex
from pydantic import ValidationError
from reactivex import Observable

from observability.telemetry import RequestTelemetry
from operators.failover import AllModelsUnavailable, Reset
from operators.per_request import per_request
from pipelines.chat_router import ChatChunk, ChatEvent, ChatRouter, MissingCapability
from pipelines.common import Admission, describe_validation_error, request_frames
from protocol.chat import ChatRequest
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.images import ImageLimits, Limits, image_problem
from protocol.messages import ClientMessage, Inbound
from providers.types import ErrorCategory, FinishReason, ProviderError, ToolCallDelta
from resume.takeover import ResumedAnswer

log = logging.getLogger("sluice.chat")

CHAT = "chat"


def chunk_frame(frames: FrameFactory, event: ChatChunk) -> Frame:
    """A Glide chatStream chunk frame; terminal when it carries a finish_reason.

    The first chunk of a continued answer after a model switch also carries
    `chunk.switched_from: {model_id, provider_id, at_char}` (an extra field).
    Tool calls go in `model_response.message.tool_calls` (OpenAI's shape plus
    `index`); an answer that stops to call tools ends with `finish_reason: other`
    and `finish_detail: tool_calls` (Glide's clients accept no other reason).
    """
    delta = event.delta
    model = event.model
    message: dict[str, Any] = {"role": "assistant", "content": delta.content}
    if delta.tool_calls:
        message["tool_calls"] = [tool_call_json(call) for call in delta.tool_calls]
    model_response: dict[str, Any] = {
        "metadata": delta.metadata or {},
        "message": message,
    }
    chunk: dict[str, Any] = {
        "model_id": model.model_id,
        "provider_id": model.provider_id,
        "model_name": model.model_name,
        "cached": False,
        "model_response": model_response,
    }
    switch = event.switched_from
    if switch is not None:
        chunk["switched_from"] = {
            "model_id": switch.model_id,
            "provider_id": switch.provider_id,
            "at_char": switch.at_char,
        }
    finish_reason = delta.finish_reason
    if finish_reason is not None:
        glide_reason = glide_finish_reason(finish_reason)
        chunk["finish_reason"] = glide_reason
        # Glide's Python client stops reading at model_response.finish_reason.
        model_response["finish_reason"] = glide_reason
        if glide_reason != finish_reason:
            chunk["finish_detail"] = model_response["finish_detail"] = finish_reason
        if delta.usage is not None:
            model_response["token_usage"] = {
                "prompt_tokens": delta.usage.prompt_tokens,
                "response_tokens": delta.usage.response_tokens,
                "total_tokens": delta.usage.total_tokens,
            }
    data = frames.envelope("chunk")
    data["chunk"] = chunk
    return Frame(frames.request_id, data, finish_reason is not None)


def glide_finish_reason(reason: FinishReason) -> FinishReason:
    """Sluice's finish reason as Glide's clients take it (`tool_calls` -> `other`)."""
    return "other" if reason == "tool_calls" else reason


def tool_call_json(call: ToolCallDelta) -> dict[str, Any]:
    """A tool call (whole, or a fragment under `tool_call_streaming: fragments`) in
    OpenAI's streamed shape: `index`, and `id`, `type`, `function.name` when known."""
    out: dict[str, Any] = {"index": call.index}
    function: dict[str, Any] = {}
    if call.id is not None:
        out["id"] = call.id
        out["type"] = "function"
    if call.name is not None:
        function["name"] = call.name
    function["arguments"] = call.arguments
    out["function"] = function
    return out


def event_frame(frames: FrameFactory, event: ChatEvent) -> Frame:
    """Chunk -> chunk frame; Reset -> non-terminal `model_unavailable` error."""
    if isinstance(event, Reset):
        return frames.error(
            ErrorName.MODEL_UNAVAILABLE,
            f"model {event.model_id!r} failed mid-stream ({event.error}); "
            "drop this request's partial text and tool calls, the answer restarts on the "
            "next model",
            finish_reason=None,
            model_id=event.model_id,
        )
    return chunk_frame(frames, event)


def error_frame(frames: FrameFactory, router_id: str, error: Exception) -> Frame:
    """The terminal frame for a request whose answer failed."""
    if isinstance(error, AllModelsUnavailable):
        log.warning(
            "all models unavailable",
            extra={"request_id": frames.request_id, "router": router_id, "cause": str(error)},
        )
        return frames.error(ErrorName.ALL_MODELS_UNAVAILABLE, str(error))
    if isinstance(error, ProviderError) and error.category is ErrorCategory.BAD_REQUEST:
        return frames.error(ErrorName.BAD_REQUEST, f"the provider rejected the request: {error}")
    if isinstance(error, MissingCapability):
        return frames.error(ErrorName.UNSUPPORTED_CAPABILITY, str(error))
    log.exception(
        "chat request failed",
        exc_info=error,
        extra={"request_id": frames.request_id, "router": router_id},
    )
    return frames.error(ErrorName.UNKNOWN_ERROR, f"internal error: {type(error).__name__}")


def chat_request(
    router: ChatRouter,
    first: ClientMessage,
    later: Observable[ClientMessage],
    clock: Callable[[], float],
    max_history: int,
    telemetry: RequestTelemetry | None = None,
    images: Limits | None = None,
    resumed: ResumedAnswer | None = None,
) -> Observable[Frame]:
    """One chatStream request: its first message and later ones in, its frames out.

    `telemetry` (the request's, from the socket) hears each provider attempt;
    `images` (`limits.images`) bounds its images (`invalid_image` otherwise).
    `resumed` is the answer so far of a request taken over from a gone instance.
    """
    frames = FrameFactory(first.request_id, router.id, first.metadata, clock)
    if first.type != CHAT:
        return reactivex.of(
            frames.error(
                ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                f"chatStream accepts 'chat' and 'cancel' messages, not {first.type!r}",
            )
        )
    try:
        request = ChatRequest.model_validate(first.body)
    except ValidationError as error:
        return reactivex.of(
            frames.error(ErrorName.PAYLOAD_PARSE_ERROR, describe_validation_error(error))
        )
    if len(request.message_history) > max_history:
        return reactivex.of(
            frames.error(
                ErrorName.MESSAGE_HISTORY_TOO_LONG,
                f"message_history has {len(request.message_history)} messages; "
                f"the limit is {max_history}",
                limit="max_message_history",
            )
        )
    problem = image_problem(request.images(), images or ImageLimits())
    if problem is not None:
        return reactivex.of(frames.error(ErrorName.INVALID_IMAGE, problem, limit="images"))

    def duplicate(msg: ClientMessage) -> Frame:
        return frames.error(
            ErrorName.DUPLICATE_REQUEST_ID,
            f"request {msg.request_id!r} is still in flight; this {msg.type!r} "
            "message was ignored (use a new request_id)",
            finish_reason=None,
        )

    def to_frame(event: ChatEvent) -> Frame:
        return event_frame(frames, event)

    def answer_for(_inputs: Observable[ClientMessage]) -> Observable[ChatEvent]:
        return router.stream(request, telemetry=telemetry, resumed=resumed)

    return request_frames(
        frames,
        answer_for,
        later,
        lambda error: error_frame(frames, router.id, error),
        input_frame=duplicate,
        to_frame=to_frame,
    )


def chat_stream_pipeline(
    router: ChatRouter,
    clock: Callable[[], float],
    admission: Admission,
    max_history: int,
    images: Limits | None = None,
) -> Callable[[Observable[Inbound]], Observable[Frame]]:
    """The whole chatStream socket: inbound messages in, merged frames out.

    Admission decides which requests start (and gives each its telemetry);
    `images` is `limits.images`.
    """

    def start(first: ClientMessage, later: Observable[ClientMessage]) -> Observable[Frame]:
        telemetry = admission.request_telemetry(first.request_id)
        taken = admission.resumed(first.request_id)
        resumed = taken if isinstance(taken, ResumedAnswer) else None
        return chat_request(router, first, later, clock, max_history, telemetry, images, resumed)

    return per_request(
        start,
        bad_message=admission.bad_message_frame(router.id, clock),
        admit=admission.admit_frame(router.id, clock),
        crashed=admission.crashed_frame(router.id, clock),
        on_active_change=admission.on_active_change,
    )
