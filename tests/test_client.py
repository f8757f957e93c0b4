"""The Python client (`sluice_client`) against a real in-process Sluice and fake upstreams.

Chat streams multiplexed on one socket, resets surfaced, typed terminal errors,
cancel, and reconnect/resend under a proxy that drops sockets at random points
(close 1001 / 1011 / 1012 or a cut TCP connection). Speak and listen framing and
the resend of buffered audio are checked against a small scripted endpoint that
speaks DESIGN section 3, and end to end against Sluice's local speech engines.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from sluice_client import (
    AllModelsUnavailable,
    AudioFormat,
    Backoff,
    BadRequest,
    ChatChunk,
    ClientOptions,
    ConnectFailed,
    ConnectionLost,
    Done,
    ModelReset,
    RouterNotFound,
    ShuttingDown,
    SluiceClient,
    SluiceError,
    SpeakSegment,
    SpeechEnded,
    SpeechStarted,
    Transcript,
)
from sluice_client.framing import decode_audio, encode_audio
from sluice_client.request import RequestHandle

from config.models import SluiceConfig
from fakes.openai_server import FakeOpenAI, FakeToolCall
from server import build_app, close_sockets, drain
from tests.conftest import make_config, openai_model

FAST = ClientOptions(
    backoff=Backoff(initial=0.02, maximum=0.2), heartbeat=None, pending_timeout=10.0
)

MakeServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
def serve(aiohttp_server: Any) -> MakeServer:
    """Serve an aiohttp app on 127.0.0.1; the fixture closes it after the test."""

    async def make(app: web.Application) -> TestServer:
        server: TestServer = await aiohttp_server(app, host="127.0.0.1")
        return server

    return make


async def sluice_url(serve: MakeServer, config: SluiceConfig) -> str:
    server = await serve(build_app(config))
    return str(server.make_url("")).rstrip("/")


async def chat_events(client: SluiceClient, text: str = "hi", **kwargs: Any) -> list[Any]:
    return [event async for event in client.chat_stream("r", text, **kwargs)]


# ---- chat: multiplexing, resets, typed errors, cancel ---------------------------------


async def test_many_chat_streams_share_one_socket(serve: MakeServer, fake_a: FakeOpenAI) -> None:
    fake_a.script.delay = 0.01
    url = await sluice_url(serve, make_config(openai_model("a", fake_a)))
    async with SluiceClient(url, options=FAST) as client:
        results = await asyncio.gather(*(chat_events(client, metadata={"n": i}) for i in range(20)))
        assert client.stats.connects == 1
        assert client.stats.completed == 20
    for i, events in enumerate(results):
        assert all(isinstance(e, ChatChunk) for e in events)
        assert "".join(e.content for e in events) == "Hello from fake"
        assert [e.finish_reason for e in events][-1] == "complete"
        assert all(e.finish_reason is None for e in events[:-1])
        assert {e.metadata["n"] for e in events} == {i}
        assert events[-1].model_id == "a" and events[-1].provider_id == "openai"


async def test_model_unavailable_reset_is_a_distinct_event(
    serve: MakeServer, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script.fault = "truncated"
    fake_a.script.fault_after_chunks = 2
    config = make_config(openai_model("a", fake_a), openai_model("b", fake_b), mid_stream="restart")
    url = await sluice_url(serve, config)
    async with SluiceClient(url, options=FAST) as client:
        events = await chat_events(client)
        assert await client.chat_text("r", "again") == "Backup answer"
    kinds = [type(e).__name__ for e in events]
    reset = kinds.index("ModelReset")
    assert kinds[:reset] == ["ChatChunk", "ChatChunk"]
    assert "".join(e.content for e in events[:reset]) == "Hello from"
    assert isinstance(events[reset], ModelReset) and events[reset].model_id == "a"
    after = events[reset + 1 :]
    assert "".join(e.content for e in after) == "Backup answer"
    assert after[-1].finish_reason == "complete" and after[-1].model_id == "b"


async def test_terminal_errors_raise_typed_errors_and_the_socket_lives(
    serve: MakeServer, fake_a: FakeOpenAI
) -> None:
    fake_a.script.fault = "http_500"
    url = await sluice_url(serve, make_config(openai_model("a", fake_a)))
    async with SluiceClient(url, options=FAST) as client:
        with pytest.raises(AllModelsUnavailable) as unavailable:
            await chat_events(client, request_id="u1", metadata={"k": "v"})
        assert unavailable.value.retryable and unavailable.value.request_id == "u1"
        assert unavailable.value.frame is not None
        assert unavailable.value.frame["metadata"] == {"k": "v"}

        with pytest.raises(BadRequest) as bad:
            await chat_events(client, {"role": "robot", "content": "x"})
        assert bad.value.name == "payload_parse_error" and not bad.value.retryable

        fake_a.script.fault = "none"
        assert await client.chat_text("r", "fine now") == "Hello from fake"
        assert client.stats.connects == 1
        assert client.stats.failed == 2 and client.stats.completed == 1

        with pytest.raises(RouterNotFound):
            async for _ in client.chat_stream("nope", "hi"):
                pass
        stream = client.chat_stream("r", "x", request_id="same")
        await anext(stream)  # in flight until the caller leaves the stream
        with pytest.raises(ValueError, match="already in flight"):
            await chat_events(client, request_id="same")
        await stream.aclose()


async def test_cancelling_the_consumer_sends_cancel(serve: MakeServer, fake_a: FakeOpenAI) -> None:
    fake_a.script.chunks = ["tok "] * 200
    fake_a.script.delay = 0.05
    url = await sluice_url(serve, make_config(openai_model("a", fake_a)))
    async with SluiceClient(url, options=FAST) as client:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in client.chat_stream("r", "long"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake_a.wait_stream_closed(within=2.0)

        async for _ in client.chat_stream("r", "long too"):
            break  # leaving the loop early cancels as well
        await fake_a.wait_stream_closed(within=2.0, count=2)

        fake_a.script.chunks = ["ok"]
        fake_a.script.delay = 0
        assert await client.chat_text("r", "short") == "ok"
        assert client.stats.connects == 1


async def test_a_request_cut_by_the_drain_deadline_raises_shutting_down(
    serve: MakeServer, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok "] * 200
    fake_a.script.delay = 0.05
    app = build_app(make_config(openai_model("a", fake_a)))
    server = await serve(app)
    options = ClientOptions(backoff=Backoff(initial=0.02, maximum=0.1), pending_timeout=0.5)
    async with SluiceClient(str(server.make_url("")), options=options) as client:
        events: list[Any] = []
        with pytest.raises(ShuttingDown) as ended:
            async for event in client.chat_stream("r", "long"):
                events.append(event)
                if len(events) == 2:
                    await close_sockets(app)  # the grace deadline: end everything now
        assert ended.value.retryable
        assert len(events) >= 2
        # the instance now refuses upgrades (503): new requests wait, then give up
        with pytest.raises(ConnectFailed) as refused:
            await chat_events(client)
        assert refused.value.retryable
        assert client.stats.connect_failures >= 2


# ---- reconnect and resend under random socket drops -------------------------------------


@dataclass
class Chaos:
    """Where a proxied socket is dropped: each new socket is dropped while the budget lasts.

    A drop happens right after the n-th client message was forwarded (the request
    reached Sluice and has no answer yet), or before it was forwarded, or after the
    n-th server frame (requests mid-stream); it is a close 1001/1011/1012 or a cut.
    """

    rng: random.Random
    budget: int
    kinds: Counter[str] = field(default_factory=Counter)
    points: Counter[str] = field(default_factory=Counter)

    def plan(self) -> tuple[str, str, int] | None:
        if self.budget <= 0:
            return None
        self.budget -= 1
        kind = self.rng.choice(["1001", "1012", "1011", "cut"])
        point = self.rng.choice(["after_in", "before_in", "after_out", "after_out"])
        count = self.rng.randint(1, 4) if point.endswith("_in") else self.rng.randint(1, 25)
        return kind, point, count


class ChaosProxy:
    """A websocket proxy to Sluice's chatStream that drops sockets as `Chaos` plans."""

    def __init__(self, upstream: str, chaos: Chaos, session: aiohttp.ClientSession) -> None:
        self.upstream = upstream
        self.chaos = chaos
        self.session = session

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/language/{router}/chatStream", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        down = web.WebSocketResponse()
        await down.prepare(request)
        plan = self.chaos.plan()
        drop = asyncio.Event()

        def due(point: str, count: int) -> bool:
            return plan is not None and plan[1] == point and plan[2] == count

        async with self.session.ws_connect(self.upstream + request.path) as up:

            async def client_to_sluice() -> None:
                seen = 0
                async for msg in down:
                    seen += 1
                    if due("before_in", seen):
                        drop.set()
                        return
                    await up.send_str(msg.data)
                    if due("after_in", seen):
                        drop.set()
                        return

            async def sluice_to_client() -> None:
                seen = 0
                async for msg in up:
                    await down.send_str(msg.data)
                    seen += 1
                    if due("after_out", seen):
                        drop.set()
                        return

            tasks = [
                asyncio.create_task(client_to_sluice()),
                asyncio.create_task(sluice_to_client()),
                asyncio.create_task(drop.wait()),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if drop.is_set() and plan is not None:
                self.chaos.kinds[plan[0]] += 1
                self.chaos.points[plan[1]] += 1
                if plan[0] == "cut":
                    assert request.transport is not None
                    request.transport.abort()
                else:
                    await down.close(code=int(plan[0]), message=b"chaos")
        if not down.closed:
            await down.close()
        return down


@pytest.mark.parametrize("seed", [3, 99])
async def test_every_request_ends_once_under_random_socket_drops(
    serve: MakeServer, fake_a: FakeOpenAI, seed: int
) -> None:
    fake_a.script.chunks = ["tok "] * 10
    fake_a.script.delay = 0.01
    sluice = await sluice_url(serve, make_config(openai_model("a", fake_a)))
    chaos = Chaos(random.Random(seed), budget=14)
    outcomes: dict[str, str] = {}
    attempts_of: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        proxy = await serve(ChaosProxy(sluice, chaos, session).app())
        async with SluiceClient(str(proxy.make_url("")), options=FAST) as client:

            async def one(job: int) -> None:
                for attempt in range(10):
                    request_id = f"job{job}-try{attempt}"
                    text = ""
                    try:
                        async for event in client.chat_stream("r", "hi", request_id=request_id):
                            assert request_id not in outcomes, "event after the end"
                            text += event.content
                    except ConnectionLost as lost:
                        assert lost.retryable and lost.request_id == request_id
                        assert request_id not in outcomes
                        outcomes[request_id] = "lost"
                        continue
                    assert request_id not in outcomes
                    outcomes[request_id] = "completed"
                    assert text == "tok " * 10
                    attempts_of[job] = attempt + 1
                    return
                pytest.fail(f"job {job} never completed")

            async def worker(first: int) -> None:
                for job in range(first, 64, 8):
                    await one(job)

            await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(8))), 40)
            stats = client.stats

    assert len(attempts_of) == 64  # no request lost
    assert Counter(outcomes.values())["completed"] == 64
    assert Counter(outcomes.values())["lost"] == stats.lost
    assert stats.completed == 64
    assert chaos.budget == 0 and sum(chaos.kinds.values()) >= 8
    assert stats.resent > 0, "no request was resent transparently"
    assert stats.lost > 0, "no request was cut mid-stream"
    assert stats.connects >= sum(chaos.kinds.values())
    await fake_a.stats.wait_idle(within=5.0)


