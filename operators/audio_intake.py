"""`audio_intake`: a listen request's later messages in; decoded PCM, notices and its end out.

The client's audio (binary frames in any chunk sizes, any declared encoding) is
decoded, downmixed and resampled to `PIPELINE_RATE` by the request's
`audio.pcm` decoder; `end` and `max_audio_seconds` end it; late or unexpected
messages become non-terminal notice frames. `intake_pcm` / `intake_notices`
split the result into what the VAD hears and what goes straight to the client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from reactivex import Observable, abc
from reactivex import operators as ops

from audio.pcm import AudioDecoder, AudioFormatError
from protocol.frames import ErrorName, Frame, FrameFactory
from protocol.listen import (
    AUDIO,
    AUDIO_OFFSET,
    END,
    LISTEN,
    ListenError,
    ListenErrorName,
    ListenRequestIn,
)
from protocol.messages import ClientMessage

PIPELINE_RATE = 16000
"""Every request's audio is resampled to this rate for the VAD and the providers."""


@dataclass(frozen=True, slots=True)
class EndOfAudio:
    """The request's audio is over (`end`, or `limit_hit` at `max_audio_seconds`)."""

    limit_hit: bool


IntakeItem = bytes | Frame | EndOfAudio
"""PCM16 mono at `PIPELINE_RATE`, a non-terminal notice frame, or the end of audio."""


@dataclass
class IntakeState:
    """Counters the terminal frame reports."""

    samples: int = 0
    segments: int = 0
    limit_hit: bool = False

    def audio_ms(self) -> int:
        """Milliseconds of audio taken (at `PIPELINE_RATE`)."""
        return self.samples * 1000 // PIPELINE_RATE


