"""The AWS Bedrock adapter: the Converse and ConverseStream APIs, SigV4-signed.

Flow: `ChatParams` in; a JSON body signed by botocore's `SigV4Auth` (service
"bedrock") and POSTed with the app's shared aiohttp session to
`{endpoint}{chat_endpoint}/{modelId}/converse-stream` (`chat_endpoint` is `/model`);
`ChatDelta`s out of the binary AWS event stream, decoded by botocore's
`EventStreamBuffer` as bytes arrive. Every failure leaves as a
`ProviderError`; the secret key and session token never appear in one.

    vendor:  -messageStart-delta"Hi"-delta"!"-contentBlockStop-messageStop-metadata-EOF|
    out:     --------------"Hi"-----"!"----------------------------------------final|

Tools and images: `ChatParams.tools` become `toolConfig` (`tools[].toolSpec` with
`inputSchema.json`, `toolChoice` auto / any / tool); an assistant's calls become
`toolUse` blocks and `tool` messages `toolResult` blocks in a user message; images
become `image` blocks (`format` + base64 `source.bytes`; Converse fetches no URLs).
A streamed `contentBlockStart.start.toolUse` comes out as a `ToolCallDelta` with
id and name, each `contentBlockDelta.delta.toolUse.input` as an arguments
fragment, keyed by a call index counted from 0 per answer; stopReason `tool_use`
finishes with `tool_calls`.

The stream is complete when the body ends after `messageStop` (the `metadata`
event with usage comes after it). `:message-type: exception` events raise by their
`:exception-type`: throttlingException is RATE_LIMITED, validationException
BAD_REQUEST, the server-side ones TRANSIENT.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import quote

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, ParserError
from yarl import URL

from config.models import BedrockConfig, ClientConfig
from providers.http_errors import error_from_exception, error_from_response, redact
from providers.tool_wire import (
    OPENAI_ONLY_PARAMS,
    arguments_object,
    bad_request,
    inline_image,
    tools_finish,
)
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    FinishReason,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    TokenUsage,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    classify_http_status,
)

SIGNING_SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"

STOP_REASONS: Mapping[str, FinishReason] = MappingProxyType(
    {
        "end_turn": "complete",
        "stop_sequence": "complete",
        "max_tokens": "max_tokens",
        "model_context_window_exceeded": "max_tokens",
        "guardrail_intervened": "content_filtered",
        "content_filtered": "content_filtered",
        "tool_use": "other",
    }
)

ERROR_CATEGORIES: Mapping[str, ErrorCategory] = MappingProxyType(
    {
        "throttlingexception": ErrorCategory.RATE_LIMITED,
        "servicequotaexceededexception": ErrorCategory.RATE_LIMITED,
        "validationexception": ErrorCategory.BAD_REQUEST,
        "accessdeniedexception": ErrorCategory.AUTH,
        "unrecognizedclientexception": ErrorCategory.AUTH,
        "invalidsignatureexception": ErrorCategory.AUTH,
        "expiredtokenexception": ErrorCategory.AUTH,
        "missingauthenticationtokenexception": ErrorCategory.AUTH,
        "modeltimeoutexception": ErrorCategory.TIMEOUT,
        # A model ID this account cannot reach is this model's configuration, not
        # the client's input: another model can answer, so fail over (TRANSIENT).
        "resourcenotfoundexception": ErrorCategory.TRANSIENT,
        "modelerrorexception": ErrorCategory.TRANSIENT,
        "modelstreamerrorexception": ErrorCategory.TRANSIENT,
        "internalserverexception": ErrorCategory.TRANSIENT,
        "serviceunavailableexception": ErrorCategory.TRANSIENT,
    }
)
"""Bedrock error names (HTTP `x-amzn-ErrorType` or stream `:exception-type`, any case)."""

INFERENCE_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "stop": "stopSequences",
        "stop_sequences": "stopSequences",
        "maxTokens": "maxTokens",
        "topP": "topP",
        "stopSequences": "stopSequences",
    }
)
"""Params that go into `inferenceConfig`, under Converse's names."""

