"""Tool calls and images on `POST /v1/chat/completions`, with the unmodified `openai` SDK.

A full tool loop (streamed and not) against a router whose first model breaks
inside a tool call's arguments; parallel calls; raw fragments and the error
event; capability routing and its typed error; images as data URLs and https
URLs, and the typed errors for bad ones.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from fakes.openai_server import FakeOpenAI, FakeToolCall
from tests.conftest import make_config, openai_model
from tests.openai_sdk import MakeClient, openai_app_factory, sdk

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris?"}]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def sluice(aiohttp_client: Any) -> MakeClient:
    return openai_app_factory(aiohttp_client)


def _calls(fake: FakeOpenAI, *calls: tuple[str, str, str]) -> None:
    fake.script.tool_calls = [
        FakeToolCall(name, arguments, id=call_id, pieces=4) for call_id, name, arguments in calls
    ]


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


async def _stream(oai: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, list[Any], list[Any]]:
    """Content, tool-call deltas (in order) and every chunk of one streamed answer."""
    stream = await oai.chat.completions.create(stream=True, **kwargs)
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    return text, deltas, chunks


async def test_tool_loop_fails_over_inside_a_call_without_the_client_seeing_it(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _calls(fake_a, ("call_a", "get_weather", '{"city": "Paris", "unit": "celsius"}'))
    _calls(fake_b, ("call_b", "get_weather", '{"city": "Paris"}'))
    fake_a.script.fault = "cut_in_tool_call"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with sdk(client) as oai:
        text, deltas, chunks = await _stream(oai, model="r", messages=ASK, tools=[WEATHER])
        # the model broke inside call_a's arguments: the client saw only b's call, whole
        assert text == ""
        assert len(deltas) == 1
        call = deltas[0]
        assert (call.index, call.id, call.type) == (0, "call_b", "function")
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
        assert {c.model for c in chunks} == {"r/b"}
        assert fake_a.stats.requests == 1

        # the tool's result goes back; the answer is text
        fake_a.script.fault = "none"
        history: list[ChatCompletionMessageParam] = [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": '{"temp_c": 21}'},
        ]
        answer, more, end = await _stream(oai, model="r", messages=history, tools=[WEATHER])
    assert answer == "Hello from fake"
    assert more == []
    assert [c.choices[0].finish_reason for c in end if c.choices][-1] == "stop"
    sent = fake_a.stats.last_body
    assert sent is not None
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["content"] is None
    assert sent["messages"][2] == {
        "role": "tool",
        "content": '{"temp_c": 21}',
        "tool_call_id": "call_b",
    }
    assert sent["tools"] == [WEATHER]


async def test_non_streamed_tool_loop_fails_over(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _calls(fake_a, ("call_a", "get_weather", '{"city": "Paris"}'))
    _calls(fake_b, ("call_b", "get_weather", '{"city": "Lyon"}'))
    fake_a.script.fault = "cut_in_tool_call"
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(
            model="r",
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls is not None
        [call] = choice.message.tool_calls
        assert call.type == "function"
        assert (call.id, call.function.name) == ("call_b", "get_weather")
        assert json.loads(call.function.arguments) == {"city": "Lyon"}
        assert fake_b.stats.last_body is not None
        assert fake_b.stats.last_body["tool_choice"] == {
            "type": "function",
            "function": {"name": "get_weather"},
        }
        final = await oai.chat.completions.create(
            model="r",
            messages=[
                *ASK,
                choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": "21C"},
            ],
            tools=[WEATHER],
        )
    # a's text answer broke after "Hello": b continued it (text follows the continuation rules)
    assert final.choices[0].message.content == "HelloBackup answer"
    assert final.choices[0].finish_reason == "stop"
    assert final.model == "r/b"


async def test_parallel_calls_keep_their_indexes_and_arrive_whole(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    fake_a.script.tool_preamble = ["Let me", " check."]
    _calls(
        fake_a,
        ("call_1", "get_weather", '{"city": "Paris"}'),
        ("call_2", "get_time", "{}"),
        ("call_3", "get_weather", '{"city": "Oslo"}'),
    )
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        text, deltas, _ = await _stream(
            oai, model="r", messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=True
        )
    assert text == "Let me check."
    assert [(d.index, d.id, d.function.name) for d in deltas] == [
        (0, "call_1", "get_weather"),
        (1, "call_2", "get_time"),
        (2, "call_3", "get_weather"),
    ]
    assert [json.loads(d.function.arguments) for d in deltas] == [
        {"city": "Paris"},
        {},
        {"city": "Oslo"},
    ]
    assert fake_a.stats.last_body is not None
    assert fake_a.stats.last_body["parallel_tool_calls"] is True


async def test_fragments_pass_as_they_come_and_a_break_inside_one_is_an_error_event(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _calls(fake_a, ("call_a", "get_weather", '{"city": "Paris"}'))
    _calls(fake_b, ("call_b", "get_weather", '{"city": "Paris"}'))
    config = make_config(
        openai_model("a", fake_a), openai_model("b", fake_b), tool_call_streaming="fragments"
    )
    client = await sluice(config)
    async with sdk(client) as oai:
        _, deltas, _ = await _stream(oai, model="r", messages=ASK, tools=[WEATHER])
        assert len(deltas) == 4  # the fake's four fragments, as they came
        assert deltas[0].id == "call_a" and deltas[0].function.name == "get_weather"
        assert all(d.id is None and d.index == 0 for d in deltas[1:])
        assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}

        fake_a.script.fault = "cut_in_tool_call"
        with pytest.raises(openai.APIError) as raised:
            await _stream(oai, model="r", messages=ASK, tools=[WEATHER])
    assert "model_unavailable" in str(raised.value.body) or "failed after part" in str(
        raised.value.message
    )
    assert fake_b.stats.requests == 0  # the stream ended with the error event, no splice


async def test_tools_go_only_to_models_that_have_them(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _calls(fake_b, ("call_b", "get_weather", '{"city": "Paris"}'))
    no_tools = openai_model("a", fake_a, capabilities={"tools": False})
    client = await sluice(make_config(no_tools, openai_model("b", fake_b)))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(model="r", messages=ASK, tools=[WEATHER])
        plain = await oai.chat.completions.create(model="r", messages=ASK)
    assert completion.model == "r/b"
    assert completion.choices[0].message.tool_calls is not None
    assert plain.model == "r/a"  # a text-only request still goes to the first model
    assert fake_a.stats.requests == 1 and fake_a.stats.last_body is not None
    assert "tools" not in fake_a.stats.last_body


async def test_no_model_with_tools_is_a_typed_error(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a, capabilities={"tools": False})))
    async with sdk(client) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(model="r", messages=ASK, tools=[WEATHER])
        with pytest.raises(openai.BadRequestError) as streamed:
            await _stream(oai, model="r", messages=ASK, tools=[WEATHER])
    for error in (raised.value, streamed.value):
        assert isinstance(error.body, dict)
        assert error.body["code"] == "unsupported_capability"
        assert "tool calling" in error.body["message"] and "'r'" in error.body["message"]
    assert fake_a.stats.requests == 0


async def test_a_data_url_image_reaches_the_vendor(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    url = _data_url(PNG)
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(
            model="r",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                    ],
                }
            ],
        )
    assert completion.choices[0].message.content == "Hello from fake"
    assert fake_a.stats.last_body is not None
    assert fake_a.stats.last_body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
    ]


async def test_https_images_only_go_to_models_that_fetch_urls(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    image = "https://example.com/cat.png"
    message: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}
    ]
    inline_only = openai_model("a", fake_a, capabilities={"image_urls": False})
    client = await sluice(make_config(inline_only, openai_model("b", fake_b)))
    alone = await sluice(make_config(inline_only))
    async with sdk(client) as oai:
        completion = await oai.chat.completions.create(model="r", messages=message)
    assert completion.model == "r/b"
    assert fake_a.stats.requests == 0
    assert fake_b.stats.last_body is not None
    assert fake_b.stats.last_body["messages"][0]["content"][0]["image_url"]["url"] == image
    async with sdk(alone) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(model="r", messages=message)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "unsupported_capability"
    assert "Sluice does not fetch them" in raised.value.body["message"]
    assert fake_a.stats.requests == 0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png;base64,not*base64!", "base64 does not decode"),
        (_data_url(b"GIF89a", "image/tiff"), "media type 'image/tiff' is not accepted"),
        ("data:image/png,plain", "not base64"),
        ("ftp://example.com/x.png", "neither a data: URL nor an https URL"),
    ],
)
async def test_bad_images_get_a_typed_error_for_that_request(
    sluice: MakeClient, fake_a: FakeOpenAI, url: str, words: str
) -> None:
    client = await sluice(make_config(openai_model("a", fake_a)))
    async with sdk(client) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(
                model="r",
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
                ],
            )
        again = await oai.chat.completions.create(model="r", messages=ASK)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "invalid_image"
    assert words in raised.value.body["message"]
    assert again.choices[0].message.content == "Hello from fake"
    assert fake_a.stats.requests == 1


async def test_image_limits_are_configurable(sluice: MakeClient, fake_a: FakeOpenAI) -> None:
    config = make_config(openai_model("a", fake_a))
    limits = config.limits.model_copy(
        update={
            "images": config.limits.images.model_copy(
                update={"max_bytes": 16, "media_types": ["image/png"]}
            )
        }
    )
    client = await sluice(config.model_copy(update={"limits": limits}))
    async with sdk(client) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(
                model="r",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": _data_url(PNG)}}],
                    }
                ],
            )
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "invalid_image"
    assert "the limit is 16 (limits.images.max_bytes)" in raised.value.body["message"]


async def test_a_pinned_model_without_tools_is_named_in_the_error(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    no_tools = openai_model("a", fake_a, capabilities={"tools": False})
    client = await sluice(make_config(no_tools, openai_model("b", fake_b)))
    async with sdk(client) as oai:
        with pytest.raises(openai.BadRequestError) as raised:
            await oai.chat.completions.create(model="r/a", messages=ASK, tools=[WEATHER])
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "unsupported_capability"
    assert "model 'a' of router 'r'" in raised.value.body["message"]
    assert fake_a.stats.requests == fake_b.stats.requests == 0


async def test_a_failure_after_a_whole_call_ends_the_stream_with_an_error_event(
    sluice: MakeClient, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    _calls(
        fake_a,
        ("a0", "get_weather", '{"city": "Paris"}'),
        ("a1", "get_weather", '{"city": "Oslo"}'),
    )
    fake_a.script.fault = "cut_in_tool_call"
    fake_a.script.fault_in_call = 1
    client = await sluice(make_config(openai_model("a", fake_a), openai_model("b", fake_b)))
    received: list[Any] = []
    async with sdk(client) as oai:
        stream = await oai.chat.completions.create(
            model="r", messages=ASK, tools=[WEATHER], stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                received.extend(chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
    assert [call.id for call in received] == ["a0"]  # whole, and never followed by b's
    assert isinstance(raised.value.body, dict)
    assert raised.value.body.get("code") == "model_unavailable"
    assert fake_b.stats.requests == 0


async def test_azure_deployments_carry_tools_and_images(
    sluice: MakeClient, fake_a: FakeOpenAI
) -> None:
    _calls(fake_a, ("call_z", "get_weather", '{"city": "Rome"}'))
    azure = {
        "id": "az",
        "azureopenai": {
            "base_url": fake_a.root,
            "model": "my-gpt4o",
            "api_version": "2024-10-21",
            "api_key": "azure-key",
        },
    }
    client = await sluice(make_config(azure))
    image = {"type": "image_url", "image_url": {"url": _data_url(PNG)}}
    async with sdk(client) as oai:
        _, deltas, _ = await _stream(
            oai,
            model="r",
            messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, image]}],
            tools=[WEATHER],
        )
    assert [(d.id, d.function.name) for d in deltas] == [("call_z", "get_weather")]
    assert fake_a.stats.last_path == "/openai/deployments/my-gpt4o/chat/completions"
    assert fake_a.stats.last_body is not None
    assert fake_a.stats.last_body["tools"] == [WEATHER]
    assert fake_a.stats.last_body["messages"][0]["content"][1] == image
