"""What a takeover hands to the pipeline that runs a request again: the answer so far.

recorded frames (JSON payloads of chatStream) ─► `chat_answer_so_far` ─► text, model
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
