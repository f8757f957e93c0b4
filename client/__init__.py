"""Sluice's async Python client: one websocket per endpoint, many requests on it.

    from client import SluiceClient, ChatChunk, ModelReset, ConnectionLost

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
mid-stream raise `ConnectionLost` (retryable).
"""

from client.backoff import Backoff
from client.client import ChatEvent, SluiceClient
from client.errors import (
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
from client.events import (
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
from client.messages import AudioFormat
from client.options import ClientOptions, ClientStats

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
    "Done",
    "Event",
    "ModelReset",
    "Notice",
    "RouterNotFound",
    "ShuttingDown",
    "SlowConsumer",
    "SluiceClient",
    "SluiceError",
    "SpeakSegment",
    "SpeechEnded",
    "SpeechStarted",
    "TooManyRequests",
    "Transcript",
    "error_from_wire",
]
