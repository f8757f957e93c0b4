"""Virtual-time tests of the conversation pipeline (`pipelines.conversation.converse`):
the real `hear` (webrtcvad replaced by a classifier), `speak_text` and a chat source,
with providers as cold observables on a `TestScheduler`.

Audio frames are 20 ms of PCM at 16 kHz, one per tick; the VAD starts a segment on
the second speech frame and ends it on the third quiet one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from reactivex import Observable
from reactivex.testing import ReactiveTest, TestScheduler

from audio.sentences import Sentence
from config.models import SpeechRouterConfig
from operators.failover import Reset
from operators.vad import SpeechStarted, VadSettings
from pipelines.chat_router import ChatChunk, ChatEvent, ModelInfo
from pipelines.conversation import _SpokenSentence as SpokenSentence
from pipelines.conversation import converse, spoken_text
from pipelines.conversation_types import (
    CancelResponse,
    CommitAudio,
    ConversationParts,
    ConversationSettings,
    CreateResponse,
    Played,
    ReplyAudio,
    ReplyInterrupted,
    TurnEnded,
    UserAudio,
    UserText,
    UserTurn,
)
from pipelines.listen_router import ListenRouter
from pipelines.listen_router import ModelInfo as SttInfo
from pipelines.speak_router import SpeakRouter
from pipelines.speech_in import hear
from pipelines.speech_out import speak_text
from protocol.chat import ChatRequest
from providers.stt_types import SttEvent, SttFinal, SttRequest
from providers.tts_types import PcmChunk
from providers.types import ChatDelta
from routing.router import ModelRouter
from routing.strategies import build_strategy

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
T0 = ReactiveTest.subscribed
SPEECH = b"\x01\x00" * 320
QUIET = b"\x00\x00" * 320
CHAT = ModelInfo("m1", "openai", "gpt-fake")
OUT_RATE = 24000


def _nonzero(frame: bytes) -> bool:
    return any(frame)


def _listen_router(scheduler: TestScheduler, heard: list[str], after: int) -> ListenRouter:
    """Each segment's final (the next of `heard`) comes `after` ticks after its attempt starts."""
    config = SpeechRouterConfig.model_validate(
        {
            "id": "sp",
            "listen": {
                "models": [
                    {
                        "id": "stt",
                        "client": {"first_chunk_timeout": 20, "idle_timeout": 20, "timeout": 60},
                        "local": {},
                    }
                ]
            },
        }
    )
    assert config.listen is not None
    texts = iter(heard)

    def transcriber(_request: SttRequest) -> Observable[SttEvent]:
        text = next(texts, "")
        return scheduler.create_cold_observable(on_next(after, SttFinal(text)), on_completed(after))

    models = config.listen.models
    health = ModelRouter("sp", models, build_strategy("priority", models), now=0.0)
    return ListenRouter(
        "sp",
        config,
        {"stt": transcriber},
        {"stt": SttInfo("stt", "fake", "fake-stt")},
        {"stt": 16000},
        health,
        random.Random(0),
    )


def _speak_router(scheduler: TestScheduler, spoken: list[str], calls: list[Any]) -> SpeakRouter:
    """Each sentence: 4 chunks of 20 ms (480 samples at 24 kHz), one per tick."""
    config = SpeechRouterConfig.model_validate(
        {"id": "sp", "speak": {"models": [{"id": "tts", "local": {}}]}}
    )
    assert config.speak is not None
    health = ModelRouter("sp", config.speak.models, build_strategy("priority", []), now=0.0)

    def source(_model_id: str, request: Any) -> Observable[PcmChunk]:
        spoken.append(request.text)
        chunk = np.ones(480, dtype=np.int16)
        call = scheduler.create_cold_observable(
            *[on_next(t, PcmChunk(chunk, OUT_RATE)) for t in (1, 2, 3, 4)], on_completed(4)
        )
        calls.append(call)
        return call

    return SpeakRouter(config, {}, health, random.Random(0), scheduler, source=source)


