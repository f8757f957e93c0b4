"""The AsyncAPI 3.0 document of Sluice's websocket endpoints (chatStream, speak, listen,
converse).

Client message payloads are `protocol.schema.ClientEnvelope` combined with the
body model each pipeline validates with (`protocol.chat.ChatRequest`,
`protocol.speak.SpeakRequestIn` / `TextRequestIn`, `protocol.listen.ListenRequestIn`);
server frames are `protocol.schema`'s frame models. Sluice is the application
described: it `receive`s client messages and `send`s frames.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from apidocs.components import component_schemas
from config.models import ServerConfig, VADConfig
from protocol.chat import ChatRequest
from protocol.converse import (
    ConverseRequestIn,
    NoBodyIn,
    PlayedIn,
    RespondIn,
    TextIn,
    ToolResultIn,
    UpdateIn,
)
from protocol.listen import ListenRequestIn
from protocol.schema import (
    SERVER_FRAMES,
    CancelMessage,
    ClientEnvelope,
    EndMessage,
    ResumeMessage,
    frame_type,
)
from protocol.speak import SpeakRequestIn, TextRequestIn

ADDRESSES = {
    "chatStream": "/v1/language/{router}/chatStream",
    "speak": "/v1/speech/{router}/speak",
    "listen": "/v1/speech/{router}/listen",
    "converse": "/v1/agent/{router}/converse",
}

CLIENT_BODIES: dict[str, tuple[tuple[str, type[BaseModel], str], ...]] = {
    "chatStream": (("chat", ChatRequest, "Glide's chat stream request (default type)."),),
    "speak": (
        ("speak", SpeakRequestIn, "Starts a request (default type)."),
        ("text", TextRequestIn, "More text for the request; input ends at `final: true`."),
    ),
    "listen": (
        ("listen", ListenRequestIn, "Starts a request (default type); audio follows."),
        ("end", EndMessage, "The request's audio is over."),
    ),
    "converse": (
        ("converse", ConverseRequestIn, "Starts a conversation (default type); audio follows."),
        ("text", TextIn, "A typed user turn (answered at once unless `respond: false`)."),
        ("played", PlayedIn, "How much reply audio the client has played (ms)."),
        ("commit", NoBodyIn, "Turn detection off: the buffered audio is one user turn."),
        ("clear", NoBodyIn, "Turn detection off: drop the buffered audio."),
        ("respond", RespondIn, "Reply now to the conversation so far."),
        ("interrupt", NoBodyIn, "Stop the running reply (the conversation goes on)."),
        (
            "update",
            UpdateIn,
            "Change instructions, voice, turn detection or tools for later turns.",
        ),
        (
            "tool_result",
            ToolResultIn,
            "The output of a tool call of the last reply; the reply follows when all have one.",
        ),
        ("end", EndMessage, "The conversation's input is over; it ends after its last reply."),
    ),
}
"""Each endpoint's client messages: (type, body model, summary)."""

BINARY_FRAME = (
    "Binary frame: byte 0 is N, the length in bytes of the UTF-8 `request_id` (1-128); "
    "bytes 1..N are the `request_id`; the rest is audio in the request's declared format."
)


def _envelope_payload(
    refs: dict[type[BaseModel], dict[str, Any]], body: type[BaseModel], msg_type: str
) -> dict[str, Any]:
    return {
        "allOf": [
            refs[ClientEnvelope],
            refs[body],
            {"type": "object", "properties": {"type": {"const": msg_type}}},
        ],
        "anyOf": [{"required": ["request_id"]}, {"required": ["id"]}],
    }