async def test_a_draining_instance_hands_new_requests_to_another(
    serve: MakeServer, fake_a: FakeOpenAI
) -> None:
    fake_a.script.chunks = ["tok "] * 20
    fake_a.script.delay = 0.02
    config = make_config(openai_model("a", fake_a))
    app_a = build_app(config)
    url_a = str((await serve(app_a)).make_url("")).rstrip("/")
    url_b = await sluice_url(serve, config)
    async with aiohttp.ClientSession() as session:
        proxy = ChaosProxy(url_a, Chaos(random.Random(0), budget=0), session)
        front = await serve(proxy.app())
        async with SluiceClient(str(front.make_url("")), options=FAST) as client:
            long = client.chat_stream("r", "long", request_id="long")
            first = await anext(long)
            assert isinstance(first, ChatChunk)
            draining = asyncio.create_task(drain(app_a, 10.0))  # SIGTERM on instance A
            await asyncio.sleep(0.05)
            proxy.upstream = url_b  # the load balancer stops sending to A
            # sent on the socket to A, answered `shutting_down`, resent through the LB to B
            assert await client.chat_text("r", "new", request_id="new") == "tok " * 20
            rest = [e async for e in long]
            assert "".join(e.content for e in [first, *rest]) == "tok " * 20
            assert rest[-1].finish_reason == "complete"
            await asyncio.wait_for(draining, 5)
            assert client.stats.resent == 1 and client.stats.connects == 2
            assert client.stats.lost == 0 and client.stats.failed == 0