def audio_intake(
    decoder: AudioDecoder,
    declared: ListenRequestIn,
    frames: FrameFactory,
    max_samples: int,
    state: IntakeState,
    rebase: Callable[[int | None], tuple[AudioDecoder, int]] | None = None,
) -> Callable[[Observable[ClientMessage]], Observable[IntakeItem]]:
    """A request's later messages in; its decoded audio, notices and end out.

    msgs:   -a-a-a-e-a-|     (a: audio, e: end)
    result: -p-p-p-pE-n-     (p: PCM, E: EndOfAudio, n: `audio_after_end` notice)
    Audio past `max_samples` is cut exactly at the limit, then EndOfAudio
    (limit_hit). Undecodable audio or a format change errors with `ListenError`.
    `rebase` (a run taken over from a gone instance): the first `audio_offset`, or
    None when audio comes first, says where the resent audio starts in the request's
    audio; it returns the decoder for the run's audio and the byte the run starts at
    (resent bytes before it, already transcribed, are skipped), and sets
    `state.samples`.
    """

    def operator(source: Observable[ClientMessage]) -> Observable[IntakeItem]:
        def subscribe(
            observer: abc.ObserverBase[IntakeItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            flags = {"ended": False, "late_notice": False, "failed": False, "resent": False}
            wire = {"received": 0, "skip": 0}
            """Audio bytes taken from the wire; bytes of resent audio still to skip."""
            based = [rebase is None]
            """Whether this run knows where its audio starts (a takeover learns it)."""
            decoders = [decoder]

            def base(offset: int | None) -> None:
                based[0] = True
                assert rebase is not None
                decoders[0], start = rebase(offset)
                wire["received"] = start
                wire["skip"] = 0 if offset is None else start - offset

            def notice(name: str, message: str, **extra: Any) -> None:
                observer.on_next(frames.error(name, message, finish_reason=None, **extra))

            def take(pcm: bytes) -> bool:
                """Emit PCM up to the limit; True when some of it was past the limit."""
                room = (max_samples - state.samples) * 2
                cut = len(pcm) > room
                if cut:
                    pcm = pcm[:room]
                if pcm:
                    state.samples += len(pcm) // 2
                    observer.on_next(pcm)
                return cut

            def finish(limit_hit: bool) -> None:
                flags["ended"] = True
                if not limit_hit:
                    current = decoders[0]
                    limit_hit = take(current.flush())
                    if current.dangling_bytes:
                        notice(
                            ListenErrorName.INVALID_AUDIO,
                            f"the audio ended with {current.dangling_bytes} byte(s) that do not "
                            "make a whole sample frame; they were ignored",
                        )
                state.limit_hit = limit_hit
                observer.on_next(EndOfAudio(limit_hit))

            def on_offset(msg: ClientMessage) -> None:
                offset = msg.body.get("offset")
                if type(offset) is not int or offset < 0:
                    notice(ErrorName.INVALID_REQUEST, "audio_offset needs an integer offset >= 0")
                    return
                if flags["ended"]:
                    flags["resent"] = True  # the audio was all here: ignore what is resent
                    return
                if not based[0]:
                    base(offset)
                    return
                received = wire["received"]
                wire["skip"] = max(0, received - offset)
                if offset > received:
                    notice(
                        ErrorName.RESUME_GAP,
                        f"{offset - received} bytes of audio before offset {offset} never "
                        "arrived; the audio goes on without them",
                    )

            def on_audio(msg: ClientMessage) -> None:
                if flags["ended"] and flags["resent"]:
                    return
                if not based[0]:
                    base(None)
                data = msg.audio or b""
                skip = wire["skip"]
                if skip:
                    wire["skip"] = max(0, skip - len(data))
                    data = data[skip:]
                    if not data:
                        return
                wire["received"] += len(data)
                if flags["ended"]:
                    if not flags["late_notice"]:
                        flags["late_notice"] = True
                        notice(
                            ListenErrorName.AUDIO_AFTER_END,
                            "audio after the request's end (or its audio limit) is ignored",
                        )
                    return
                if take(decoders[0].push(data)):
                    finish(True)

            def on_listen(msg: ClientMessage) -> None:
                try:
                    again = ListenRequestIn.model_validate(msg.body)
                except ValidationError:
                    again = None
                if again is not None and again.format == declared.format:
                    notice(
                        ErrorName.DUPLICATE_REQUEST_ID,
                        f"request {msg.request_id!r} is already listening; this 'listen' was "
                        "ignored (use a new request_id)",
                    )
                    return
                raise ListenError(
                    ListenErrorName.FORMAT_CHANGED,
                    "a second 'listen' with another format for an active request: the audio "
                    "format cannot change mid-stream (start a new request)",
                )

            def on_next(msg: ClientMessage) -> None:
                if flags["failed"]:
                    return
                try:
                    if msg.type == AUDIO:
                        on_audio(msg)
                    elif msg.type == AUDIO_OFFSET:
                        on_offset(msg)
                    elif msg.type == END:
                        if flags["ended"] and flags["resent"]:
                            pass  # resent behind an audio_offset: the end was here
                        elif flags["ended"]:
                            notice(ListenErrorName.AUDIO_AFTER_END, "the audio already ended")
                        else:
                            finish(False)
                    elif msg.type == LISTEN:
                        on_listen(msg)
                    else:
                        notice(
                            ErrorName.UNSUPPORTED_MESSAGE_TYPE,
                            f"listen takes 'audio' (binary), 'audio_offset', 'end' and 'cancel', "
                            f"not {msg.type!r}",
                        )
                except AudioFormatError as error:
                    flags["failed"] = True
                    observer.on_error(ListenError(error.name, str(error)))
                except ListenError as error:
                    flags["failed"] = True
                    observer.on_error(error)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator


def intake_pcm(items: Observable[IntakeItem]) -> Observable[bytes]:
    """The PCM of an intake stream, completing at its `EndOfAudio`.

    items:  -p-n-p-E-n-
    result: -p---p-|
    """
    return items.pipe(ops.take_while(_before_end), ops.filter(_is_pcm), ops.map(_as_pcm))


def intake_notices(items: Observable[IntakeItem]) -> Observable[Frame]:
    """The notice frames of an intake stream (they may follow its `EndOfAudio`).

    items:  -p-n-p-E-n-|
    result: ---n-----n-|
    """
    return items.pipe(ops.filter(_is_notice), ops.map(_as_notice))


def _before_end(item: IntakeItem) -> bool:
    return not isinstance(item, EndOfAudio)


def _is_pcm(item: IntakeItem) -> bool:
    return isinstance(item, bytes)


def _is_notice(item: IntakeItem) -> bool:
    return isinstance(item, Frame)


def _as_pcm(item: IntakeItem) -> bytes:
    assert isinstance(item, bytes)
    return item


def _as_notice(item: IntakeItem) -> Frame:
    assert isinstance(item, Frame)
    return item
