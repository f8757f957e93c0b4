"""The Realtime protocol over a conversation: client events -> conversation inputs,
conversation events -> server events, with the session's ids.

    client event ─► Bridge.on_client_event ─┬─► send(ConversationInput) ─► converse
                                            └─► emit(server event)  (errors, acks)
    conversation event ─► Bridge.on_event ─► emit(server events)

`Bridge` holds one session's state and does no I/O: the endpoint hands it two
callables (`send` into the conversation, `emit` to the socket). How the two
protocols meet:

- Turn detection on: appended audio goes to the conversation's VAD at once;
  `SpeechStarted` opens a user item (`input_audio_buffer.speech_started`), its
  end commits it (`speech_stopped`, `committed`, `conversation.item.created`),
  its final transcript completes it (`…input_audio_transcription.completed`),
  and the conversation replies by itself.
- Turn detection off: appended audio is buffered here; `commit` sends it to the
  conversation as one segment; a `response.create` sent before that segment's
  transcript arrives waits for it, so `commit` + `response.create` back to back
  answer what was said.
- A reply is one response with one assistant message item: `response.created`,
  `response.output_item.added`, `conversation.item.created`,
  `response.content_part.added`, transcript (or text) and audio deltas, then the
  `.done` events and `response.done` (`completed`, `cancelled` with
  `turn_detected` / `client_cancelled`, or `failed`).
- Tools: `session.update` `tools` / `tool_choice` go to the conversation in the
  chat shapes. A reply that calls tools ends its response with one `function_call`
  output item per call after the message item (`output_item.added`,
  `conversation.item.created`, `function_call_arguments.delta` with the whole
  arguments, `.done`, `output_item.done`), all in `response.done`'s output. A
  `function_call_output` item answers one (`ToolResult`, no automatic reply);
  `response.create` then answers from the results.
- A speak model failing inside a sentence: the Realtime API cannot take back
  audio the client has, so the next model's audio of that sentence is sent from
  where the failed one stopped (as many samples skipped), not from its start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from operators.vad import SpeechEnded, SpeechStarted
from pipelines.conversation_types import (
    CancelResponse,
    ClearAudio,
    CommitAudio,
    Configure,
    ConversationEvent,
    ConversationInput,
    CreateResponse,
    Notice,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplyStarted,
    ReplyText,
    ReplyToolCalls,
    ToolResult,
    TurnEnded,
    UserAudio,
    UserText,
)
from pipelines.listen_router import SegmentTranscript
from pipelines.speech_in import Transcribed
from realtime.client_events import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    ClientEvent,
    ItemCreate,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
)
from realtime.formats import PIPELINE_RATE, FormatError, InputDecoder, OutputEncoder, decode_base64
from realtime.ids import Ids
from realtime.problems import Problem
from realtime.server_events import ResponseStatus, ServerEvents
from realtime.session import SessionSettings, apply_update, chat_tool_choice, chat_tools

Send = Callable[[ConversationInput], None]
Emit = Callable[[dict[str, Any]], None]

_NOTICE_CODES = {
    "audio_buffer_empty": "input_audio_buffer_commit_empty",
    "reply_in_progress": "conversation_already_has_active_response",
    "no_active_reply": "response_cancel_not_active",
    "unknown_tool_call": "invalid_value",
}

_STATUS: dict[str, ResponseStatus] = {
    "complete": "completed",
    "interrupted": "cancelled",
    "error": "failed",
}


@dataclass
class _Response:
    id: str
    item_id: str
    text_only: bool
    encoder: OutputEncoder
    text: list[str] = field(default_factory=list)
    skip_samples: int = 0
    reason: str | None = None
    calls: tuple[tuple[str, str, str], ...] = ()  # (call_id, name, arguments)


class Bridge:
    """One Realtime session between its socket and its conversation."""

    def __init__(
        self,
        settings: SessionSettings,
        events: ServerEvents,
        ids: Ids,
        send: Send,
        emit: Emit,
        max_buffer_bytes: int,
        later: Callable[[Callable[[], None]], object],
    ) -> None:
        self.settings = settings
        self.events = events
        self.ids = ids
        self.send = send
        self.emit = emit
        self.max_buffer_bytes = max_buffer_bytes
        self.later = later
        self.decoder = InputDecoder(settings.input_format)
        self.buffer = bytearray()  # turn detection off: 16 kHz PCM since the last commit
        self.last_item: str | None = None
        self.vad_items: dict[int, str] = {}  # VAD segment id -> user item id
        self.manual_items: dict[int, str] = {}  # committed segment number -> user item id
        self.manual_count = 0
        self.awaiting: deque[int] = deque()  # committed segments without a final yet
        self.held_create: ResponseCreate | None = None
        self.requested = False  # a response.create is with the conversation, not yet started
        self.response: _Response | None = None
        self.next_text_only: bool | None = None
        self.open_calls: set[str] = set()  # call ids of the last response without output

    # ---- start -------------------------------------------------------------------

    def start(self) -> None:
        """Emit `session.created` (the first event of every session)."""
        self.emit(self.events.session_created(self.settings))

    def fail(self, problem: Problem) -> None:
        """Emit `error` for a problem with a client event."""
        self.emit(self.events.error(problem))

    # ---- client events -----------------------------------------------------------

    def on_client_event(self, event: ClientEvent) -> None:
        """One parsed client event in; conversation inputs and server events out."""
        try:
            self._dispatch(event)
        except Problem as problem:
            self.fail(problem.about(problem.event_id or event.event_id))

    def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            self._append(event)
        elif isinstance(event, SessionUpdate):
            self._update(event)
        elif isinstance(event, AudioCommit):
            self._commit(event)
        elif isinstance(event, AudioClear):
            self.buffer.clear()
            self.decoder.flush()
            self.send(ClearAudio())
            self.emit(self.events.cleared())
        elif isinstance(event, ItemCreate):
            self._item(event)
        elif isinstance(event, ResponseCreate):
            self._create(event)
        else:
            self._cancel(event)

    def _append(self, event: AudioAppend) -> None:
        try:
            data = decode_base64(event.audio)
        except FormatError as error:
            raise Problem("invalid_value", str(error), "audio") from error
        pcm = self.decoder.decode(data)
        if self.settings.turn_detection is not None:
            if pcm:
                self.send(UserAudio(pcm))
            return
        if len(self.buffer) + len(pcm) > self.max_buffer_bytes:
            seconds = self.max_buffer_bytes // (2 * PIPELINE_RATE)
            raise Problem(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {seconds} s; commit or clear it",
                "audio",
            )
        self.buffer.extend(pcm)

    def _update(self, event: SessionUpdate) -> None:
        before = self.settings
        after = apply_update(before, event.session)
        if after.input_format != before.input_format:
            self._to_buffer_or_vad(self.decoder.flush())
            self.decoder = InputDecoder(after.input_format)
        self.settings = after
        vad_now = after.turn_detection is not None
        vad_changed = vad_now != (before.turn_detection is not None)
        self.send(
            Configure(
                instructions=after.instructions
                if after.instructions != before.instructions
                else None,
                voice=after.voice if after.voice != before.voice else None,
                turn_detection=vad_now if vad_changed else None,
                tools=chat_tools(after.tools) if after.tools != before.tools else None,
                tool_choice=chat_tool_choice(after.tool_choice)
                if after.tool_choice != before.tool_choice
                else None,
            )
        )
        if vad_changed and vad_now and self.buffer:
            # what was buffered for a commit goes to the VAD, as OpenAI's buffer would
            self.send(UserAudio(bytes(self.buffer)))
            self.buffer.clear()
        self.emit(self.events.session_updated(after))

    def _to_buffer_or_vad(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self.settings.turn_detection is not None:
            self.send(UserAudio(pcm))
        else:
            self.buffer.extend(pcm)

    def _commit(self, event: AudioCommit) -> None:
        self.buffer.extend(self.decoder.flush())
        if self.settings.turn_detection is not None:
            raise Problem(
                "input_audio_buffer_commit_unsupported",
                "with turn detection on, the server commits the buffer when speech ends; "
                "turn it off (session.update turn_detection: null) to commit by hand",
            )
        if len(self.buffer) < 2 * PIPELINE_RATE // 10:
            raise Problem(
                "input_audio_buffer_commit_empty",
                f"the buffer holds {len(self.buffer) * 1000 // (2 * PIPELINE_RATE)} ms of "
                "audio; at least 100 ms are needed to commit",
            )
        self._send_segment(bytes(self.buffer))
        self.buffer.clear()

    def _send_segment(self, pcm: bytes) -> str:
        """Hand `pcm` to the conversation as one committed segment; its user item's id out."""
        item_id = self.ids.make("item")
        number = self.manual_count
        self.manual_count += 1
        self.manual_items[number] = item_id
        self.awaiting.append(number)
        vad = self.settings.turn_detection is not None
        if vad:  # the conversation buffers for a commit only while its VAD is off
            self.send(Configure(turn_detection=False))
        self.send(UserAudio(pcm))
        self.send(CommitAudio())
        if vad:
            self.send(Configure(turn_detection=True))
        self.emit(self.events.committed(item_id, self.last_item))
        self._created(self.events.user_item(item_id))
        return item_id

    def _created(self, item: dict[str, Any]) -> None:
        self.emit(self.events.item_created(item, self.last_item))
        self.last_item = str(item["id"])

    def _item(self, event: ItemCreate) -> None:
        item = event.item
        if item.get("type") == "function_call_output":
            self._call_output(item)
            return
        if item.get("type", "message") != "message":
            raise Problem(
                "unsupported",
                f"items of type {item.get('type')!r} are not supported "
                "(only messages and function_call_output)",
                "item.type",
            )
        role = item.get("role")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise Problem("invalid_value", "item.content must be a non-empty list", "item.content")
        texts: list[str] = []
        audio: list[bytes] = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "input_audio":
                audio.append(self._decode_item_audio(part.get("audio"), index))
            else:
                raise Problem(
                    "invalid_value",
                    f"content part {index} must be input_text (with text) or input_audio",
                    f"item.content[{index}]",
                )
        if role == "system":
            if audio:
                raise Problem("invalid_value", "system items carry text only", "item.content")
            instructions = " ".join(texts)
            self.settings = replace(self.settings, instructions=instructions)
            self.send(Configure(instructions=instructions))
            self._created(self._text_item(item, "system", instructions))
        elif role == "user":
            if audio and texts:
                raise Problem(
                    "invalid_value", "a user item is either text or audio, not both", "item.content"
                )
            if texts:
                text = " ".join(texts)
                self.send(UserText(text, respond=False))
                self._created(self._text_item(item, "user", text))
            else:
                self._send_segment(b"".join(audio))
        else:
            raise Problem(
                "unsupported",
                "only user and system messages can be added (assistant items are not)",
                "item.role",
            )

    def _call_output(self, item: dict[str, Any]) -> None:
        call_id = item.get("call_id")
        output = item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise Problem(
                "invalid_value", "a function_call_output needs its call_id", "item.call_id"
            )
        if not isinstance(output, str):
            raise Problem("invalid_value", "output must be a string", "item.output")
        if call_id not in self.open_calls:
            raise Problem(
                "invalid_value",
                f"no function call {call_id!r} of the last response is waiting for its output",
                "item.call_id",
            )
        self.open_calls.discard(call_id)
        self.send(ToolResult(call_id, output, respond=False))
        given = item.get("id")
        item_id = given if isinstance(given, str) and given else self.ids.make("item")
        self._created(self.events.function_call_output_item(item_id, call_id, output))

    def _text_item(self, item: dict[str, Any], role: str, text: str) -> dict[str, Any]:
        given = item.get("id")
        item_id = given if isinstance(given, str) and given else self.ids.make("item")
        body = self.events.user_item(item_id, text=text)
        body["role"] = role
        return body

    def _decode_item_audio(self, audio: object, index: int) -> bytes:
        try:
            data = decode_base64(audio)
        except FormatError as error:
            raise Problem("invalid_value", str(error), f"item.content[{index}].audio") from error
        decoder = InputDecoder(self.settings.input_format)
        return decoder.decode(data) + decoder.flush()

    def _create(self, event: ResponseCreate) -> None:
        if self.response is not None or self.held_create is not None or self.requested:
            raise Problem(
                "conversation_already_has_active_response",
                "a response is already in progress; cancel it first",
            )
        if self.awaiting:
            self.held_create = event  # answered once the committed audio is heard
            return
        self._respond(event)

    def _respond(self, event: ResponseCreate) -> None:
        self.requested = True
        self.next_text_only = event.text_only
        self.send(CreateResponse(event.instructions))

    def _cancel(self, event: ResponseCancel) -> None:
        if self.held_create is not None and self.response is None:
            self.held_create = None
            return
        if self.response is None or (
            event.response_id is not None and event.response_id != self.response.id
        ):
            raise Problem(
                "response_cancel_not_active",
                "there is no response in progress to cancel"
                if event.response_id is None
                else f"response {event.response_id!r} is not in progress",
                "response_id" if event.response_id else None,
            )
        self.send(CancelResponse())

    # ---- conversation events -----------------------------------------------------

    def on_event(self, event: ConversationEvent) -> None:
        """One conversation event in; the server events it means out."""
        if isinstance(event, ReplyAudio):
            self._audio(event)
        elif isinstance(event, ReplyText):
            self._text(event)
        elif isinstance(event, SpeechStarted):
            item_id = self.ids.make("item")
            self.vad_items[event.segment_id] = item_id
            self.emit(self.events.speech_started(event.audio_start_ms, item_id))
        elif isinstance(event, SpeechEnded):
            item_id = self.vad_items.get(event.segment_id) or self.ids.make("item")
            self.vad_items[event.segment_id] = item_id
            self.emit(self.events.speech_stopped(event.audio_end_ms, item_id))
            self.emit(self.events.committed(item_id, self.last_item))
            self._created(self.events.user_item(item_id))
        elif isinstance(event, Transcribed):
            self._transcribed(event)
        elif isinstance(event, ReplyStarted):
            self._reply_started()
        elif isinstance(event, ReplyAudioDropped):
            if self.response is not None:
                self.response.skip_samples += event.samples
        elif isinstance(event, ReplyInterrupted):
            if self.response is not None:
                cancelled = event.reason == "cancelled"
                self.response.reason = "client_cancelled" if cancelled else "turn_detected"
        elif isinstance(event, ReplyToolCalls):
            if self.response is not None:
                self.response.calls = tuple((c.id, c.name, c.arguments) for c in event.calls)
        elif isinstance(event, TurnEnded):
            self._turn_ended(event)
        elif isinstance(event, Notice):
            self._notice(event)

    def _manual(self, segment_id: int) -> bool:
        """Whether transcripts of `segment_id` are of a committed segment (not the VAD's)."""
        if segment_id not in self.awaiting:
            return False
        return self.settings.turn_detection is None or segment_id not in self.vad_items

    def _transcribed(self, event: Transcribed) -> None:
        transcript = event.item
        if not isinstance(transcript, SegmentTranscript) or not transcript.is_final:
            return
        if self._manual(event.segment_id):
            self.awaiting.remove(event.segment_id)
            item_id = self.manual_items.pop(event.segment_id)
            self._heard(item_id, transcript)
            self._release_create()
            return
        vad_item = self.vad_items.pop(event.segment_id, None)
        if vad_item is not None:
            self._heard(vad_item, transcript)

    def _heard(self, item_id: str, transcript: SegmentTranscript) -> None:
        seconds = max(0, transcript.end_ms - transcript.start_ms) / 1000
        self.emit(self.events.transcription_completed(item_id, transcript.text.strip(), seconds))

    def _release_create(self) -> None:
        if not self.awaiting and self.held_create is not None:
            held, self.held_create = self.held_create, None
            # after the conversation has taken the transcript this event announced
            self.later(lambda: self._respond(held))

    def _reply_started(self) -> None:
        self.requested = False
        self.open_calls.clear()  # the conversation goes on without calls still unanswered
        text_only = self.settings.text_only if self.next_text_only is None else self.next_text_only
        self.next_text_only = None
        response = _Response(
            self.ids.make("resp"),
            self.ids.make("item"),
            text_only,
            OutputEncoder(self.settings.output_format),
        )
        self.response = response
        item = self.events.assistant_item(response.item_id, "in_progress", None, text_only)
        self.emit(self.events.response_created(self._response_body(response, "in_progress", [])))
        self.emit(self.events.output_item_added(response.id, item))
        self._created(item)
        self.emit(self.events.content_part_added(response.id, response.item_id, text_only))

    def _response_body(
        self,
        response: _Response,
        status: ResponseStatus,
        output: list[dict[str, Any]],
        error: Problem | None = None,
    ) -> dict[str, Any]:
        return self.events.response(
            response.id,
            status,
            output,
            text_only=response.text_only,
            voice=self.settings.voice,
            output_format=self.settings.output_format,
            reason=response.reason,
            error=error,
        )

    def _text(self, event: ReplyText) -> None:
        response = self.response
        if response is None or not event.delta:
            return
        response.text.append(event.delta)
        if response.text_only:
            self.emit(self.events.text_delta(response.id, response.item_id, event.delta))
        else:
            self.emit(self.events.transcript_delta(response.id, response.item_id, event.delta))

    def _audio(self, event: ReplyAudio) -> None:
        response = self.response
        if response is None or response.text_only:
            return
        samples = event.samples
        if response.skip_samples:
            skipped = min(response.skip_samples, samples.size)
            response.skip_samples -= skipped
            samples = samples[skipped:]
        audio = response.encoder.encode(samples)
        if audio:
            self.emit(self.events.audio_delta(response.id, response.item_id, audio))

    def _turn_ended(self, event: TurnEnded) -> None:
        response = self.response
        if response is None:
            return
        self.response = None
        text = "".join(response.text)
        status = _STATUS[event.reason]
        problem = None
        if event.error is not None:
            problem = Problem("all_models_unavailable", str(event.error), type="server_error")
        if response.text_only:
            self.emit(self.events.text_done(response.id, response.item_id, text))
        else:
            if status == "completed":
                tail = response.encoder.flush()
                if tail:
                    self.emit(self.events.audio_delta(response.id, response.item_id, tail))
            self.emit(self.events.audio_done(response.id, response.item_id))
            self.emit(self.events.transcript_done(response.id, response.item_id, text))
        self.emit(
            self.events.content_part_done(response.id, response.item_id, response.text_only, text)
        )
        item = self.events.assistant_item(response.item_id, status, text, response.text_only)
        self.emit(self.events.output_item_done(response.id, item))
        output = [item]
        if status == "completed":
            output.extend(self._function_calls(response))
        self.emit(self.events.response_done(self._response_body(response, status, output, problem)))

    def _function_calls(self, response: _Response) -> list[dict[str, Any]]:
        """The response's function calls as output items after its message (index 1...)."""
        items: list[dict[str, Any]] = []
        for index, (call_id, name, arguments) in enumerate(response.calls, start=1):
            item_id = self.ids.make("item")
            events = self.events
            added = events.function_call_item(item_id, call_id, name, "", "in_progress")
            self.emit(events.output_item_added(response.id, added, index))
            self._created(added)
            self.emit(events.arguments_delta(response.id, item_id, index, call_id, arguments))
            self.emit(events.arguments_done(response.id, item_id, index, call_id, name, arguments))
            done = events.function_call_item(item_id, call_id, name, arguments, "completed")
            self.emit(events.output_item_done(response.id, done, index))
            self.open_calls.add(call_id)
            items.append(done)
        return items

    def _notice(self, event: Notice) -> None:
        if event.name == "transcription_failed" and self.awaiting:
            number = self.awaiting.popleft()
            item_id = self.manual_items.pop(number)
            problem = Problem("transcription_failed", event.message, type="server_error")
            self.emit(self.events.transcription_failed(item_id, problem))
            self._release_create()
            return
        if event.name in ("nothing_to_answer", "reply_in_progress"):
            self.requested = False
        code = _NOTICE_CODES.get(event.name, event.name)
        self.fail(Problem(code, event.message))