# ---- speak and listen: framing, streamed input, resend of buffered input ----------------


@dataclass
class SpeechScript:
    """A scripted speak/listen endpoint: records what arrived, cuts the first N sockets."""

    cut_first: int = 0
    sockets: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: Counter[str] = field(default_factory=Counter)


def envelope(kind: str, request_id: str, metadata: Any, **fields: Any) -> str:
    return json.dumps(
        {
            "type": kind,
            "request_id": request_id,
            "id": request_id,
            "created_at": 0,
            "router_id": "s",
            "metadata": metadata,
            **fields,
        }
    )


def speech_app(script: SpeechScript) -> web.Application:
    """Speak: audio per text piece, a segment event each, then `done`. Listen: bytes counted,
    then speech_started / transcript / speech_ended / done once `end` arrives."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        script.sockets += 1
        cut = script.sockets <= script.cut_first
        texts: dict[str, list[str]] = {}
        meta: dict[str, Any] = {}
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                decoded = decode_audio(msg.data)
                assert decoded is not None
                rid, audio = decoded
                script.audio_bytes[f"{script.sockets}:{rid}"] += len(audio)
                if cut and script.audio_bytes[f"{script.sockets}:{rid}"] >= 3000:
                    assert request.transport is not None
                    request.transport.abort()
                    break
                continue
            body = json.loads(msg.data)
            script.messages.append(body)
            rid = body["request_id"]
            kind = body.get("type")
            if kind in ("speak", "text"):
                meta.setdefault(rid, body.get("metadata"))
                if body.get("text"):
                    texts.setdefault(rid, []).append(body["text"])
                if body.get("final"):
                    for n, piece in enumerate(texts.pop(rid, [])):
                        await ws.send_bytes(encode_audio(rid, piece.encode() * 2))
                        await ws.send_str(
                            envelope("segment", rid, meta[rid], segment={"id": n, "text": piece})
                        )
                    await ws.send_str(envelope("done", rid, meta[rid], finish_reason="complete"))
            elif kind == "listen":
                meta[rid] = body.get("metadata")
            elif kind == "end":
                heard = script.audio_bytes[f"{script.sockets}:{rid}"]
                await ws.send_str(envelope("speech_started", rid, meta[rid]))
                await ws.send_str(
                    envelope(
                        "transcript",
                        rid,
                        meta[rid],
                        transcript={
                            "segment_id": 0,
                            "text": f"{heard} bytes",
                            "is_final": True,
                            "start_ms": 0,
                            "end_ms": heard // 32,
                            "provider_id": "fake",
                            "model_id": "m",
                        },
                    )
                )
                await ws.send_str(envelope("speech_ended", rid, meta[rid]))
                await ws.send_str(envelope("done", rid, meta[rid], finish_reason="complete"))
        return ws

    app = web.Application()
    app.router.add_get("/v1/speech/{router}/{endpoint:speak|listen}", handle)
    return app


async def test_speak_streams_text_pieces_and_yields_audio_and_segments(serve: MakeServer) -> None:
    script = SpeechScript()
    server = await serve(speech_app(script))

    async def pieces() -> AsyncIterator[str]:
        for piece in ["Hello ", "world. ", "Bye."]:
            await asyncio.sleep(0.01)
            yield piece

    async with SluiceClient(str(server.make_url("")), options=FAST) as client:
        fmt = AudioFormat("pcm_s16le", 24000)
        streamed = [
            item async for item in client.speak("s", pieces(), format=fmt, metadata={"m": 1})
        ]
        whole = [item async for item in client.speak("s", "All at once.", voice="v")]
    audio = b"".join(i for i in streamed if isinstance(i, bytes))
    assert audio == b"Hello Hello world. world. Bye.Bye."
    segments = [i for i in streamed if isinstance(i, SpeakSegment)]
    assert [s.data["text"] for s in segments] == ["Hello ", "world. ", "Bye."]
    assert segments[0].metadata == {"m": 1}
    assert isinstance(streamed[-1], Done) and streamed[-1].finish_reason == "complete"
    first, *rest = [m for m in script.messages if m["request_id"] == segments[0].request_id]
    assert first["type"] == "speak" and first["final"] is False and "text" not in first
    assert first["format"] == {"encoding": "pcm_s16le", "sample_rate": 24000, "channels": 1}
    assert [m["text"] for m in rest] == ["Hello ", "world. ", "Bye.", ""]
    assert [m["final"] for m in rest] == [False, False, False, True]
    assert isinstance(whole[-1], Done)
    assert b"".join(i for i in whole if isinstance(i, bytes)) == b"All at once." * 2
    speak = [m for m in script.messages if m["type"] == "speak" and m.get("text")]
    assert speak[0]["final"] is True and speak[0]["voice"] == "v"


async def test_listen_resends_buffered_audio_after_a_cut_before_any_answer(
    serve: MakeServer,
) -> None:
    script = SpeechScript(cut_first=1)
    server = await serve(speech_app(script))
    chunks = [bytes([n]) * 640 for n in range(10)]  # 10 x 20 ms of 16 kHz PCM16

    async def microphone() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await asyncio.sleep(0.005)
            yield chunk

    async with SluiceClient(str(server.make_url("")), options=FAST) as client:
        fmt = AudioFormat("pcm_s16le", 16000, 1)
        events = [
            e
            async for e in client.listen(
                "s", microphone(), format=fmt, request_id="mic", interim_results=True
            )
        ]
        assert client.stats.resent == 1 and client.stats.connects == 2
    assert [type(e) for e in events] == [SpeechStarted, Transcript, SpeechEnded, Done]
    transcript = events[1]
    assert isinstance(transcript, Transcript)
    assert transcript.text == "6400 bytes" and transcript.is_final
    assert transcript.provider_id == "fake" and transcript.end_ms == 200
    assert script.audio_bytes["1:mic"] >= 3000  # the first socket was cut mid-upload
    assert script.audio_bytes["2:mic"] == 6400  # the second got all of it, from the start
    listens = [m for m in script.messages if m["type"] == "listen"]
    assert len(listens) == 2 and listens[0]["interim_results"] is True
    assert listens[0]["format"] == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
    assert [m["type"] for m in script.messages if m["request_id"] == "mic"][-1] == "end"


@pytest.mark.slow
async def test_speak_then_listen_against_sluices_local_engines(serve: MakeServer) -> None:
    config = SluiceConfig.model_validate(
        {
            "routers": {
                "speech": [
                    {
                        "id": "s",
                        "speak": {"models": [{"id": "espeak", "local": {}}]},
                        "listen": {"models": [{"id": "sphinx", "local": {}}]},
                    }
                ]
            }
        }
    )
    url = await sluice_url(serve, config)
    fmt = AudioFormat("pcm_s16le", 16000)

    async def pieces() -> AsyncIterator[str]:
        for piece in ["Hello there. ", "This is a ", "streamed sentence."]:
            yield piece

    async with SluiceClient(url, options=FAST) as client:
        audio = bytearray()
        events: list[Any] = []
        async for item in client.speak("s", pieces(), format=fmt, metadata={"k": 1}):
            if isinstance(item, bytes):
                audio += item
            else:
                events.append(item)
        assert len(audio) > 16000  # more than half a second of speech
        assert [type(e) for e in events] == [SpeakSegment, SpeakSegment, Done]
        assert events[-1].finish_reason == "complete" and events[-1].metadata == {"k": 1}

        async def microphone() -> AsyncIterator[bytes]:
            pcm = bytes(audio) + b"\x00" * 32000  # a second of silence ends the speech
            for start in range(0, len(pcm), 640):
                yield pcm[start : start + 640]

        heard = [e async for e in client.listen("s", microphone(), format=fmt)]
        assert client.stats.connects == 2 and client.stats.completed == 2
    assert isinstance(heard[0], SpeechStarted) and isinstance(heard[-1], Done)
    finals = [e for e in heard if isinstance(e, Transcript) and e.is_final]
    assert finals and all(t.provider_id for t in finals)


async def test_an_input_source_that_fails_ends_the_request_with_its_error(
    serve: MakeServer,
) -> None:
    server = await serve(speech_app(SpeechScript()))

    async def broken() -> AsyncIterator[bytes]:
        yield b"\x00" * 640
        raise OSError("microphone unplugged")

    async with SluiceClient(str(server.make_url("")), options=FAST) as client:
        with pytest.raises(OSError, match="unplugged"):
            async for _ in client.listen("s", broken(), format=AudioFormat()):
                pass


async def test_no_server_fails_pending_requests_after_the_pending_timeout() -> None:
    options = ClientOptions(backoff=Backoff(initial=0.01, maximum=0.05), pending_timeout=0.3)
    async with SluiceClient("http://127.0.0.1:9", options=options) as client:
        with pytest.raises(ConnectFailed) as failed:
            await chat_events(client)
        assert failed.value.retryable and isinstance(failed.value, SluiceError)
        assert client.stats.connect_failures >= 2


def reset_speak_app() -> web.Application:
    """Speak: 6 bytes, a reset dropping the last 3, 3 more bytes, done (frames carry seq)."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            body = json.loads(msg.data)
            if body.get("type") != "speak":
                continue
            rid = body["request_id"]
            await ws.send_bytes(encode_audio(rid, b"abcdef"))
            error = {"id": rid, "name": "model_unavailable", "message": "x", "drop_bytes": 3}
            await ws.send_str(envelope("error", rid, None, error=error, seq=2))
            await ws.send_bytes(encode_audio(rid, b"XYZ"))
            await ws.send_str(envelope("done", rid, None, finish_reason="complete", seq=4))
        return ws

    app = web.Application()
    app.router.add_get("/v1/speech/{router}/speak", handle)
    return app


