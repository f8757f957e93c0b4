"""The OpenAPI 3.1 document of Sluice's HTTP endpoints.

Request bodies are the schemas of the models the handlers validate with
(`protocol.chat.ChatRequest`, `openai_api.chat_body.ChatBody`,
`openai_api.speech.SpeechBody`); JSON responses are `protocol.schema`'s models.
The transcription upload is multipart (the handler reads form fields by hand), so
its schema is written here from `openai_api.transcriptions`' own constants.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from apidocs.components import component_schemas
from apidocs.embedding import EMBEDDING_MODELS, embedding_paths
from openai_api.chat_body import ChatBody
from openai_api.speech import FORMATS, SpeechBody
from openai_api.transcriptions import RESPONSE_FORMATS
from protocol.chat import ChatRequest
from protocol.schema import (
    ChatResponse,
    GlideError,
    HealthResponse,
    OpenAIError,
    ReadyResponse,
    RouterList,
    TranscriptionResponse,
)

OPENAPI_PATH = "/v1/openapi.json"
ASYNCAPI_PATH = "/v1/asyncapi.json"

MODELS: tuple[type[BaseModel], ...] = (
    ChatRequest,
    ChatResponse,
    GlideError,
    HealthResponse,
    ReadyResponse,
    RouterList,
    ChatBody,
    SpeechBody,
    TranscriptionResponse,
    OpenAIError,
    *EMBEDDING_MODELS,
)
"""Every model the document's schemas come from."""

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(ref: dict[str, Any], *codes: str) -> dict[str, Any]:
    return {code: _json(ref, "An error (the `name` / `code` says which).") for code in codes}