def build_asyncapi(version: str = "0.1.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict); `version` is Sluice's version."""
    bodies = [m for entries in CLIENT_BODIES.values() for _, m, _ in entries]
    frames = sorted({m for models in SERVER_FRAMES.values() for m in models}, key=str)
    refs, schemas = component_schemas(
        [ClientEnvelope, CancelMessage, ResumeMessage, VADConfig, *dict.fromkeys(bodies), *frames]
    )
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for endpoint, address in ADDRESSES.items():
        inbound: dict[str, Any] = {}
        for msg_type, body, summary in CLIENT_BODIES[endpoint]:
            key = f"{endpoint}.{msg_type}"
            messages[key] = {
                "name": msg_type,
                "title": f"{msg_type} ({endpoint})",
                "summary": summary,
                "payload": _envelope_payload(refs, body, msg_type),
            }
            inbound[msg_type] = {"$ref": f"#/components/messages/{key}"}
        inbound["cancel"] = {"$ref": "#/components/messages/cancel"}
        inbound["resume"] = {"$ref": "#/components/messages/resume"}
        outbound: dict[str, Any] = {}
        for frame in SERVER_FRAMES[endpoint]:
            name = frame_type(frame)
            key = f"{endpoint}.{name}"
            messages[key] = {
                "name": name,
                "title": f"{name} ({endpoint})",
                "summary": (frame.__doc__ or name).strip().splitlines()[0],
                "payload": refs[frame],
            }
            outbound[name] = {"$ref": f"#/components/messages/{key}"}
        if endpoint != "chatStream":
            inbound["audio"] = outbound["audio"] = {"$ref": "#/components/messages/audio"}
        channels[endpoint] = {
            "address": address,
            "title": endpoint,
            "parameters": {"router": {"description": "The router's id."}},
            "messages": {
                **{f"in.{k}": v for k, v in inbound.items()},
                **{f"out.{k}": v for k, v in outbound.items()},
            },
        }
        channel_ref = {"$ref": f"#/channels/{endpoint}"}
        operations[f"{endpoint}.receive"] = {
            "action": "receive",
            "channel": channel_ref,
            "summary": f"Client messages on {endpoint}.",
            "messages": [{"$ref": f"#/channels/{endpoint}/messages/in.{k}"} for k in inbound],
        }
        operations[f"{endpoint}.send"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": f"Server frames on {endpoint}; every request ends with one terminal "
            "frame (the first carrying a `finish_reason`).",
            "messages": [{"$ref": f"#/channels/{endpoint}/messages/out.{k}"} for k in outbound],
        }
    messages["cancel"] = {
        "name": "cancel",
        "title": "cancel",
        "summary": "Ends a request on every endpoint.",
        "payload": _envelope_payload(refs, CancelMessage, "cancel"),
    }
    messages["resume"] = {
        "name": "resume",
        "title": "resume",
        "summary": "Resumes a request after a lost socket: its frames after `after_seq`, "
        "then the live rest (any endpoint, same client key).",
        "payload": _envelope_payload(refs, ResumeMessage, "resume"),
    }
    messages["audio"] = {
        "name": "audio",
        "title": "audio (binary)",
        "summary": BINARY_FRAME,
        "contentType": "application/octet-stream",
        "payload": {"type": "string", "format": "binary", "description": BINARY_FRAME},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Sluice websocket API",
            "version": version,
            "description": "Text frames carry one JSON object each; binary frames carry "
            "audio. A listen request's `vad` overrides keys of the router's VAD settings "
            "(`VADConfig`). The HTTP endpoints are described at `/v1/openapi.json`. "
            "Clients: Python, `pip install sluice-client` (import `sluice_client`; "
            "clients/python in the Sluice repository, docs/python-client.md); "
            "JavaScript for browsers and Node, npm `sluice-client` (clients/js, "
            "docs/js-client.md).",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "sluice": {
                "host": "{host}",
                "protocol": "ws",
                "description": "A Sluice instance (use wss behind TLS).",
                "variables": {"host": {"default": f"localhost:{ServerConfig().port}"}},
                "security": [{"$ref": "#/components/securitySchemes/bearer"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`Authorization: Bearer`; browsers may "
                    "offer it as a websocket subprotocol instead).",
                }
            },
        },
    }
