"""One running Realtime response's output: conversation reply events in, the
response's server events out.

    ReplyStarted ─► response.created, output_item.added, item.created, content_part.added
    ReplyText    ─► transcript deltas (text deltas for a text-only response)
    ReplyAudio   ─► audio deltas in the output format (samples a failover repeats skipped)
    TurnEnded    ─► audio / transcript (or text) .done, content_part.done,
                    output_item.done, the function call items, response.done

A response has one assistant message item; a reply that called tools adds one
`function_call` item per call after it (output index 1, 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.conversation_types import ReplyAudio, TurnEnded
from realtime.channel import Channel
from realtime.formats import OutputEncoder
from realtime.problems import Problem
from realtime.server_events import ResponseStatus

_STATUS: dict[str, ResponseStatus] = {
    "complete": "completed",
    "interrupted": "cancelled",
    "error": "failed",
}


@dataclass
class Response:
    """What one response has said so far, and how its audio is encoded."""

    id: str
    item_id: str
    text_only: bool
    encoder: OutputEncoder
    text: list[str] = field(default_factory=list)
    skip_samples: int = 0
    reason: str | None = None
    calls: tuple[tuple[str, str, str], ...] = ()  # (call_id, name, arguments)


class ResponseOutput:
    """Emits one session's responses, one at a time."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def start(self, text_only: bool) -> Response:
        """A reply started: a new response and its opening events."""
        channel, events = self.channel, self.channel.events
        response = Response(
            channel.ids.make("resp"),
            channel.ids.make("item"),
            text_only,
            OutputEncoder(channel.settings.output_format),
        )
        item = events.assistant_item(response.item_id, "in_progress", None, text_only)
        channel.emit(events.response_created(self.body(response, "in_progress", [])))
        channel.emit(events.output_item_added(response.id, item))
        channel.created(item)
        channel.emit(events.content_part_added(response.id, response.item_id, text_only))
        return response

    def body(
        self,
        response: Response,
        status: ResponseStatus,
        output: list[dict[str, Any]],
        error: Problem | None = None,
    ) -> dict[str, Any]:
        """The `response` object of `response.created` / `response.done`."""
        settings = self.channel.settings
        return self.channel.events.response(
            response.id,
            status,
            output,
            text_only=response.text_only,
            voice=settings.voice,
            output_format=settings.output_format,
            reason=response.reason,
            error=error,
        )

    def text(self, response: Response, delta: str) -> None:
        """A piece of the reply's text: a transcript (or text) delta."""
        if not delta:
            return
        response.text.append(delta)
        events = self.channel.events
        if response.text_only:
            self.channel.emit(events.text_delta(response.id, response.item_id, delta))
        else:
            self.channel.emit(events.transcript_delta(response.id, response.item_id, delta))

    def audio(self, response: Response, event: ReplyAudio) -> None:
        """Reply audio: an audio delta in the output format (nothing for text-only)."""
        if response.text_only:
            return
        samples = event.samples
        if response.skip_samples:
            skipped = min(response.skip_samples, samples.size)
            response.skip_samples -= skipped
            samples = samples[skipped:]
        audio = response.encoder.encode(samples)
        if audio:
            events = self.channel.events
            self.channel.emit(events.audio_delta(response.id, response.item_id, audio))

    def end(self, response: Response, event: TurnEnded) -> list[str]:
        """The turn ended: the closing events and `response.done`; the call ids of a
        completed response out (they wait for their outputs)."""
        channel, events = self.channel, self.channel.events
        text = "".join(response.text)
        status = _STATUS[event.reason]
        problem = None
        if event.error is not None:
            problem = Problem("all_models_unavailable", str(event.error), type="server_error")
        if response.text_only:
            channel.emit(events.text_done(response.id, response.item_id, text))
        else:
            if status == "completed":
                tail = response.encoder.flush()
                if tail:
                    channel.emit(events.audio_delta(response.id, response.item_id, tail))
            channel.emit(events.audio_done(response.id, response.item_id))
            channel.emit(events.transcript_done(response.id, response.item_id, text))
        channel.emit(
            events.content_part_done(response.id, response.item_id, response.text_only, text)
        )
        item = events.assistant_item(response.item_id, status, text, response.text_only)
        channel.emit(events.output_item_done(response.id, item))
        output = [item]
        calls = self._function_calls(response) if status == "completed" else []
        output.extend(calls)
        channel.emit(events.response_done(self.body(response, status, output, problem)))
        return [str(call["call_id"]) for call in calls]

    def _function_calls(self, response: Response) -> list[dict[str, Any]]:
        """The response's function calls as output items after its message (index 1...)."""
        channel, events = self.channel, self.channel.events
        items: list[dict[str, Any]] = []
        for index, (call_id, name, arguments) in enumerate(response.calls, start=1):
            item_id = channel.ids.make("item")
            added = events.function_call_item(item_id, call_id, name, "", "in_progress")
            channel.emit(events.output_item_added(response.id, added, index))
            channel.created(added)
            channel.emit(events.arguments_delta(response.id, item_id, index, call_id, arguments))
            channel.emit(
                events.arguments_done(response.id, item_id, index, call_id, name, arguments)
            )
            done = events.function_call_item(item_id, call_id, name, arguments, "completed")
            channel.emit(events.output_item_done(response.id, done, index))
            items.append(done)
        return items
