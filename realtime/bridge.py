"""The Realtime protocol over a conversation: client events -> conversation inputs,
conversation events -> server events, with the session's ids.

    client event ─► Bridge.on_client_event ─┬─► send(ConversationInput) ─► converse
                                            └─► emit(server event)  (errors, acks)
    conversation event ─► Bridge.on_event ─► emit(server events)

`Bridge` does no I/O: the endpoint hands it two callables (`send` into the
conversation, `emit` to the socket). It is a composition of one part per job, all
sharing a `Channel` (settings, ids, outlets): `InputBuffer` (appended audio),
`UserItems` (the user's items and their transcripts), `ItemCreator`
(`conversation.item.create`), `Responses` / `ResponseOutput` (responses and what
they say). How the two protocols meet:

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

from collections.abc import Callable

from operators.vad import SpeechEnded, SpeechStarted
from pipelines.conversation_types import (
    Configure,
    ConversationEvent,
    Notice,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplyStarted,
    ReplyText,
    ReplyToolCalls,
    TurnEnded,
)
from pipelines.speech_in import Transcribed
from realtime.channel import Channel, Emit, Send
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
from realtime.ids import Ids
from realtime.input_buffer import InputBuffer
from realtime.item_create import ItemCreator
from realtime.problems import Problem
from realtime.responses import Responses
from realtime.server_events import ServerEvents
from realtime.session import SessionSettings, apply_update, chat_tool_choice, chat_tools
from realtime.user_items import UserItems

__all__ = ["Bridge", "Emit", "Send"]

_NOTICE_CODES = {
    "audio_buffer_empty": "input_audio_buffer_commit_empty",
    "reply_in_progress": "conversation_already_has_active_response",
    "no_active_reply": "response_cancel_not_active",
    "unknown_tool_call": "invalid_value",
}


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
        self.channel = Channel(settings, events, ids, send, emit)
        self.audio = InputBuffer(self.channel, max_buffer_bytes)
        self.users = UserItems(self.channel)
        self.responses = Responses(self.channel, later)
        self.items = ItemCreator(self.channel, self.audio, self.users, self.responses.take_call)

    @property
    def settings(self) -> SessionSettings:
        """The session's settings now."""
        return self.channel.settings

    @property
    def busy(self) -> bool:
        """Whether a response is running or asked for (in-flight work, for a drain)."""
        return self.responses.busy

    def start(self) -> None:
        """Emit `session.created` (the first event of every session)."""
        self.channel.emit(self.channel.events.session_created(self.settings))

    def fail(self, problem: Problem) -> None:
        """Emit `error` for a problem with a client event."""
        self.channel.fail(problem)

    # ---- client events -----------------------------------------------------------

    def on_client_event(self, event: ClientEvent) -> None:
        """One parsed client event in; conversation inputs and server events out."""
        try:
            self._dispatch(event)
        except Problem as problem:
            self.fail(problem.about(problem.event_id or event.event_id))

    def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            self.audio.append(event)
        elif isinstance(event, SessionUpdate):
            self._update(event)
        elif isinstance(event, AudioCommit):
            self.users.submit(self.audio.commit())
        elif isinstance(event, AudioClear):
            self.audio.clear()
        elif isinstance(event, ItemCreate):
            self.items.create(event)
        elif isinstance(event, ResponseCreate):
            self.responses.create(event, unheard=bool(self.users.awaiting))
        elif isinstance(event, ResponseCancel):
            self.responses.cancel(event)

    def _update(self, event: SessionUpdate) -> None:
        before = self.settings
        after = apply_update(before, event.session)
        if after.input_format != before.input_format:
            self.audio.reformat(after.input_format)
        self.channel.settings = after
        vad_now = after.turn_detection is not None
        vad_changed = vad_now != (before.turn_detection is not None)
        self.channel.send(
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
        if vad_changed and vad_now:
            self.audio.to_vad()
        self.channel.emit(self.channel.events.session_updated(after))

    # ---- conversation events -----------------------------------------------------

    def on_event(self, event: ConversationEvent) -> None:
        """One conversation event in; the server events it means out."""
        responses = self.responses
        if isinstance(event, ReplyAudio):
            responses.audio(event)
        elif isinstance(event, ReplyText):
            responses.text(event)
        elif isinstance(event, SpeechStarted):
            self.users.speech_started(event)
        elif isinstance(event, SpeechEnded):
            self.users.speech_ended(event)
        elif isinstance(event, Transcribed):
            if self.users.transcribed(event):
                self._heard_committed()
        elif isinstance(event, ReplyStarted):
            responses.started()
        elif isinstance(event, ReplyAudioDropped):
            responses.dropped(event)
        elif isinstance(event, ReplyInterrupted):
            responses.interrupted(event)
        elif isinstance(event, ReplyToolCalls):
            responses.tool_calls(event)
        elif isinstance(event, TurnEnded):
            responses.ended(event)
        elif isinstance(event, Notice):
            self._notice(event)

    def _heard_committed(self) -> None:
        if not self.users.awaiting:
            self.responses.release()

    def _notice(self, event: Notice) -> None:
        if event.name == "transcription_failed" and self.users.transcription_failed(event.message):
            self._heard_committed()
            return
        if event.name in ("nothing_to_answer", "reply_in_progress"):
            self.responses.refused()
        code = _NOTICE_CODES.get(event.name, event.name)
        self.fail(Problem(code, event.message))