class Rig:
    """A conversation's parts on one scheduler, recording what the providers were asked."""

    def __init__(self, heard: list[str], answer: list[str], final_after: int = 4) -> None:
        self.scheduler = TestScheduler()
        self.requests: list[ChatRequest] = []
        self.sentences: list[str] = []
        self.chats: list[Any] = []
        self.speaks: list[Any] = []
        listen = _listen_router(self.scheduler, heard, final_after)
        speak = _speak_router(self.scheduler, self.sentences, self.speaks)
        settings = VadSettings(
            mode=2,
            frame_ms=20,
            min_speech_ms=40,
            hangover_ms=60,
            preroll_ms=0,
            max_segment_ms=15_000,
        )

        def chat(request: ChatRequest) -> Observable[ChatEvent]:
            self.requests.append(request)
            last = len(answer)
            chunks = [
                on_next(
                    i + 1, ChatChunk(CHAT, ChatDelta(text, None if i + 1 < last else "complete"))
                )
                for i, text in enumerate(answer)
            ]
            source = self.scheduler.create_cold_observable(*chunks, on_completed(last))
            self.chats.append(source)
            return source

        self.parts = ConversationParts(
            hear=hear(listen, settings, None, False, classify=_nonzero),
            transcribe=lambda segment: listen.transcribe(segment, None, False),
            chat=chat,
            speak=lambda voice: speak_text(speak, voice, OUT_RATE, "c1"),
            provider_id=speak.provider_id,
            output_rate=OUT_RATE,
        )

    def run(self, inputs: list[tuple[float, Any]], **settings: Any) -> list[tuple[float, Any]]:
        source = self.scheduler.create_hot_observable(
            *[on_next(t, item) for t, item in inputs], on_completed(max(t for t, _ in inputs) + 1)
        )
        results = self.scheduler.start(
            lambda: source.pipe(converse(self.parts, ConversationSettings(**settings))),
            disposed=500,
        )
        out: list[tuple[float, Any]] = []
        for m in results.messages:
            assert m.value.kind != "E", m.value.exception
            out.append((m.time, m.value.value if m.value.kind == "N" else "completed"))
        return out


def audio(pattern: str, at: float = T0 + 1) -> list[tuple[float, Any]]:
    """One frame per tick from `at`: `s` speech, `.` quiet."""
    return [(at + i, UserAudio(SPEECH if c == "s" else QUIET)) for i, c in enumerate(pattern)]


def first(events: list[tuple[float, Any]], kind: type) -> tuple[float, Any]:
    return next((t, e) for t, e in events if isinstance(e, kind))


def test_barge_in_stops_the_reply_on_the_frame_that_starts_the_users_speech() -> None:
    answer = ["One two. ", "Three four. ", "Five. ", "Six. ", "Seven. ", "Eight. ", "Nine."]
    rig = Rig(["what time is it", "stop"], answer)
    # turn 1: speech at 201-202, its end at 205; its final at 202 + 4 = 206 starts the
    # reply (chat chunks at 207-213). The user speaks again at 212-213:
    # speech_started (segment 1) at 213.
    events = rig.run(audio("ss" + "." * 9 + "ss" + "." * 10))
    started_1 = [t for t, e in events if isinstance(e, SpeechStarted) and e.segment_id == 1]
    assert started_1 == [T0 + 13]
    at, interrupted = first(events, ReplyInterrupted)
    assert at == T0 + 13  # on the same frame: within one audio frame
    assert interrupted.reason == "barge_in" and interrupted.turn_id == 1
    # the chat call and the sentence being synthesized were disposed at that moment
    assert rig.chats[0].subscriptions == [ReactiveTest.subscribe(T0 + 6, T0 + 13)]
    assert rig.sentences[:2] == ["One two.", "Three four."]
    assert rig.speaks[1].subscriptions == [ReactiveTest.subscribe(T0 + 11, T0 + 13)]
    audio_before = sum(
        e.samples.size for t, e in events if isinstance(e, ReplyAudio) and e.turn_id == 1
    )
    assert not [e for t, e in events if isinstance(e, ReplyAudio) and e.turn_id == 1 and t > at]
    assert interrupted.sent_samples == audio_before == 5 * 480  # 100 ms
    assert interrupted.text.startswith("One two.")
    ended = [e for _, e in events if isinstance(e, TurnEnded)]
    assert ended[0].reason == "interrupted" and ended[0].reply_text == interrupted.text
    # the next turn's request carries only what was spoken of the first reply
    assert len(rig.requests) == 2
    history = [(m.role, m.content) for m in rig.requests[1].message_history]
    assert history[-1] == ("assistant", interrupted.text)
    assert rig.requests[1].message.content == "stop"


