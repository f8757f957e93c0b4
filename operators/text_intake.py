"""`text_intake`: a speak request's later messages in; its text pieces and notices out.

The request's first text (from its `speak` message) goes out at subscription,
then each valid `text` message's piece until one says `final: true`. What cannot
be taken becomes a notice frame: non-terminal for a duplicate `speak`, an
unknown message type, text after final or a bad `text` body; terminal
`text_too_long` once the whole text passes `max_text_chars`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from reactivex import Observable, abc

from audio.sentences import TextPiece
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.messages import ClientMessage
from protocol.speak import SPEAK, TEXT, TextRequestIn


@dataclass
class TextState:
    """What a request's text intake has taken so far."""

    characters: int = 0
    final: bool = False


def text_intake(
    first: TextPiece, frames: FrameFactory, max_chars: int, state: TextState
) -> Callable[[Observable[ClientMessage]], Observable[TextPiece | Frame]]:
    """A speak request's later messages in; its text pieces (first one first) and notices out.

    later:  ---t1--s--t2(final)--t3-
    result: P0-P1--D--P2---------E--    (D: duplicate, E: text after final; both
                                         non-terminal; `text_too_long` is terminal)
    `first` is emitted when the result is subscribed, before the source is (a
    source that is hot loses nothing: it is subscribed in the same call).
    `state` counts the characters taken (the `done` frame reports them).
    """

    def operator(later: Observable[ClientMessage]) -> Observable[TextPiece | Frame]:
        def subscribe(
            observer: abc.ObserverBase[TextPiece | Frame],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            state.characters, state.final = len(first.text), first.final

            def notice(name: str, message: str) -> None:
                observer.on_next(frames.error(name, message, finish_reason=None))

            def handle(msg: ClientMessage) -> None:
                if msg.type == SPEAK:
                    notice(
                        ErrorName.DUPLICATE_REQUEST_ID,
                        f"request {msg.request_id!r} is still in flight; this speak message "
                        "was ignored (use a new request_id, or send type 'text')",
                    )
                    return
                if msg.type != TEXT:
                    notice(
                        ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                        f"speak accepts 'speak', 'text' and 'cancel' messages, not {msg.type!r}",
                    )
                    return
                if state.final:
                    notice(ErrorName.INVALID_REQUEST, "the text already ended (final: true)")
                    return
                try:
                    piece = TextRequestIn.model_validate(msg.body)
                except ValidationError:
                    notice(ErrorName.INVALID_REQUEST, "text must be a string and final a boolean")
                    return
                state.characters += len(piece.text)
                if state.characters > max_chars:
                    observer.on_next(
                        frames.error(
                            ErrorName.TEXT_TOO_LONG,
                            f"the text passed {max_chars} characters (max_text_chars)",
                            limit="max_text_chars",
                        )
                    )
                    return
                state.final = piece.final
                observer.on_next(TextPiece(piece.text, piece.final))

            observer.on_next(first)
            return later.subscribe(
                handle, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
