"""Which Realtime response runs: `response.create` / `response.cancel` in, the
conversation's reply events routed to the running response's output.

    response.create ─► CreateResponse (held while committed audio is unheard)
    response.cancel ─► CancelResponse (or drops a held create)
    ReplyStarted / ReplyText / ReplyAudio / ReplyAudioDropped / ReplyInterrupted /
    ReplyToolCalls / TurnEnded ─► ResponseOutput

At most one response is asked for or running at a time; the calls of the last
completed response wait for their outputs (`take_call`).
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.conversation_types import (
    CancelResponse,
    CreateResponse,
    ReplyAudio,
    ReplyAudioDropped,
    ReplyInterrupted,
    ReplyText,
    ReplyToolCalls,
    TurnEnded,
)
from realtime.channel import Channel
from realtime.client_events import ResponseCancel, ResponseCreate
from realtime.problems import Problem
from realtime.response_output import Response, ResponseOutput


class Responses:
    """One session's response requests and its running response; `later` runs a
    callable after the current conversation event is handled."""

    def __init__(self, channel: Channel, later: Callable[[Callable[[], None]], object]) -> None:
        self.channel = channel
        self.later = later
        self.output = ResponseOutput(channel)
        self.held_create: ResponseCreate | None = None
        self.requested = False  # a response.create is with the conversation, not yet started
        self.response: Response | None = None
        self.next_text_only: bool | None = None
        self.open_calls: set[str] = set()  # call ids of the last response without output

    @property
    def busy(self) -> bool:
        """Whether a response is running, asked for, or held for a transcript."""
        return self.response is not None or self.requested or self.held_create is not None

    def take_call(self, call_id: str) -> bool:
        """Whether call `call_id` waits for its output; it stops waiting."""
        if call_id not in self.open_calls:
            return False
        self.open_calls.discard(call_id)
        return True

    # ---- client events -----------------------------------------------------------

    def create(self, event: ResponseCreate, unheard: bool) -> None:
        """`response.create`; held while `unheard` (committed audio without a transcript)."""
        if self.busy:
            raise Problem(
                "conversation_already_has_active_response",
                "a response is already in progress; cancel it first",
            )
        if unheard:
            self.held_create = event  # answered once the committed audio is heard
            return
        self._respond(event)

    def release(self) -> None:
        """The committed audio was heard (or failed): a held `response.create` goes on."""
        if self.held_create is not None:
            held, self.held_create = self.held_create, None
            # after the conversation has taken the transcript this event announced
            self.later(lambda: self._respond(held))

    def _respond(self, event: ResponseCreate) -> None:
        self.requested = True
        self.next_text_only = event.text_only
        self.channel.send(CreateResponse(event.instructions))

    def cancel(self, event: ResponseCancel) -> None:
        """`response.cancel`: the running response stops (or a held create is dropped)."""
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
        self.channel.send(CancelResponse())

    def refused(self) -> None:
        """The conversation refused the asked-for response (nothing to answer, ...)."""
        self.requested = False

    # ---- conversation events -----------------------------------------------------

    def started(self) -> None:
        """A reply started: it is the new response (calls still unanswered are dropped)."""
        self.requested = False
        self.open_calls.clear()  # the conversation goes on without calls still unanswered
        settings = self.channel.settings
        text_only = settings.text_only if self.next_text_only is None else self.next_text_only
        self.next_text_only = None
        self.response = self.output.start(text_only)

    def text(self, event: ReplyText) -> None:
        """A piece of the reply's text."""
        if self.response is not None:
            self.output.text(self.response, event.delta)

    def audio(self, event: ReplyAudio) -> None:
        """Reply audio."""
        if self.response is not None:
            self.output.audio(self.response, event)

    def dropped(self, event: ReplyAudioDropped) -> None:
        """A speak model failed mid-sentence: its samples already sent are not sent again."""
        if self.response is not None:
            self.response.skip_samples += event.samples

    def interrupted(self, event: ReplyInterrupted) -> None:
        """The reply stopped: why, for `response.done`'s status details."""
        if self.response is not None:
            cancelled = event.reason == "cancelled"
            self.response.reason = "client_cancelled" if cancelled else "turn_detected"

    def tool_calls(self, event: ReplyToolCalls) -> None:
        """The reply's tool calls, sent as function call items when it ends."""
        if self.response is not None:
            self.response.calls = tuple((c.id, c.name, c.arguments) for c in event.calls)

    def ended(self, event: TurnEnded) -> None:
        """The turn ended: the response is done."""
        response = self.response
        if response is None:
            return
        self.response = None
        self.open_calls.update(self.output.end(response, event))