def test_played_position_decides_what_the_history_keeps() -> None:
    rig = Rig(["hello"], ["One two three four. ", "Five six."])
    # the reply starts at 206; the first sentence is complete at 207, its audio
    # (4 x 20 ms) comes at 208-211, the second's first 20 ms at 212. The client
    # reports 40 ms played, then cancels.
    inputs = [*audio("ss..."), (T0 + 12.5, Played(40)), (T0 + 12.6, CancelResponse())]
    events = rig.run(inputs)
    at, interrupted = first(events, ReplyInterrupted)
    assert at == T0 + 12.6 and interrupted.reason == "cancelled"
    assert interrupted.kept_ms == 40 and interrupted.sent_ms == 100
    assert interrupted.text == "One two"  # half of the sentence's 80 ms


def test_turns_wait_for_quiet_and_join_finals() -> None:
    rig = Rig(["first part", "second part"], ["Okay."], final_after=6)
    # segment 0: speech at 201-202, ended at 205, its final at 208 while the user
    # speaks again (segment 1 started at 207): one turn joins both finals
    events = rig.run(audio("ss..." + "ss" + "....."))
    turns = [e for _, e in events if isinstance(e, UserTurn)]
    assert [t.text for t in turns] == ["first part second part"]
    assert rig.requests[0].message.content == "first part second part"
    assert events[-1][1] == "completed"


def test_manual_turns_commit_audio_and_respond_on_request() -> None:
    rig = Rig(["turn on the lights"], ["Done."])
    inputs = [(T0 + 1, UserText("hello", respond=False))]
    inputs += [(T0 + 2 + i, UserAudio(SPEECH)) for i in range(3)]
    inputs += [(T0 + 6, CommitAudio()), (T0 + 12, CreateResponse())]
    events = rig.run(inputs, turn_detection=False, instructions="Be brief.")
    turns = [(t, e.text) for t, e in events if isinstance(e, UserTurn)]
    assert turns == [(T0 + 1, "hello"), (T0 + 10, "turn on the lights")]
    assert not [e for _, e in events if isinstance(e, SpeechStarted)]  # no VAD
    assert len(rig.requests) == 1
    request = rig.requests[0]
    assert [(m.role, m.content) for m in request.message_history] == [
        ("system", "Be brief."),
    ]
    assert request.message.content == "hello turn on the lights"
    assert [e.reason for _, e in events if isinstance(e, TurnEnded)] == ["complete"]


def test_a_failing_reply_ends_its_turn_and_the_conversation_goes_on() -> None:
    rig = Rig([], [])
    boom = RuntimeError("every chat model failed")

    def failing(request: ChatRequest) -> Observable[ChatEvent]:
        rig.requests.append(request)
        return rig.scheduler.create_cold_observable(ReactiveTest.on_error(1, boom))

    rig.parts = ConversationParts(
        rig.parts.hear,
        rig.parts.transcribe,
        failing,
        rig.parts.speak,
        rig.parts.provider_id,
        rig.parts.output_rate,
    )
    events = rig.run([(T0 + 1, UserText("hi")), (T0 + 5, UserText("again"))])
    ended = [(t, e) for t, e in events if isinstance(e, TurnEnded)]
    assert [(t, e.reason, e.error) for t, e in ended] == [
        (T0 + 2, "error", boom),
        (T0 + 6, "error", boom),
    ]
    assert events[-1][1] == "completed"


def test_chat_restart_skips_what_was_already_spoken() -> None:
    rig = Rig([], [])

    def restarting(request: ChatRequest) -> Observable[ChatEvent]:
        rig.requests.append(request)
        return rig.scheduler.create_cold_observable(
            on_next(1, ChatChunk(CHAT, ChatDelta("Hello the"))),
            on_next(2, Reset("m1", RuntimeError("broke"))),
            on_next(3, ChatChunk(CHAT, ChatDelta("Hello there. Bye.", "complete"))),
            on_completed(3),
        )

    rig.parts = ConversationParts(
        rig.parts.hear,
        rig.parts.transcribe,
        restarting,
        rig.parts.speak,
        rig.parts.provider_id,
        rig.parts.output_rate,
    )
    rig.run([(T0 + 1, UserText("hi"))])
    assert rig.sentences == ["Hello there.", "Bye."]


def test_spoken_text_cuts_a_sentence_at_its_share_of_the_audio() -> None:
    one = SpokenSentence(Sentence(0, "One two three four.", 0, 19), 0, 100, "m", True)
    two = SpokenSentence(Sentence(1, "Five six.", 20, 29), 100, 50, "m", True)
    assert spoken_text([one, two], 150, 1000) == "One two three four. Five six."
    assert spoken_text([one, two], 125, 1000) == "One two three four. Five"
    assert spoken_text([one, two], 50, 1000) == "One two"
    assert spoken_text([one, two], 0, 1000) == ""