def build_openapi(version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict); `version` is Sluice's version."""
    refs, schemas = component_schemas(MODELS)
    glide_error, openai_error = refs[GlideError], refs[OpenAIError]
    router_param = {
        "name": "router",
        "in": "path",
        "required": True,
        "description": "A language router's id.",
        "schema": {"type": "string"},
    }
    speech_types = sorted({content_type for _, content_type in FORMATS.values()})
    paths: dict[str, Any] = {
        "/v1/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness",
                "tags": ["operations"],
                "responses": {"200": _json(refs[HealthResponse], "The process serves HTTP.")},
            }
        },
        "/v1/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness (503 while draining)",
                "tags": ["operations"],
                "responses": {
                    "200": _json(refs[ReadyResponse], "Ready."),
                    "503": _json(refs[ReadyResponse], "Draining."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format)",
                "description": "Open unless `metrics.require_key`; absent when metrics are off.",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "The app's metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/language": {
            "get": {
                "operationId": "listLanguageRouters",
                "summary": "Language routers, their models and health",
                "tags": ["glide"],
                "security": BEARER,
                "responses": {
                    "200": _json(refs[RouterList], "The routers this key may use."),
                    **_errors(glide_error, "401", "403"),
                },
            }
        },
        "/v1/speech": {
            "get": {
                "operationId": "listSpeechRouters",
                "summary": "Speech routers with their speak / listen models",
                "tags": ["speech"],
                "security": BEARER,
                "responses": {
                    "200": _json(refs[RouterList], "The routers this key may use."),
                    **_errors(glide_error, "401", "403"),
                },
            }
        },
        "/v1/language/{router}/chat": {
            "post": {
                "operationId": "chat",
                "summary": "One chat completion with failover (Glide)",
                "description": "Glide 0.1.0's request, plus Sluice's optional `tools`, "
                "`tool_choice`, `parallel_tool_calls`, tool calls and results in the history "
                "and image parts in user messages. Tool calls come back in "
                "`model_response.message.tool_calls` with `finish_reason: other` and "
                "`finish_detail: tool_calls`.",
                "tags": ["glide"],
                "security": BEARER,
                "parameters": [router_param],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[ChatRequest]}},
                },
                "responses": {
                    "200": _json(refs[ChatResponse], "The answer."),
                    **_errors(glide_error, "400", "401", "403", "404", "413", "429", "503"),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "OpenAI-compatible chat completions",
                "description": "`model` names a language router, or `router/model-id` to pin "
                "one model. With `stream: true` the answer is server-sent events "
                "(`chat.completion.chunk` objects, then `[DONE]`). A model failing after "
                "the first chunk: with the router's `mid_stream: continue` (default) the "
                "next model goes on from the partial answer in the same stream (later "
                "chunks name it in `model`); with `restart`, or when no remaining model "
                "can continue, the stream ends with an `error` event. A request ends "
                "within the router's `deadline` (or `deadline_ms`, if shorter). Tools and "
                "images in OpenAI's shapes: `tools`, `tool_choice`, `parallel_tool_calls`, "
                "assistant `tool_calls`, `tool` messages, `image_url` parts (`data:` or "
                "https URLs). Tool calls come whole, one delta each (`index`, `id`, `type`, "
                "`function`), or `message.tool_calls`; the turn ends with `finish_reason: "
                "tool_calls` and `content: null` when there is no text. A request no model "
                "of the router can serve (tools, images, https image URLs) is a 400 "
                "`unsupported_capability`; a bad image a 400 `invalid_image`.",
                "tags": ["openai"],
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[ChatBody]}},
                },
                "responses": {
                    "200": {
                        "description": "A `chat.completion` object, or an SSE stream of chunks.",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(openai_error, "400", "401", "403", "404", "429", "503"),
                },
            }
        },
        "/v1/audio/speech": {
            "post": {
                "operationId": "createSpeech",
                "summary": "OpenAI-compatible text to speech (a speech router's speak pipeline)",
                "tags": ["openai"],
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[SpeechBody]}},
                },
                "responses": {
                    "200": {
                        "description": "The audio, streamed sentence by sentence (24 kHz).",
                        "content": {
                            t: {"schema": {"type": "string", "contentMediaType": t}}
                            for t in speech_types
                        },
                    },
                    **_errors(openai_error, "400", "401", "403", "404", "429", "503"),
                },
            }
        },
        "/v1/audio/transcriptions": {
            "post": {
                "operationId": "createTranscription",
                "summary": "OpenAI-compatible speech to text (a speech router's listen pipeline)",
                "tags": ["openai"],
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _transcription_form()}},
                },
                "responses": {
                    "200": {
                        "description": "The final transcripts joined in segment order.",
                        "content": {
                            "application/json": {"schema": refs[TranscriptionResponse]},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(openai_error, "400", "401", "403", "404", "429", "503"),
                },
            }
        },
        **embedding_paths(refs, glide_error, openai_error, BEARER),
        OPENAPI_PATH: _document_path("getOpenApi", "This OpenAPI 3.1 document."),
        ASYNCAPI_PATH: _document_path(
            "getAsyncApi", "The AsyncAPI 3.0 document of the websocket endpoints."
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice HTTP API",
            "version": version,
            "description": "Sluice's HTTP endpoints: Glide's chat and router listings, "
            "operations, embeddings, and the OpenAI-compatible endpoints. The websocket endpoints "
            f"(chatStream, speak, listen) are described by the AsyncAPI document at "
            f"`{ASYNCAPI_PATH}`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "glide", "description": "Glide 0.1.0 compatible"},
            {"name": "openai", "description": "OpenAI compatible"},
            {"name": "speech", "description": "Speech routers"},
            {"name": "embedding", "description": "Embedding routers"},
            {"name": "operations", "description": "Health, readiness, metrics, documents"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `auth.keys` (when keys are configured).",
                }
            },
        },
    }


def _document_path(operation_id: str, description: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": description,
            "tags": ["operations"],
            "responses": {
                "200": {
                    "description": description,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }


def _transcription_form() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The audio: WAV, FLAC, Ogg or MP3 (told apart by its first bytes).",
            },
            "model": {"type": "string", "description": "A speech router's id."},
            "response_format": {"enum": list(RESPONSE_FORMATS), "default": RESPONSE_FORMATS[0]},
            "language": {"type": "string"},
            "prompt": {"type": "string", "description": "Accepted and ignored."},
            "temperature": {"type": "number", "description": "Accepted and ignored."},
        },
    }