async def test_speak_bytes_returns_the_audio_with_resets_applied(serve: MakeServer) -> None:
    server = await serve(reset_speak_app())
    async with SluiceClient(str(server.make_url("")), options=FAST) as client:
        audio = await client.speak_bytes("s", "Hello.", format=AudioFormat())
    assert audio == b"abcXYZ"


async def test_listen_bytes_sends_a_recording_in_chunks_and_returns_final_transcripts(
    serve: MakeServer,
) -> None:
    script = SpeechScript()
    server = await serve(speech_app(script))
    async with SluiceClient(str(server.make_url("")), options=FAST) as client:
        finals = await client.listen_bytes(
            "s", bytes(6400), format=AudioFormat(), chunk_bytes=1000, request_id="rec"
        )
        with pytest.raises(ValueError, match="chunk_bytes"):
            await client.listen_bytes("s", b"\x00", format=AudioFormat(), chunk_bytes=0)
    assert [(t.text, t.is_final) for t in finals] == [("6400 bytes", True)]
    assert script.audio_bytes["1:rec"] == 6400
    assert [m["type"] for m in script.messages if m["request_id"] == "rec"] == ["listen", "end"]


def test_a_request_remembers_the_last_seq_it_received() -> None:
    class Owner:
        def kick(self, request: RequestHandle) -> None:
            pass

        def forget(self, request: RequestHandle) -> None:
            pass

    handle = RequestHandle("r", Owner(), max_replay_bytes=1024, high_water=8)
    handle.deliver({"type": "chunk"})
    assert handle.last_seq is None  # a server without seq
    handle.deliver({"type": "chunk", "seq": 1})
    handle.deliver(b"audio")
    handle.deliver({"type": "chunk", "seq": True})  # not a number
    assert handle.last_seq == 1
    handle.finish({"type": "chunk", "seq": 2, "finish_reason": "complete"})
    assert handle.last_seq == 2


async def test_tool_calls_arrive_whole_in_chat_chunks(
    serve: MakeServer, fake_a: FakeOpenAI
) -> None:
    fake_a.script.tool_calls = [
        FakeToolCall("lookup", '{"q": "x"}', id="c1"),
        FakeToolCall("lookup", "{}", id="c2"),
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    url = await sluice_url(serve, make_config(openai_model("a", fake_a)))
    async with SluiceClient(url, options=FAST) as client:
        events = await chat_events(client, "find", tools=tools, tool_choice="auto")
    chunks = [e for e in events if isinstance(e, ChatChunk)]
    assert [c["id"] for e in chunks for c in e.tool_calls] == ["c1", "c2"]
    assert (chunks[-1].finish_reason, chunks[-1].finish_detail) == ("other", "tool_calls")
    assert fake_a.stats.last_body is not None
    assert fake_a.stats.last_body["tool_choice"] == "auto"
