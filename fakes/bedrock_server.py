"""A fake AWS Bedrock runtime (Converse / ConverseStream) on 127.0.0.1, for tests.

Flow: a `POST /model/{modelId}/converse` or `/converse-stream` request comes in;
the server checks its SigV4 `Authorization` header (403 without one, and, when the
script knows the secret key, 403 for a signature that does not verify), then
answers as the mutable `FakeBedrockScript` says:

- Converse: `{"output": {"message": {...}}, "stopReason", "usage", "metrics"}`;
- ConverseStream: a binary AWS event stream (`application/vnd.amazon.eventstream`)
  of `messageStart`, `contentBlockDelta`..., `contentBlockStop`, `messageStop`,
  `metadata` events, each message framed as the AWS event stream encoding says
  (prelude with lengths and CRC32, string headers, JSON payload, message CRC32);

or one of the `Fault`s. With `script.tool_calls` set the answer (after any text)
is one `toolUse` block per call (streamed as `contentBlockStart.start.toolUse` +
`contentBlockDelta.delta.toolUse.input` fragments) and stopReason `tool_use`;
`fault_in_tool_call` moves a mid-stream fault inside the first call's input.
`toolConfig`, image blocks and `toolUse` / `toolResult` pairing are validated as
Converse does (400 ValidationException). HTTP errors carry `x-amzn-ErrorType` and a
`{"message": ...}` body; a mid-stream failure is a `:message-type: exception`
event. A request may pick its own fault with the `x-fake-fault` header.
`FakeBedrockStats` records what arrived (including the raw, still-encoded path)
and how each response ended, including streams the client closed early.

    async with run_fake_bedrock() as fake:
        fake.script.fault = "http_429"
        ...  # configure BedrockConfig(base_url=fake.url, ...)
        await fake.wait_stream_closed(within=1.0)

Standalone: `python -m fakes.bedrock_server --port 9500 --chunks 50 --delay 0.02`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args
from urllib.parse import quote

from aiohttp import web

from fakes.common import (
    FAULT_HEADER,
    FakeStats,
    RunningStreamFake,
    cli_chunks,
    cli_parser,
    fake_app,
    half_body,
    record_request,
    retry_after_headers,
    serve_app,
    serve_until_signalled,
    stall_until_client_gone,
    track_stream,
)
from fakes.tool_script import (
    RequestInvalid,
    ScriptedCall,
    check_function_name,
    check_object_schema,
    require,
)

Fault = Literal[
    "none",
    "http_400",
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "stall_before_first",
    "stall_mid_stream",
    "truncated",
    "error_event",
    "empty",
    "malformed",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)

FakeStopReason = Literal[
    "end_turn",
    "stop_sequence",
    "max_tokens",
    "tool_use",
    "guardrail_intervened",
    "content_filtered",
    "model_context_window_exceeded",
]

EVENT_STREAM = "application/vnd.amazon.eventstream"

_ERRORS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        400: ("ValidationException", "A conversation must start with a user message."),
        403: (
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404: (
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        429: ("ThrottlingException", "Too many requests, please wait before trying again."),
        500: ("InternalServerException", "The server encountered an internal error."),
    }
)
_FAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {"http_400": 400, "http_403": 403, "http_404": 404, "http_429": 429, "http_500": 500}
)
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;\-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


def encode_event(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event stream message: string headers (type 7) and a payload in; bytes out.

    Layout: total length and headers length (big-endian uint32), the CRC32 of
    those 8 bytes, the headers (name length, name, type 7, value length uint16,
    value), the payload, and the CRC32 of everything before it.
    """
    encoded = b"".join(
        bytes([len(name.encode())])
        + name.encode()
        + b"\x07"
        + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_message(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """A ConverseStream event (`:message-type: event`) with a JSON payload."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_event(headers, json.dumps(payload, separators=(",", ":")).encode())


def exception_message(exception_type: str, message: str) -> bytes:
    """A ConverseStream exception (`:message-type: exception`), e.g. throttlingException."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event(headers, json.dumps({"message": message}).encode())


def sigv4_problem(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    secret_access_key: str,
) -> str | None:
    """Check a SigV4 signature independently of botocore; None when it verifies.

    Canonical request per the SigV4 spec for services other than S3: the path
    as sent, URI-encoded once more; no query; the signed headers, lower-cased
    with values trimmed; the SHA-256 of the body.
    """
    match = _AUTH.fullmatch(headers.get("Authorization", ""))
    if match is None:
        return "Authorization header is not AWS4-HMAC-SHA256"
    amz_date = headers.get("X-Amz-Date", "")
    if not amz_date.startswith(match["date"]):
        return "X-Amz-Date is missing or outside the credential scope"
    signed = match["signed"].split(";")
    missing = [name for name in signed if name not in headers]
    if missing or "host" not in signed:
        return f"signed headers missing from the request: {missing or ['host']}"
    path, _, query = raw_path.partition("?")
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/~"),
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            match["signed"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{match['date']}/{match['region']}/{match['service']}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_access_key}".encode()
    for part in (match["date"], match["region"], match["service"], "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature mismatch"
    return None


@dataclass
class FakeBedrockScript:
    """How the fake answers; tests mutate it between (or during) requests.

    `chunks` are the text deltas, `delay` the seconds slept before each one,
    `stop_reason` the `messageStop` one. `fault_after_chunks` is how many deltas
    `stall_mid_stream`, `truncated`, `error_event` and `malformed` send before
    misbehaving; `exception_type` is the `error_event`'s `:exception-type`.
    `truncate_inside_message` makes `truncated` cut a message in half instead of
    ending between messages. `send_metadata` False ends the body right after
    `messageStop`. `retry_after` is a 429's `Retry-After` (AWS sends none by
    default). With `secret_access_key` set the signature itself is verified.
    `tool_calls` follow the text as `toolUse` blocks; `fault_in_tool_call` moves a
    mid-stream fault into the first one's input.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " fake"])
    delay: float = 0.0
    stop_reason: FakeStopReason = "end_turn"
    fault: Fault = "none"
    fault_after_chunks: int = 1
    exception_type: str = "modelStreamErrorException"
    truncate_inside_message: bool = False
    send_metadata: bool = True
    retry_after: str | None = None
    input_tokens: int = 7
    secret_access_key: str | None = None
    tool_calls: list[ScriptedCall] = field(default_factory=list)
    fault_in_tool_call: bool = False


_MID_STREAM_FAULTS = ("stall_mid_stream", "truncated", "error_event", "malformed")
_IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")


def _check_tool_config(config: Any) -> set[str]:
    """`toolConfig` as Converse takes it; returns the declared tool names."""
    require(isinstance(config, dict), "toolConfig: must be an object")
    tools = config.get("tools")
    require(
        isinstance(tools, list) and len(tools) > 0, "toolConfig.tools: must have at least 1 item"
    )
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"toolConfig.tools.{i}"
        spec: Any = tool.get("toolSpec") if isinstance(tool, dict) else None
        require(
            isinstance(spec, dict) and set(tool) == {"toolSpec"},
            f"{where}: must hold exactly one toolSpec",
        )
        unknown = set(spec) - {"name", "description", "inputSchema", "strict"}
        require(not unknown, f"{where}.toolSpec: unknown field {sorted(unknown)[:1]}")
        check_function_name(spec.get("name"), f"{where}.toolSpec.name")
        description = spec.get("description", "x")
        require(
            isinstance(description, str) and description != "",
            f"{where}.toolSpec.description: length must be at least 1",
        )
        schema: Any = spec.get("inputSchema")
        require(
            isinstance(schema, dict) and set(schema) == {"json"},
            f"{where}.toolSpec.inputSchema: must be {{json: ...}}",
        )
        check_object_schema(schema["json"], f"{where}.toolSpec.inputSchema.json")
        names.add(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        require(
            isinstance(choice, dict) and len(choice) == 1,
            "toolConfig.toolChoice: must hold exactly one of auto, any, tool",
        )
        ((kind, value),) = choice.items()
        require(kind in ("auto", "any", "tool"), f"toolConfig.toolChoice: unknown member {kind!r}")
        if kind == "tool":
            require(
                isinstance(value, dict) and value.get("name") in names,
                "toolConfig.toolChoice.tool.name: must name a declared tool",
            )
    return names


def _check_block(block: Any, role: str, where: str) -> None:
    require(
        isinstance(block, dict) and len(block) == 1,
        f"{where}: a content block holds exactly one member",
    )
    ((kind, value),) = block.items()
    if kind == "text":
        require(isinstance(value, str), f"{where}.text: must be a string")
    elif kind == "image":
        require(role == "user", f"{where}: image blocks are only allowed in user messages")
        require(
            isinstance(value, dict) and value.get("format") in _IMAGE_FORMATS,
            f"{where}.image.format: must be one of {', '.join(_IMAGE_FORMATS)}",
        )
        source = value.get("source")
        require(
            isinstance(source, dict) and isinstance(source.get("bytes"), str),
            f"{where}.image.source: must hold bytes",
        )
        try:
            base64.b64decode(source["bytes"], validate=True)
        except ValueError as exc:
            raise RequestInvalid(f"{where}.image.source.bytes: invalid base64") from exc
    elif kind == "toolUse":
        require(
            role == "assistant", f"{where}: toolUse blocks are only allowed in assistant messages"
        )
        require(
            isinstance(value, dict) and isinstance(value.get("toolUseId"), str),
            f"{where}.toolUse.toolUseId: is required",
        )
        check_function_name(value.get("name"), f"{where}.toolUse.name")
        require(
            isinstance(value.get("input"), dict), f"{where}.toolUse.input: must be a JSON object"
        )
    elif kind == "toolResult":
        require(role == "user", f"{where}: toolResult blocks are only allowed in user messages")
        require(
            isinstance(value, dict) and isinstance(value.get("toolUseId"), str),
            f"{where}.toolResult.toolUseId: is required",
        )
        content = value.get("content")
        require(
            isinstance(content, list) and len(content) > 0,
            f"{where}.toolResult.content: must have at least 1 item",
        )
        for item in content:
            require(
                isinstance(item, dict)
                and len(item) == 1
                and (
                    (isinstance(item.get("text"), str) and item["text"].strip() != "")
                    or isinstance(item.get("json"), dict)
                ),
                f"{where}.toolResult.content: each item is a non-blank text or a json object",
            )
        require(
            value.get("status", "success") in ("success", "error"),
            f"{where}.toolResult.status: must be success or error",
        )
    else:
        raise RequestInvalid(f"{where}: unknown content block member {kind!r}")


def _check_request(body: Mapping[str, Any]) -> None:
    """Tool config, content blocks, and each assistant turn's toolUse ids answered
    by toolResult blocks in the next (user) message, as Converse checks them."""
    if "toolConfig" in body:
        _check_tool_config(body["toolConfig"])
    pending: list[str] = []
    uses_tools = False
    for i, message in enumerate(body["messages"]):
        require(isinstance(message, dict), f"messages.{i}: must be an object")
        role = str(message.get("role"))
        content = message.get("content")
        require(
            isinstance(content, list) and len(content) > 0,
            f"messages.{i}.content: must have at least 1 item",
        )
        for j, block in enumerate(content):
            _check_block(block, role, f"messages.{i}.content.{j}")
        results = [b["toolResult"]["toolUseId"] for b in content if "toolResult" in b]
        if pending:
            require(
                role == "user" and set(pending) <= set(results),
                f"Expected toolResult blocks at messages.{i}.content for the following Ids: "
                f"{', '.join(sorted(set(pending) - set(results)))}",
            )
        require(
            set(results) <= set(pending),
            f"messages.{i}.content: toolResult for an unknown toolUseId",
        )
        pending = [b["toolUse"]["toolUseId"] for b in content if "toolUse" in b]
        uses_tools = uses_tools or bool(pending or results)
    require(
        not uses_tools or "toolConfig" in body,
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
    )


@dataclass
class FakeBedrockStats(FakeStats):
    """What the fake has seen: the `FakeStats` counters, plus the raw path
    (the model ID as encoded on the wire) and the decoded model ID."""

    last_raw_path: str = ""
    last_model_id: str = ""


FAKE_SCRIPT = web.AppKey("fake_bedrock_script", FakeBedrockScript)
FAKE_STATS = web.AppKey("fake_bedrock_stats", FakeBedrockStats)

STREAM_ERROR_MESSAGE = "The model stream encountered an error. Retry your request."


def _error(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
            **(headers or {}),
        },
    )


def _usage(script: FakeBedrockScript, output_tokens: int) -> dict[str, int]:
    return {
        "inputTokens": script.input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": script.input_tokens + output_tokens,
    }


class _Handler:
    """The request handler of one fake app (state lives on the app)."""

    def __init__(self, app: web.Application, streaming: bool) -> None:
        self._app = app
        self._streaming = streaming

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self._app[FAKE_SCRIPT]
        stats = self._app[FAKE_STATS]
        stats.last_raw_path = request.raw_path
        stats.last_model_id = request.match_info["model_id"]
        _, body = await record_request(request, stats)
        raw = await request.read()  # already read: the bytes the signature covers

        auth = request.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential="):
            return _error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        if script.secret_access_key is not None:
            problem = sigv4_problem(
                request.method, request.raw_path, request.headers, raw, script.secret_access_key
            )
            if problem is not None:
                return _error(
                    403,
                    "InvalidSignatureException",
                    "The request signature we calculated does not match the signature you "
                    f"provided ({problem}).",
                )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "ValidationException", "messages is required")
        try:
            _check_request(body)
        except RequestInvalid as exc:
            return _error(400, "ValidationException", str(exc))
        fault: str = request.headers.get(FAULT_HEADER, script.fault)
        if fault not in FAULTS:
            return _error(400, "ValidationException", f"unknown {FAULT_HEADER} {fault!r}")
        if fault == "error_event" and not self._streaming:
            fault = "http_500"  # without a stream, a model failure is an error response
        if fault in _FAULT_STATUS:
            status = _FAULT_STATUS[fault]
            headers = retry_after_headers(status, script.retry_after)
            error_type, message = _ERRORS[status]
            return _error(status, error_type, message, headers)

        resp: web.StreamResponse | None = None
        async with track_stream(request, stats):
            if self._streaming:
                resp = web.StreamResponse(
                    headers={"Content-Type": EVENT_STREAM, "x-amzn-RequestId": str(uuid.uuid4())}
                )
                await resp.prepare(request)
                await self._stream(request, resp, script, fault)
            else:
                resp = await self._converse(request, script, fault)
        return resp if resp is not None else web.Response()

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, script: FakeBedrockScript, fault: str
    ) -> None:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
            return
        await resp.write(event_message("messageStart", {"p": "abcdefgh", "role": "assistant"}))
        chunks = [] if fault == "empty" else script.chunks
        midstream = fault in _MID_STREAM_FAULTS
        in_call = midstream and script.fault_in_tool_call and bool(script.tool_calls)
        sent = 0
        for text in chunks:
            if midstream and not in_call and sent >= script.fault_after_chunks:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            delta = {"contentBlockIndex": 0, "delta": {"text": text}, "p": "abcdefghijkl"}
            await resp.write(event_message("contentBlockDelta", delta))
            sent += 1
        stop_reason: str = script.stop_reason
        block = 0
        if not (midstream and not in_call) and script.tool_calls and fault != "empty":
            stop_reason = "tool_use"
            if chunks:
                await resp.write(
                    event_message("contentBlockStop", {"contentBlockIndex": 0, "p": "ab"})
                )
                block = 1
            for number, call in enumerate(script.tool_calls):
                use = {"toolUseId": call.id or f"tooluse_fake{number}", "name": call.name}
                start = {"contentBlockIndex": block, "start": {"toolUse": use}, "p": "abc"}
                await resp.write(event_message("contentBlockStart", start))
                for piece in call.fragments():
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    delta = {"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}}
                    await resp.write(event_message("contentBlockDelta", delta))
                    if in_call:
                        break
                if in_call:
                    break
                if number < len(script.tool_calls) - 1:
                    await resp.write(
                        event_message("contentBlockStop", {"contentBlockIndex": block, "p": "a"})
                    )
                    block += 1

        if fault == "stall_mid_stream":
            await stall_until_client_gone(request)
            return
        if fault == "truncated":
            stop = event_message("messageStop", {"p": "abc", "stopReason": script.stop_reason})
            cut = stop[: len(stop) // 2] if script.truncate_inside_message else b""
            await resp.write_eof(cut)
            return
        if fault == "error_event":
            await resp.write_eof(exception_message(script.exception_type, STREAM_ERROR_MESSAGE))
            return
        if fault == "malformed":
            broken = bytearray(event_message("contentBlockDelta", {"delta": {"text": "x"}}))
            broken[-1] ^= 0xFF  # the message CRC no longer matches
            await resp.write_eof(bytes(broken))
            return
        await resp.write(event_message("contentBlockStop", {"contentBlockIndex": block, "p": "ab"}))
        stop = event_message("messageStop", {"p": "abcd", "stopReason": stop_reason})
        if not script.send_metadata:
            await resp.write_eof(stop)
            return
        await resp.write(stop)
        metadata = {"metrics": {"latencyMs": 42}, "p": "abc", "usage": _usage(script, sent)}
        await resp.write_eof(event_message("metadata", metadata))

    async def _converse(
        self, request: web.Request, script: FakeBedrockScript, fault: str
    ) -> web.StreamResponse:
        if fault == "stall_before_first":
            await stall_until_client_gone(request)
        chunks = [] if fault == "empty" else script.chunks
        content: list[dict[str, Any]] = (
            [{"text": "".join(chunks)}] if chunks or fault == "empty" else []
        )
        stop_reason: str = script.stop_reason
        if script.tool_calls and fault != "empty":
            stop_reason = "tool_use"
            for number, call in enumerate(script.tool_calls):
                use = {
                    "toolUseId": call.id or f"tooluse_fake{number}",
                    "name": call.name,
                    "input": call.arguments,
                }
                content.append({"toolUse": use})
        payload = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": _usage(script, len(chunks)),
            "metrics": {"latencyMs": 42},
        }
        data = json.dumps(payload).encode()
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if fault == "malformed":
            return web.Response(
                body=data[: len(data) // 2], content_type="application/json", headers=headers
            )
        if fault in ("stall_mid_stream", "truncated"):
            stall = fault == "stall_mid_stream"
            return await half_body(request, data, stall=stall, headers=headers)
        return web.Response(body=data, content_type="application/json", headers=headers)


def make_fake_bedrock_app(script: FakeBedrockScript | None = None) -> web.Application:
    """Build the fake's aiohttp app: Converse / ConverseStream requests in, scripted
    Bedrock answers out. The script and stats live in `app[FAKE_SCRIPT]` and
    `app[FAKE_STATS]`."""
    script = script if script is not None else FakeBedrockScript()
    app = fake_app(FAKE_SCRIPT, script, FAKE_STATS, FakeBedrockStats())
    app.router.add_post("/model/{model_id}/converse", _Handler(app, streaming=False).handle)
    app.router.add_post("/model/{model_id}/converse-stream", _Handler(app, streaming=True).handle)
    return app


@dataclass(frozen=True)
class FakeBedrock(RunningStreamFake[FakeBedrockScript, FakeBedrockStats]):
    """A running fake: `url` is what `BedrockConfig.base_url` takes."""

    script_key = FAKE_SCRIPT
    stats_key = FAKE_STATS


@asynccontextmanager
async def run_fake_bedrock(
    *, host: str = "127.0.0.1", port: int = 0, script: FakeBedrockScript | None = None
) -> AsyncIterator[FakeBedrock]:
    """Serve the fake on `host:port` (0 picks a free port) for the `async with` body.

    Yields a `FakeBedrock`; on exit the listener closes and stalled responses end.
    """
    app = make_fake_bedrock_app(script)
    async with serve_app(app, host, port) as root:
        yield FakeBedrock(url=root, app=app)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: parse flags, serve until SIGINT/SIGTERM."""
    parser = cli_parser(
        "Fake AWS Bedrock runtime (Converse)", port=9500, faults=FAULTS, unit="text delta"
    )
    parser.add_argument("--secret", default=None, help="verify signatures with this secret key")
    args = parser.parse_args(argv)
    script = FakeBedrockScript(
        chunks=cli_chunks(args.chunks),
        delay=args.delay,
        fault=args.fault,
        secret_access_key=args.secret,
    )
    serve_until_signalled(
        lambda: run_fake_bedrock(host=args.host, port=args.port, script=script), "Bedrock"
    )


if __name__ == "__main__":
    main()
