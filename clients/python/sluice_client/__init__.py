"""Sluice's async Python client: one websocket per endpoint, many requests on it.

    from sluice_client import SluiceClient, ChatChunk, ModelReset, ConnectionLost

    async with SluiceClient("http://localhost:9099") as sluice:
        async for event in sluice.chat_stream("default", "Hi"):
            if isinstance(event, ModelReset):
                ...  # drop the partial text
            elif isinstance(event, ChatChunk):
                print(event.content, end="")

Streams end on their request's terminal frame and raise a typed `SluiceError`
on a terminal error. Sockets closed by a draining or restarting server (1001,
1012), an internal error (1011) or a cut network are reopened with backoff;
requests that had received nothing are resent transparently, requests cut
mid-stream raise `ConnectionLost` (retryable); resuming them by `seq` waits for
the server's `resume` (see `Connection._cut_mid_stream`).

`speak_bytes(router, text, format=...)` returns the whole audio as bytes;
`listen_bytes(router, audio_bytes, format=...)` returns the final transcripts;
`converse(router, audio, format=...)` starts a voice conversation (`Conversation`).
"""

from sluice_client.backoff import Backoff
from sluice_client.client import ChatEvent, SluiceClient
from sluice_client.conversation import Conversation
from sluice_client.converse_events import (
    ReplyInterrupted,
    ReplyStarted,
    ReplyText,
    ToolCalls,
    TurnEnded,
    UserTurn,
)
from sluice_client.errors import (
    AllModelsUnavailable,
    BadRequest,
    Cancelled,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    RouterNotFound,
    ShuttingDown,
    SlowConsumer,
    SluiceError,
    TooManyRequests,
    error_from_wire,
)
from sluice_client.events import (
    ChatChunk,
    Done,
    Event,
    ModelReset,
    Notice,
    SpeakSegment,
    SpeechEnded,
    SpeechStarted,
    Transcript,
)
from sluice_client.messages import AudioFormat
from sluice_client.options import ClientOptions, ClientStats

__all__ = [
    "AllModelsUnavailable",
    "AudioFormat",
    "Backoff",
    "BadRequest",
    "Cancelled",
    "ChatChunk",
    "ChatEvent",
    "ClientClosed",
    "ClientOptions",
    "ClientStats",
    "ConnectFailed",
    "ConnectionLost",
    "Conversation",
    "Done",
    "Event",
    "ModelReset",
    "Notice",
    "ReplyInterrupted",
    "ReplyStarted",
    "ReplyText",
    "RouterNotFound",
    "ShuttingDown",
    "SlowConsumer",
    "SluiceClient",
    "SluiceError",
    "SpeakSegment",
    "SpeechEnded",
    "SpeechStarted",
    "TooManyRequests",
    "ToolCalls",
    "Transcript",
    "TurnEnded",
    "UserTurn",
    "error_from_wire",
]
