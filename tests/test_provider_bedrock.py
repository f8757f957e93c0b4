"""The Bedrock adapter (SigV4, Converse / ConverseStream) against the fake Bedrock server."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.eventstream import EventStreamBuffer
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from config.models import BedrockConfig, ClientConfig
from fakes.bedrock_server import (
    EVENT_STREAM,
    STREAM_ERROR_MESSAGE,
    FakeBedrock,
    encode_event,
    event_message,
    run_fake_bedrock,
)
from providers.bedrock import BedrockProvider
from providers.types import ChatParams, ErrorCategory, Message, ProviderError, TokenUsage
from tests.provider_helpers import collect, stream_error

ACCESS_KEY = "AKIDFAKEEXAMPLE12345"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
TOKEN = "FwoGZXIvYXdzEFAKESESSIONTOKEN"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with run_fake_bedrock() as server:
        server.script.secret_access_key = SECRET
        yield server


def bedrock(fake: FakeBedrock, session: aiohttp.ClientSession, **config: Any) -> BedrockProvider:
    settings: dict[str, Any] = {
        "base_url": f"{fake.url}/",
        "region": "eu-west-3",
        "model": MODEL,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET,
    }
    settings.update(config)
    return BedrockProvider(BedrockConfig(**settings), ClientConfig(), session)


# --- streaming: the happy path -------------------------------------------------------


async def test_stream_yields_text_then_final_delta_with_usage(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    provider = bedrock(fake, session)
    assert (provider.provider_id, provider.model_name) == ("bedrock", MODEL)
    deltas = await collect(provider)
    assert [d.content for d in deltas] == ["Hello", " from", " fake", ""]
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason == "complete"
    assert final.usage == TokenUsage(prompt_tokens=7, response_tokens=3, total_tokens=10)
    assert final.metadata is not None
    assert re.fullmatch(r"[0-9a-f-]{36}", final.metadata["request_id"])
    assert fake.stats.streams_completed == 1


async def test_model_id_is_one_percent_encoded_path_segment(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    await collect(bedrock(fake, session))
    assert fake.stats.last_raw_path == (
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    )
    assert fake.stats.last_model_id == MODEL


async def test_default_endpoint_is_the_regional_runtime(session: aiohttp.ClientSession) -> None:
    config = BedrockConfig(
        region="ap-south-1", access_key_id=SecretStr("a"), secret_access_key=SecretStr("b")
    )
    provider = BedrockProvider(config, ClientConfig(), session)
    assert provider.stream_url == (
        "https://bedrock-runtime.ap-south-1.amazonaws.com/model/"
        "anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    )


async def test_request_is_sigv4_signed(fake: FakeBedrock, session: aiohttp.ClientSession) -> None:
    await collect(bedrock(fake, session))
    headers = fake.stats.last_headers
    today = datetime.now(UTC).strftime("%Y%m%d")
    auth = headers["Authorization"]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{today}/eu-west-3/bedrock/aws4_request, "
    )
    signed = re.search(r"SignedHeaders=([^,]+)", auth)
    assert signed is not None
    assert {"content-type", "host", "x-amz-date"} <= set(signed.group(1).split(";"))
    assert re.fullmatch(rf"{today}T\d{{6}}Z", headers["X-Amz-Date"])
    assert "X-Amz-Security-Token" not in headers
    assert SECRET not in json.dumps(headers)
    # The fake verified the signature over the exact bytes sent (else it answers 403).
    assert fake.stats.streams_completed == 1


async def test_session_token_is_sent_and_signed(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    await collect(bedrock(fake, session, session_token=TOKEN))
    headers = fake.stats.last_headers
    assert headers["X-Amz-Security-Token"] == TOKEN
    assert "x-amz-security-token" in headers["Authorization"]
    assert fake.stats.streams_completed == 1


async def test_a_wrong_secret_fails_the_signature_as_auth_without_leaking_it(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    wrong = "not-the-right-secret-key-0123456789"
    provider = bedrock(fake, session, secret_access_key=wrong)
    error, _ = await stream_error(provider)
    assert error.category is ErrorCategory.AUTH
    assert error.status == 403
    assert "(InvalidSignatureException)" in error.message
    assert wrong not in str(error)


async def test_request_body_maps_roles_system_and_params(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    provider = bedrock(
        fake,
        session,
        default_params={"max_tokens": 64, "temperature": 0.1, "top_k": 50, "messages": "x"},
    )
    params = ChatParams(
        messages=(
            Message("system", "be brief"),
            Message("user", "hi"),
            Message("user", "are you there?"),
            Message("assistant", "yes"),
            Message("user", "good"),
        ),
        params={
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
            "additionalModelRequestFields": {"anthropic_beta": ["x"]},
        },
    )
    await collect(provider, params)
    assert fake.stats.last_body == {
        "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
        "messages": [
            {"role": "user", "content": [{"text": "hi"}, {"text": "are you there?"}]},
            {"role": "assistant", "content": [{"text": "yes"}]},
            {"role": "user", "content": [{"text": "good"}]},
        ],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {
            "maxTokens": 64,
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "additionalModelRequestFields": {"anthropic_beta": ["x"], "top_k": 50},
    }
    assert fake.stats.last_headers["Content-Type"] == "application/json"
    assert fake.stats.last_headers["Accept"] == EVENT_STREAM


async def test_unknown_role_is_a_bad_request(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    params = ChatParams(messages=(Message("tool", "42"),))
    with pytest.raises(ProviderError) as caught:
        await collect(bedrock(fake, session), params)
    assert caught.value.category is ErrorCategory.BAD_REQUEST
    assert fake.stats.requests == 0


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("end_turn", "complete"),
        ("stop_sequence", "complete"),
        ("max_tokens", "max_tokens"),
        ("model_context_window_exceeded", "max_tokens"),
        ("guardrail_intervened", "content_filtered"),
        ("content_filtered", "content_filtered"),
        ("tool_use", "other"),
    ],
)
async def test_stop_reason_mapping(
    fake: FakeBedrock, session: aiohttp.ClientSession, vendor: Any, ours: str
) -> None:
    fake.script.stop_reason = vendor
    deltas = await collect(bedrock(fake, session))
    assert deltas[-1].finish_reason == ours


async def test_guardrail_without_text_is_not_empty_output(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "empty"
    fake.script.stop_reason = "guardrail_intervened"
    deltas = await collect(bedrock(fake, session))
    assert len(deltas) == 1
    assert deltas[0].finish_reason == "content_filtered"
    assert deltas[0].usage == TokenUsage(7, 0, 7)


async def test_body_ending_right_after_message_stop_is_complete(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.send_metadata = False
    deltas = await collect(bedrock(fake, session))
    assert "".join(d.content for d in deltas) == "Hello from fake"
    assert deltas[-1].finish_reason == "complete"
    assert deltas[-1].usage is None


# --- streaming: faults ---------------------------------------------------------------


async def test_http_error_names_the_aws_error_type(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "http_429"
    fake.script.retry_after = "3"
    error, _ = await stream_error(bedrock(fake, session))
    assert error.message == (
        f"bedrock/{MODEL}: Too many requests, please wait before trying again. "
        "(ThrottlingException)"
    )
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("exception_type", "category"),
    [
        ("throttlingException", ErrorCategory.RATE_LIMITED),
        ("validationException", ErrorCategory.BAD_REQUEST),
        ("modelStreamErrorException", ErrorCategory.TRANSIENT),
        ("internalServerException", ErrorCategory.TRANSIENT),
        ("serviceUnavailableException", ErrorCategory.TRANSIENT),
        ("somethingNewException", ErrorCategory.TRANSIENT),
    ],
)
async def test_exception_events_mid_stream(
    fake: FakeBedrock, session: aiohttp.ClientSession, exception_type: str, category: ErrorCategory
) -> None:
    fake.script.fault = "error_event"
    fake.script.exception_type = exception_type
    fake.script.fault_after_chunks = 2
    error, seen = await stream_error(bedrock(fake, session))
    assert [d.content for d in seen] == ["Hello", " from"]
    assert error.category is category
    assert error.message == f"bedrock/{MODEL}: {STREAM_ERROR_MESSAGE} ({exception_type})"


async def test_stream_cut_between_messages_before_message_stop(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "truncated"
    error, seen = await stream_error(bedrock(fake, session))
    assert [d.content for d in seen] == ["Hello"]
    assert error.message == f"bedrock/{MODEL}: stream ended before messageStop"


async def test_stream_cut_inside_a_message(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    fake.script.fault = "truncated"
    fake.script.truncate_inside_message = True
    error, _ = await stream_error(bedrock(fake, session))
    assert error.category is ErrorCategory.PROTOCOL
    assert error.message == f"bedrock/{MODEL}: event stream cut inside a message"


async def test_corrupt_message_crc(fake: FakeBedrock, session: aiohttp.ClientSession) -> None:
    fake.script.fault = "malformed"
    error, _ = await stream_error(bedrock(fake, session))
    assert error.message == f"bedrock/{MODEL}: corrupt event stream (ChecksumMismatch)"


async def test_fake_refuses_unsigned_requests(
    fake: FakeBedrock, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{fake.url}/model/m/converse", json={"messages": []}) as resp:
        assert resp.status == 403
        assert resp.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException:")
        assert await resp.json() == {"message": "Missing Authentication Token"}


async def test_vendor_messages_echoing_the_secret_are_redacted(
    aiohttp_server: AiohttpServer, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": f"bad key {SECRET} / {TOKEN}"},
            status=403,
            headers={"x-amzn-ErrorType": "UnrecognizedClientException"},
        )

    app = web.Application()
    app.router.add_post("/model/{model_id}/converse-stream", handler)
    server = await aiohttp_server(app)
    config = BedrockConfig(
        base_url=str(server.make_url("")),
        access_key_id=SecretStr(ACCESS_KEY),
        secret_access_key=SecretStr(SECRET),
        session_token=SecretStr(TOKEN),
    )
    error, _ = await stream_error(BedrockProvider(config, ClientConfig(), session))
    assert error.category is ErrorCategory.AUTH
    assert error.message == f"bedrock/{MODEL}: bad key *** / *** (UnrecognizedClientException)"


# --- the fake's event stream encoder ------------------------------------------------------


def test_encoded_events_parse_with_botocore() -> None:
    buffer = EventStreamBuffer()
    data = event_message("contentBlockDelta", {"delta": {"text": "hé"}}) + encode_event(
        {":message-type": "exception", ":exception-type": "throttlingException"}, b""
    )
    buffer.add_data(data[:7])
    assert list(buffer) == []
    buffer.add_data(data[7:])
    first, second = list(buffer)
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"delta": {"text": "hé"}}
    assert second.headers[":exception-type"] == "throttlingException"
    assert second.payload == b""


@pytest.mark.parametrize(
    ("message", "category", "text"),
    [
        (
            encode_event(
                {
                    ":message-type": "error",
                    ":error-code": "InternalFailure",
                    ":error-message": "boom",
                },
                b"",
            ),
            ErrorCategory.TRANSIENT,
            "boom (InternalFailure)",
        ),
        (
            encode_event({":message-type": "event", ":event-type": "contentBlockDelta"}, b"{oops"),
            ErrorCategory.PROTOCOL,
            "contentBlockDelta payload is not JSON",
        ),
    ],
)
async def test_error_messages_and_bad_payloads_in_the_event_stream(
    aiohttp_server: AiohttpServer,
    session: aiohttp.ClientSession,
    message: bytes,
    category: ErrorCategory,
    text: str,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": EVENT_STREAM})
        await resp.prepare(request)
        await resp.write(event_message("contentBlockDelta", {"delta": {"text": "ok"}}))
        await resp.write(message)
        return resp

    app = web.Application()
    app.router.add_post("/model/{model_id}/converse-stream", handler)
    server = await aiohttp_server(app)
    config = BedrockConfig(
        base_url=str(server.make_url("")),
        access_key_id=SecretStr(ACCESS_KEY),
        secret_access_key=SecretStr(SECRET),
    )
    error, seen = await stream_error(BedrockProvider(config, ClientConfig(), session))
    assert [d.content for d in seen] == ["ok"]
    assert error.category is category
    assert error.message == f"bedrock/{MODEL}: {text}"
