"""One request through a websocket endpoint's own pipeline, without a websocket.

`request_frames(endpoint, admission, messages)` -> Observable of that request's
frames, ending after its terminal frame:

    messages: listen, audio, audio, end      (pushed as a socket reader would)
    frames:   -speech_started--transcript--done|

The messages go through `endpoint.pipeline(admission)` exactly as a socket's
inbound messages do, so the HTTP audio endpoints run the same operators
(validation, decoding, VAD, failover, encoding) as the websocket endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.subject import Subject

from pipelines.common import Admission
from pipelines.endpoint import SocketEndpoint
from protocol.frames import Frame
from protocol.messages import ClientMessage, Inbound


def _not_terminal(frame: Frame) -> bool:
    return not frame.terminal


def request_frames(
    endpoint: SocketEndpoint, admission: Admission, messages: Sequence[ClientMessage]
) -> Observable[Frame]:
    """`messages` (one request's) into a fresh pipeline of `endpoint`; its frames out.

    Completes after the terminal frame; disposing the subscription ends the
    request (its provider calls are cancelled), as a closing socket does.
    """

    def subscribe(
        observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        inbound: Subject[Inbound] = Subject()
        frames = endpoint.pipeline(admission)(inbound).pipe(
            ops.take_while(_not_terminal, inclusive=True)
        )
        subscription = frames.subscribe(observer, scheduler=scheduler)
        for message in messages:
            inbound.on_next(message)
        return subscription

    return Observable(subscribe)
