"""Realtime server events as JSON-ready dicts, named and shaped per dialect.

`ServerEvents(dialect, ids)` makes every event Sluice sends, each with a fresh
`event_id`. The dialects differ in names (`response.output_audio.delta` GA,
`response.audio.delta` beta; likewise `…_transcript.*` and `…text.*`) and in
shapes (session objects, assistant content `output_audio` / `audio`, response
`output_modalities` / `modalities`); everything else is the same. The fields are
those the `openai` package's types declare (`openai.types.realtime` for GA,
`openai.types.beta.realtime` for beta); tests validate against them.
"""

from __future__ import annotations

from typing import Any, Literal

from realtime.formats import AudioFormat
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.session import Dialect, SessionSettings, session_json

ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]

_NAMES: dict[Dialect, dict[str, str]] = {
    "ga": {
        "audio": "response.output_audio",
        "transcript": "response.output_audio_transcript",
        "text": "response.output_text",
    },
    "beta": {
        "audio": "response.audio",
        "transcript": "response.audio_transcript",
        "text": "response.text",
    },
}


def _item_status(status: ResponseStatus) -> str:
    if status in ("completed", "in_progress"):
        return status
    return "incomplete"


class ServerEvents:
    """Builds one session's server events (`event_id`s from its `Ids`)."""

    def __init__(self, dialect: Dialect, ids: Ids) -> None:
        self.dialect = dialect
        self.ids = ids
        self._names = _NAMES[dialect]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self.ids.make("event"), **fields}

    # ---- session and errors ----------------------------------------------------

    def session_created(self, settings: SessionSettings) -> dict[str, Any]:
        """`session.created`: the session as it starts."""
        return self._event("session.created", session=session_json(settings, self.dialect))

    def session_updated(self, settings: SessionSettings) -> dict[str, Any]:
        """`session.updated`: the session after a `session.update`."""
        return self._event("session.updated", session=session_json(settings, self.dialect))

    def error(self, problem: Problem) -> dict[str, Any]:
        """`error`: a problem with one client event (or the session); the socket lives."""
        return self._event("error", error=problem.to_json())

    # ---- input audio -----------------------------------------------------------

    def speech_started(self, audio_start_ms: int, item_id: str) -> dict[str, Any]:
        """`input_audio_buffer.speech_started` (server VAD)."""
        return self._event(
            "input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id
        )

    def speech_stopped(self, audio_end_ms: int, item_id: str) -> dict[str, Any]:
        """`input_audio_buffer.speech_stopped` (server VAD)."""
        return self._event(
            "input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id
        )

    def committed(self, item_id: str, previous_item_id: str | None) -> dict[str, Any]:
        """`input_audio_buffer.committed`: the buffer became user item `item_id`."""
        return self._event(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id
        )

    def cleared(self) -> dict[str, Any]:
        """`input_audio_buffer.cleared`."""
        return self._event("input_audio_buffer.cleared")

    # ---- items -----------------------------------------------------------------

    def item_created(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
        """`conversation.item.created`."""
        return self._event(
            "conversation.item.created", item=item, previous_item_id=previous_item_id
        )

    def transcription_completed(
        self, item_id: str, transcript: str, seconds: float
    ) -> dict[str, Any]:
        """`conversation.item.input_audio_transcription.completed` (usage: audio seconds)."""
        return self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": seconds},
        )

    def transcription_failed(self, item_id: str, problem: Problem) -> dict[str, Any]:
        """`conversation.item.input_audio_transcription.failed`."""
        return self._event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": problem.type, "code": problem.code, "message": problem.message},
        )

    def user_item(
        self, item_id: str, text: str | None = None, transcript: str | None = None
    ) -> dict[str, Any]:
        """A user message item: typed `text`, or audio with its `transcript` (None: not yet)."""
        content: dict[str, Any] = (
            {"type": "input_text", "text": text}
            if text is not None
            else {"type": "input_audio", "transcript": transcript}
        )
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [content],
        }

    def assistant_item(
        self, item_id: str, status: ResponseStatus, text: str | None, text_only: bool
    ) -> dict[str, Any]:
        """An assistant message item; its one content part carries `text` (None: none yet)."""
        if text_only:
            kind = "output_text" if self.dialect == "ga" else "text"
            content: list[dict[str, Any]] = [{"type": kind, "text": text or ""}]
        else:
            kind = "output_audio" if self.dialect == "ga" else "audio"
            content = [{"type": kind, "transcript": text}]
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": _item_status(status),
            "content": content if text is not None else [],
        }

    # ---- responses -------------------------------------------------------------

    def response(
        self,
        response_id: str,
        status: ResponseStatus,
        output: list[dict[str, Any]],
        *,
        text_only: bool,
        voice: str | None,
        output_format: AudioFormat,
        reason: str | None = None,
        error: Problem | None = None,
    ) -> dict[str, Any]:
        """A response object (`reason`: why it was cancelled or is incomplete)."""
        details: dict[str, Any] | None = None
        if status != "in_progress" and status != "completed":
            details = {"type": status, "reason": reason}
            if error is not None:
                details["error"] = {"type": error.type, "code": error.code}
        body: dict[str, Any] = {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": None,
            "usage": None,
            "metadata": None,
            "max_output_tokens": "inf",
        }
        if self.dialect == "beta":
            body["modalities"] = ["text"] if text_only else ["audio", "text"]
            body["voice"] = voice
            body["output_audio_format"] = output_format.beta()
        else:
            body["output_modalities"] = ["text"] if text_only else ["audio"]
            body["audio"] = {"output": {"format": output_format.ga(), "voice": voice}}
        return body

    def response_created(self, response: dict[str, Any]) -> dict[str, Any]:
        """`response.created`."""
        return self._event("response.created", response=response)

    def response_done(self, response: dict[str, Any]) -> dict[str, Any]:
        """`response.done` (status completed, cancelled, failed or incomplete)."""
        return self._event("response.done", response=response)

    def output_item_added(
        self, response_id: str, item: dict[str, Any], output_index: int = 0
    ) -> dict[str, Any]:
        """`response.output_item.added` (the message is index 0, function calls follow)."""
        return self._event(
            "response.output_item.added",
            response_id=response_id,
            output_index=output_index,
            item=item,
        )

    def output_item_done(
        self, response_id: str, item: dict[str, Any], output_index: int = 0
    ) -> dict[str, Any]:
        """`response.output_item.done`."""
        return self._event(
            "response.output_item.done",
            response_id=response_id,
            output_index=output_index,
            item=item,
        )

    def function_call_item(
        self, item_id: str, call_id: str, name: str, arguments: str, status: ResponseStatus
    ) -> dict[str, Any]:
        """A `function_call` item: the model calls `name` with `arguments` (JSON text)."""
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": _item_status(status),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }

    def function_call_output_item(self, item_id: str, call_id: str, output: str) -> dict[str, Any]:
        """A `function_call_output` item: the client's result of call `call_id`."""
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call_output",
            "status": "completed",
            "call_id": call_id,
            "output": output,
        }

    def arguments_delta(
        self, response_id: str, item_id: str, output_index: int, call_id: str, delta: str
    ) -> dict[str, Any]:
        """`response.function_call_arguments.delta`."""
        return self._event(
            "response.function_call_arguments.delta",
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            delta=delta,
        )

    def arguments_done(
        self,
        response_id: str,
        item_id: str,
        output_index: int,
        call_id: str,
        name: str,
        arguments: str,
    ) -> dict[str, Any]:
        """`response.function_call_arguments.done` (the whole arguments)."""
        return self._event(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )

    def _part(self, text_only: bool, text: str) -> dict[str, Any]:
        return (
            {"type": "text", "text": text} if text_only else {"type": "audio", "transcript": text}
        )

    def content_part_added(self, response_id: str, item_id: str, text_only: bool) -> dict[str, Any]:
        """`response.content_part.added` (empty)."""
        return self._event(
            "response.content_part.added",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=self._part(text_only, ""),
        )

    def content_part_done(
        self, response_id: str, item_id: str, text_only: bool, text: str
    ) -> dict[str, Any]:
        """`response.content_part.done` (with the whole text or transcript)."""
        return self._event(
            "response.content_part.done",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=self._part(text_only, text),
        )

    def _delta(self, name: str, response_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
        return self._event(
            name,
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            **fields,
        )

    def audio_delta(self, response_id: str, item_id: str, audio: str) -> dict[str, Any]:
        """`response.output_audio.delta` (beta `response.audio.delta`): base64 audio."""
        return self._delta(f"{self._names['audio']}.delta", response_id, item_id, delta=audio)

    def audio_done(self, response_id: str, item_id: str) -> dict[str, Any]:
        """`response.output_audio.done` (beta `response.audio.done`)."""
        return self._delta(f"{self._names['audio']}.done", response_id, item_id)

    def transcript_delta(self, response_id: str, item_id: str, text: str) -> dict[str, Any]:
        """`response.output_audio_transcript.delta` (beta `response.audio_transcript.delta`)."""
        return self._delta(f"{self._names['transcript']}.delta", response_id, item_id, delta=text)

    def transcript_done(self, response_id: str, item_id: str, text: str) -> dict[str, Any]:
        """`response.output_audio_transcript.done` (beta `response.audio_transcript.done`)."""
        return self._delta(
            f"{self._names['transcript']}.done", response_id, item_id, transcript=text
        )

    def text_delta(self, response_id: str, item_id: str, text: str) -> dict[str, Any]:
        """`response.output_text.delta` (beta `response.text.delta`): text-only replies."""
        return self._delta(f"{self._names['text']}.delta", response_id, item_id, delta=text)

    def text_done(self, response_id: str, item_id: str, text: str) -> dict[str, Any]:
        """`response.output_text.done` (beta `response.text.done`)."""
        return self._delta(f"{self._names['text']}.done", response_id, item_id, text=text)