TOP_LEVEL_PARAMS: frozenset[str] = frozenset(
    {
        "toolConfig",
        "guardrailConfig",
        "performanceConfig",
        "promptVariables",
        "requestMetadata",
        "additionalModelResponseFieldPaths",
    }
)
"""Converse request fields passed through as given; any other param is a model field."""

_PROTECTED = frozenset({"messages", "system", "modelId", *OPENAI_ONLY_PARAMS})

IMAGE_FORMATS: Mapping[str, str] = MappingProxyType(
    {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
)
"""The image media types Converse takes, and its `format` name for each."""


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    prompt, response = _count(raw, "inputTokens"), _count(raw, "outputTokens")
    return TokenUsage(
        prompt_tokens=prompt,
        response_tokens=response,
        total_tokens=_count(raw, "totalTokens") or prompt + response,
    )


def _stop_reason(raw: Any) -> FinishReason:
    return STOP_REASONS.get(raw, "other") if isinstance(raw, str) else "other"


def _error_name(raw: str | None) -> str:
    """`ThrottlingException:http://internal.amazon.com/...` -> `ThrottlingException`."""
    return (raw or "").split(":", 1)[0].strip()


class BedrockProvider:
    """A model on AWS Bedrock, through the model-independent Converse API.

    In: the `BedrockConfig` block (region, model ID, credentials, optional
    `base_url` for a VPC endpoint or a fake), the model's `ClientConfig` and the
    app's shared `aiohttp.ClientSession`. Out: `stream` per the
    `ChatProvider` protocol. `stream_url` is ConverseStream's URL, the model ID
    percent-encoded as one path segment.
    """

    continues = False
    tools = True  # capabilities: see providers.types.ChatProvider
    images = True
    image_urls = False  # Converse takes image bytes or S3 locations, never https URLs
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""

    def __init__(
        self,
        config: BedrockConfig,
        client: ClientConfig,
        session: aiohttp.ClientSession,
        provider_id: str = "bedrock",
    ) -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        endpoint = config.base_url or f"https://bedrock-runtime.{config.region}.amazonaws.com"
        model_path = f"{endpoint.rstrip('/')}{config.chat_endpoint}/{quote(config.model, safe='')}"
        self.stream_url = f"{model_path}/converse-stream"
        secret = config.secret_access_key.get_secret_value()
        token = config.session_token.get_secret_value() if config.session_token else None
        self._signer = SigV4Auth(
            Credentials(config.access_key_id.get_secret_value(), secret, token),
            SIGNING_SERVICE,
            config.region,
        )
        unused_key = config.api_key.get_secret_value() if config.api_key else None
        self._secrets = tuple(s for s in (secret, token, unused_key) if s)
        self._default_params = dict(config.default_params)
        self._session = session
        self._label = f"{provider_id}/{config.model}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.connect_timeout)

    # --- requests -------------------------------------------------------------------

    def request_body(self, params: ChatParams) -> dict[str, Any]:
        """The Converse JSON body for `params` (the same for both operations).

        System messages become `system` blocks; consecutive messages of one role
        are merged into one message with several text blocks, since Converse
        wants user and assistant to alternate. Default params are overridden by
        the request's; `max_tokens`, `temperature`, `top_p` and `stop` (or their
        Converse names) fill `inferenceConfig`; `toolConfig`, `guardrailConfig`
        and Converse's other request fields pass through; every other param goes
        into `additionalModelRequestFields`. `ChatParams.tools` become `toolConfig`
        (replacing a `toolConfig` param). Raises `ProviderError(BAD_REQUEST)` for a
        role other than system, user or assistant (a `tool` message must answer a
        call), an image URL or type Converse does not take, or `tool_choice: none`
        in a conversation that holds tool calls (Converse has no such mode and
        wants `toolConfig` whenever the history has tool blocks).
        """
        merged: dict[str, Any] = {**self._default_params, **params.params}
        inference: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        body: dict[str, Any] = {}
        given = merged.pop("inferenceConfig", None)
        if isinstance(given, dict):
            inference.update(given)
        given = merged.pop("additionalModelRequestFields", None)
        if isinstance(given, dict):
            extra.update(given)
        for key, value in merged.items():
            if key in _PROTECTED:
                continue
            if key in INFERENCE_PARAMS:
                inference[INFERENCE_PARAMS[key]] = value
            elif key in TOP_LEVEL_PARAMS:
                body[key] = value
            else:
                extra[key] = value
        if isinstance(inference.get("stopSequences"), str):
            inference["stopSequences"] = [inference["stopSequences"]]

        body["messages"] = self._messages(params.messages)
        if params.tools:
            tool_config = self._tool_config(params.tools, params.tool_choice, body["messages"])
            if tool_config is None:
                body.pop("toolConfig", None)
            else:
                body["toolConfig"] = tool_config
        system = [{"text": m.content} for m in params.messages if m.role == "system"]
        if system:
            body["system"] = system
        if inference:
            body["inferenceConfig"] = inference
        if extra:
            body["additionalModelRequestFields"] = extra
        return body

    def _messages(self, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for message in messages:
            if message.role == "system":
                continue
            if message.role == "tool" and message.tool_call_id is not None:
                role, blocks = "user", [self._result_block(message)]
            elif message.role in ("user", "assistant"):
                role, blocks = message.role, self._blocks(message)
            else:
                raise ProviderError(
                    ErrorCategory.BAD_REQUEST,
                    f"{self._label}: Bedrock Converse has no chat role {message.role!r}"
                    + (
                        " (a tool message needs the tool_call_id it answers)"
                        if message.role == "tool"
                        else ""
                    ),
                )
            if out and out[-1]["role"] == role:
                out[-1]["content"].extend(blocks)
            else:
                out.append({"role": role, "content": blocks})
        return out

    def _blocks(self, message: Message) -> list[dict[str, Any]]:
        """A user or assistant message's content blocks: text, images, tool calls."""
        if message.tool_calls:
            blocks: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
            for call in message.tool_calls:
                use = {
                    "toolUseId": call.id,
                    "name": call.name,
                    "input": arguments_object(call, self._label),
                }
                blocks.append({"toolUse": use})
            return blocks
        if not message.parts:
            return [{"text": message.content}]
        out: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                if part.text:
                    out.append({"text": part.text})
            else:
                out.append(self._image_block(part))
        return out

    def _image_block(self, part: ImagePart) -> dict[str, Any]:
        media_type, data = inline_image(part, self._label, "Bedrock Converse", IMAGE_FORMATS)
        return {"image": {"format": IMAGE_FORMATS[media_type], "source": {"bytes": data}}}

    @staticmethod
    def _result_block(message: Message) -> dict[str, Any]:
        # Converse refuses a blank text block; an empty result is an empty JSON object
        content: list[dict[str, Any]] = (
            [{"text": message.content}] if message.content else [{"json": {}}]
        )
        return {"toolResult": {"toolUseId": message.tool_call_id, "content": content}}

    def _tool_config(
        self,
        tools: tuple[ToolSpec, ...],
        choice: ToolChoice | None,
        messages: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """`toolConfig` for our tools and choice; None for `none` without tool history."""
        if choice is not None and choice.mode == "none":
            if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]):
                raise bad_request(
                    self._label,
                    "Bedrock Converse has no tool_choice 'none' for a conversation that "
                    "holds tool calls",
                )
            return None
        specs = []
        for tool in tools:
            schema = dict(tool.parameters) if tool.parameters else {"properties": {}}
            schema.setdefault("type", "object")
            spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": schema}}
            if tool.description:
                spec["description"] = tool.description
            specs.append({"toolSpec": spec})
        config: dict[str, Any] = {"tools": specs}
        if choice is not None and choice.mode == "required":
            config["toolChoice"] = {"any": {}}
        elif choice is not None and choice.mode == "function":
            config["toolChoice"] = {"tool": {"name": choice.name}}
        elif choice is not None:
            config["toolChoice"] = {"auto": {}}
        return config

    def signed_headers(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        """SigV4 headers for POSTing `body` to `url` (already percent-encoded).

        Out: Content-Type, Accept, Host, X-Amz-Date, X-Amz-Security-Token (with a
        session token) and `Authorization: AWS4-HMAC-SHA256 Credential=...`.
        """
        headers = {
            "Content-Type": "application/json",
            "Accept": accept,
            "Host": URL(url, encoded=True).host_port_subcomponent or "",
        }
        request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        self._signer.add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}

    async def _post(self, url: str, params: ChatParams, accept: str) -> aiohttp.ClientResponse:
        body = json.dumps(self.request_body(params), separators=(",", ":")).encode()
        return await self._session.post(
            URL(url, encoded=True),  # keep the model ID's %3A exactly as it was signed
            data=body,
            headers=self.signed_headers(url, body, accept),
            timeout=self._timeout,
            allow_redirects=False,
        )

    # --- streaming --------------------------------------------------------------------

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Stream one answer through ConverseStream.

        In: `params`. Out: a `ChatDelta` per non-empty `contentBlockDelta` text; per
        `toolUse` block one whose `tool_calls` holds the call's index, id and name,
        then one per `toolUse.input` fragment (`{}` for a call that streamed no
        input); then, once the body ended after `messageStop`, one `ChatDelta("",
        finish_reason, usage, metadata={"request_id"})`. Raises `ProviderError`:
        by `x-amzn-ErrorType` / status for an error response; by
        `:exception-type` for an exception event; PROTOCOL for a corrupt event
        stream (bad CRC, cut message, non-JSON payload) or one ending before
        `messageStop`; EMPTY_OUTPUT when a finished answer had no text (a
        filtered one excepted). Closing the generator or cancelling its consumer
        closes the HTTP response at once.
        """
        stop: str | None = None
        usage: TokenUsage | None = None
        produced = False
        done = False
        request_id = ""
        calls: dict[int, int] = {}  # contentBlockIndex -> tool call index
        argued: set[int] = set()  # tool calls whose arguments have begun
        try:
            async with await self._post(self.stream_url, params, EVENT_STREAM) as resp:
                if resp.status >= 300:
                    raise await self._http_error(resp)
                request_id = resp.headers.get("x-amzn-RequestId", "")
                buffer = EventStreamBuffer()
                fed = consumed = 0
                try:
                    async for chunk in resp.content.iter_any():
                        buffer.add_data(chunk)
                        fed += len(chunk)
                        try:
                            for message in buffer:
                                consumed += int(message.prelude.total_length)
                                event, payload = self._event(message.headers, message.payload)
                                if event == "contentBlockDelta":
                                    delta = payload.get("delta")
                                    fragment = _tool_fragment(payload, calls)
                                    if fragment is not None:
                                        if fragment.arguments:
                                            argued.add(fragment.index)
                                            yield ChatDelta("", tool_calls=(fragment,))
                                        continue
                                    text = delta.get("text") if isinstance(delta, dict) else None
                                    if isinstance(text, str) and text:
                                        produced = True
                                        yield ChatDelta(text)
                                elif event == "contentBlockStart":
                                    start = _tool_start(payload, calls)
                                    if start is not None:
                                        produced = True
                                        yield ChatDelta("", tool_calls=(start,))
                                elif event == "contentBlockStop":
                                    block = payload.get("contentBlockIndex")
                                    call = calls.get(block) if isinstance(block, int) else None
                                    if call is not None and call not in argued:
                                        argued.add(call)  # no input streamed: the input is {}
                                        yield ChatDelta(
                                            "", tool_calls=(ToolCallDelta(call, arguments="{}"),)
                                        )
                                elif event == "messageStop":
                                    raw_stop = payload.get("stopReason")
                                    stop = raw_stop if isinstance(raw_stop, str) else ""
                                elif event == "metadata":
                                    usage = _usage(payload.get("usage")) or usage
                        except ParserError as exc:
                            raise ProviderError(
                                ErrorCategory.PROTOCOL,
                                f"{self._label}: corrupt event stream ({type(exc).__name__})",
                            ) from exc
                    if fed != consumed:
                        raise ProviderError(
                            ErrorCategory.PROTOCOL,
                            f"{self._label}: event stream cut inside a message",
                        )
                    done = True
                finally:
                    if not done:
                        resp.close()  # abandoned or broken: drop the connection, never reuse it
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_from_exception(exc, self._label) from exc

        if stop is None:
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: stream ended before messageStop"
            )
        reason = tools_finish(_stop_reason(stop), stop == "tool_use", bool(calls))
        if not produced and reason != "content_filtered":
            raise ProviderError(
                ErrorCategory.EMPTY_OUTPUT, f"{self._label}: the answer has no content"
            )
        yield ChatDelta(
            "",
            finish_reason=reason,
            usage=usage,
            metadata={"request_id": request_id} if request_id else None,
        )

    def _event(self, headers: Mapping[str, Any], payload: bytes) -> tuple[str, dict[str, Any]]:
        """(event type, JSON payload) of one event message; raises for exception/error ones."""
        kind = headers.get(":message-type")
        if kind == "exception":
            name = str(headers.get(":exception-type") or "exception")
            body = self._payload(payload, name, strict=False)
            message = body.get("message") or body.get("Message") or name
            category = ERROR_CATEGORIES.get(name.lower(), ErrorCategory.TRANSIENT)
            self._raise(category, f"{message} ({name})")
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            detail = str(headers.get(":error-message") or code)
            self._raise(ErrorCategory.TRANSIENT, f"{detail} ({code})")
        name = str(headers.get(":event-type") or "")
        return name, self._payload(payload, name, strict=True)

    def _payload(self, payload: bytes, name: str, *, strict: bool) -> dict[str, Any]:
        try:
            obj = json.loads(payload) if payload else {}
        except ValueError as exc:
            if not strict:
                return {"message": payload.decode("utf-8", errors="replace")[:500]}
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: {name or 'event'} payload is not JSON"
            ) from exc
        if not isinstance(obj, dict):
            if not strict:
                return {}
            raise ProviderError(
                ErrorCategory.PROTOCOL, f"{self._label}: {name or 'event'} payload is not an object"
            )
        return obj

    def _raise(self, category: ErrorCategory, detail: str) -> NoReturn:
        raise ProviderError(category, f"{self._label}: {redact(detail, self._secrets)}")

    # --- errors -----------------------------------------------------------------------

    async def _http_error(self, resp: aiohttp.ClientResponse) -> ProviderError:
        """Classify an error response by `x-amzn-ErrorType` first, then by status."""
        error = await error_from_response(resp, self._label, secrets=self._secrets)
        name = _error_name(resp.headers.get("x-amzn-ErrorType"))
        if not name:
            return error
        category = ERROR_CATEGORIES.get(name.lower(), classify_http_status(resp.status))
        return ProviderError(
            category,
            f"{error.message} ({name})",
            status=error.status,
            retry_after=error.retry_after,
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is shared and owned by the app."""


def _tool_start(payload: Mapping[str, Any], calls: dict[int, int]) -> ToolCallDelta | None:
    """A `contentBlockStart` that opens a `toolUse` block: the call's first fragment
    (the next call index); None for other blocks."""
    start = payload.get("start")
    use = start.get("toolUse") if isinstance(start, dict) else None
    if not isinstance(use, dict):
        return None
    block = payload.get("contentBlockIndex")
    index = len(calls)
    calls[block if isinstance(block, int) else -1 - index] = index
    name = use.get("name")
    return ToolCallDelta(
        index,
        str(use.get("toolUseId") or f"tooluse_{index}"),
        name if isinstance(name, str) else "",
    )


def _tool_fragment(payload: Mapping[str, Any], calls: dict[int, int]) -> ToolCallDelta | None:
    """A `contentBlockDelta` carrying `toolUse.input` text of a known call; None for
    any other delta."""
    delta = payload.get("delta")
    use = delta.get("toolUse") if isinstance(delta, dict) else None
    if not isinstance(use, dict):
        return None
    block = payload.get("contentBlockIndex")
    index = calls.get(block) if isinstance(block, int) else None
    if index is None:
        return ToolCallDelta(-1)  # input of a call that never started: dropped
    text = use.get("input")
    return ToolCallDelta(index, arguments=text if isinstance(text, str) else "")
