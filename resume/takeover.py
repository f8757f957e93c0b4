"""What a takeover hands to the pipeline that runs a request again: the answer so far.

recorded frames (JSON payloads of chatStream) ─► `chat_answer_so_far` ─► text, model
recorded frames of speak ─► `speech_so_far` ─► sentences spoken, audio the client has
first `speak` body + noted `text` messages ─► `speak_text_so_far` ─► one `speak` body
recorded frames of listen ─► `listen_so_far` ─► the next segment id, the audio acknowledged
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from protocol import jsoncodec
from resume.log import LoggedFrame


@dataclass(frozen=True, slots=True)
class ResumedAnswer:
    """A chat request taken over from a gone instance.

    `text` is the answer its frames recorded; `model_id` the model that wrote the
    last of it. `restart`: the client saw more than was recorded, so the answer
    restarts (`model_unavailable` first) instead of continuing from `text`.
    """

    text: str
    model_id: str | None
    restart: bool


def chat_answer_so_far(frames: Iterable[LoggedFrame]) -> tuple[str, str | None]:
    """Recorded chatStream frames -> (the answer's text, the model of its last chunk);
    a `model_unavailable` frame drops the text before it, as a client does."""
    pieces: list[str] = []
    model_id: str | None = None
    for frame in frames:
        if not frame.is_text:
            continue
        try:
            data: Any = jsoncodec.loads(frame.payload)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if data.get("type") == "error":
            error = data.get("error")
            if isinstance(error, dict) and error.get("name") == "model_unavailable":
                pieces.clear()
            continue
        chunk = data.get("chunk")
        if data.get("type") != "chunk" or not isinstance(chunk, dict):
            continue
        model_id = chunk.get("model_id") or model_id
        try:
            content = chunk["model_response"]["message"]["content"]
        except (KeyError, TypeError):
            continue
        if isinstance(content, str):
            pieces.append(content)
    return "".join(pieces), model_id


SPEAK_RESUMABLE_ENCODINGS = frozenset({"pcm_s16le", "wav"})
"""Speak formats a takeover continues from the first unspoken sentence: raw samples
concatenate (a WAV header went out with the first audio, so the rest is raw samples
too). The compressed ones (flac, ogg_opus, mp3) restart: the gone encoder's state and
the audio it held cannot be recovered, and a second stream glued to the first does
not decode as one file (docs/resume.md section 5)."""


@dataclass(frozen=True, slots=True)
class ResumedSpeech:
    """A speak request taken over from a gone instance: what its frames recorded.

    `segments` sentences were spoken whole (their `segment` events were recorded),
    with `audio_bytes` of audio between them (PCM bytes, no WAV header).
    `partial_bytes` of audio of the next sentence went out after the last `segment`
    event (the client drops them: the sentence is spoken again); `audio_sent` says
    whether any audio frame went out (then a WAV header already did); `model_id`
    is the last model that spoke. `kept_bytes`: every audio byte the client keeps
    (header included, drops applied): what a compressed format's restart drops.
    """

    segments: int
    audio_bytes: int
    partial_bytes: int
    audio_sent: bool
    model_id: str | None
    kept_bytes: int = 0


LISTEN_RESUMABLE_ENCODINGS = frozenset({"pcm_s16le", "wav"})
"""Listen formats a takeover runs again: the client resends their audio from a byte
offset (docs/resume.md section 7); a compressed file's tail cannot be resent."""


@dataclass(frozen=True, slots=True)
class ResumedListen:
    """A listen request taken over from a gone instance: what its frames recorded.

    Segments before `next_segment` have their final transcript (the client has them);
    `acked_ms` is the end of the last final one, where the client's resent audio
    starts (its unacknowledged tail) when no `audio_offset` says otherwise.
    """

    next_segment: int
    acked_ms: int


Resumed = ResumedAnswer | ResumedSpeech | ResumedListen
"""What a takeover hands to the pipeline of its endpoint."""


def speech_so_far(frames: Iterable[LoggedFrame], request_id: str) -> ResumedSpeech:
    """Recorded speak frames -> the sentences spoken whole, their audio, and the audio
    of the unfinished sentence (binary payloads carry `request_id`'s header)."""
    header = len(request_id.encode("utf-8")) + 1
    segments = 0
    audio_bytes = 0
    partial = 0
    kept = 0
    audio_sent = False
    model_id: str | None = None
    for frame in frames:
        if not frame.is_text:
            size = max(0, len(frame.payload) - header)
            partial += size
            kept += size
            audio_sent = True
            continue
        try:
            data: Any = jsoncodec.loads(frame.payload)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        segment = data.get("segment")
        if data.get("type") == "segment" and isinstance(segment, dict):
            segments += 1
            audio_bytes += int(segment.get("audio_bytes") or 0)
            model_id = segment.get("model_id") or model_id
            partial = 0
        elif data.get("type") == "error":
            error = data.get("error")
            if isinstance(error, dict) and error.get("name") == "model_unavailable":
                drop = int(error.get("drop_bytes") or 0)
                partial = max(0, partial - drop)
                kept = max(0, kept - drop)
    return ResumedSpeech(segments, audio_bytes, partial, audio_sent, model_id, kept)


def speak_text_so_far(body: dict[str, Any], inputs: Iterable[bytes]) -> dict[str, Any]:
    """The first `speak` body and the `text` messages noted after it (compact JSON, in
    the order they came) -> one `speak` body with all the text received and whether it
    ended (`final`). Messages after the final one, or not well formed, are left out
    (the pipeline refused them the first time)."""
    first = body.get("text")
    final = body.get("final") is True
    pieces: list[str] = [first if isinstance(first, str) else ""]
    for raw in inputs:
        if final:
            break
        try:
            message: Any = jsoncodec.loads(raw)
        except ValueError:
            continue
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            continue
        if not isinstance(message.get("final", False), bool):
            continue
        pieces.append(message["text"])
        final = message.get("final") is True
    return {**body, "text": "".join(pieces), "final": final}


def listen_so_far(frames: Iterable[LoggedFrame]) -> ResumedListen:
    """Recorded listen frames -> the first segment without a final transcript and the
    end of the last final one (ms of the request's audio)."""
    next_segment = 0
    acked_ms = 0
    for frame in frames:
        if not frame.is_text:
            continue
        try:
            data: Any = jsoncodec.loads(frame.payload)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("type") != "transcript":
            continue
        segment_id, end_ms = data.get("segment_id"), data.get("end_ms")
        if data.get("is_final") is True and isinstance(segment_id, int):
            next_segment = max(next_segment, segment_id + 1)
            if isinstance(end_ms, int | float):
                acked_ms = max(acked_ms, int(end_ms))
    return ResumedListen(next_segment, acked_ms)
