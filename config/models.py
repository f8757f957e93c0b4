"""Pydantic models of Sluice's configuration (Glide 0.1.0 grammar plus speech).

A YAML document flows in (after `${env:...}`/`${file:...}` substitution), a frozen
`SluiceConfig` flows out. Durations accept Go-style strings ("500ms", "2s", "1m",
"1h", "1m30s") or plain numbers of seconds; they are stored as float seconds.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Turn "2s", "500ms", "1m30s" or a number of seconds into float seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '2s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or a string like '2s'")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. '500ms', '2s', '1m', '1h')")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


_Identified = TypeVar("_Identified", bound="HasId")


class HasId(Protocol):
    """A config entry named by `id`."""

    @property
    def id(self) -> str: ...


def unique_ids(items: list[_Identified], what: str) -> list[_Identified]:
    """`items` unchanged when their ids are distinct; else ValueError naming `what`
    ("model id", "router id", ...) and the repeated id."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"duplicate {what} {item.id!r}")
        seen.add(item.id)
    return items


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBudget(Strict):
    """`"N/unit"`: a token bucket of N errors refilled over one unit (ms, s, m, h)."""

    budget: int
    unit_seconds: float

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept the "N/unit" string form used in YAML."""
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|h)\s*", value)
            if not m:
                raise ValueError(f"{value!r} is not an error budget (use 'N/unit', e.g. '10/m')")
            count = int(m.group(2)) if m.group(2) else 1
            if int(m.group(1)) <= 0 or count <= 0:
                raise ValueError("an error budget must be positive")
            return {"budget": int(m.group(1)), "unit_seconds": count * _UNIT_SECONDS[m.group(3)]}
        return value


ErrorBudgetField = Annotated[ErrorBudget, BeforeValidator(ErrorBudget.parse)]


class LatencyConfig(Strict):
    """Moving-average settings for the least_latency strategy."""

    decay: float = Field(default=0.06, gt=0, le=1)
    warmup_samples: int = Field(default=3, ge=0)
    update_interval: Duration = 30.0


class RetryConfig(Strict):
    """Exponential backoff between whole passes over a router's models (Glide's)."""

    max_retries: int = Field(default=3, ge=0)
    base_multiplier: float = Field(default=2.0, ge=1)
    min_delay: Duration = 2.0
    max_delay: Duration = 5.0
    jitter: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_delay < self.min_delay:
            raise ValueError("retry.max_delay must not be below retry.min_delay")
        return self


class ClientConfig(Strict):
    """Per-attempt deadlines for one model (all in seconds)."""

    timeout: Duration = 120.0
    connect_timeout: Duration = 5.0
    first_chunk_timeout: Duration = 30.0
    idle_timeout: Duration = 30.0
    # Glide's pool settings: accepted so Glide configs load; Sluice's pool is the
    # app's one shared HTTP session, so neither limits it.
    max_idle_connections: int = Field(default=100, ge=1)
    max_idle_connections_per_host: int = Field(default=2, ge=1)


class HealthConfig(Strict):
    """Cooldowns for unhealthy models."""

    cooldown: Duration = 10.0
    rate_limit_cooldown: Duration = 30.0


JSONDict = dict[str, Any]


def _url_path_ends_with_version(base_url: Any) -> str | None:
    """The trailing `/v1`-style segment of a base URL's path ("v1"), or None."""
    if not isinstance(base_url, str):
        return None
    match = re.search(r"/(v\d+)/*$", base_url)
    return match.group(1) if match else None


class OpenAIConfig(Strict):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, Groq, ...): POST
    `{base_url}{chat_endpoint}`. Fields and defaults are Glide 0.1.0's `openai` block.
    """

    base_url: str = "https://api.openai.com/v1"
    chat_endpoint: str = "/chat/completions"
    model: str = "gpt-4o"
    api_key: SecretStr | None = None
    default_params: JSONDict = Field(default_factory=dict)


class AzureOpenAIConfig(Strict):
    """An Azure OpenAI deployment (`{base_url}/openai/deployments/{model}{chat_endpoint}`).

    Glide 0.1.0's `azureopenai` block; `api_version` defaults to 2024-06-01 rather
    than Glide's 2023-05-15 (a Glide config that names its version keeps it).
    """

    base_url: str
    chat_endpoint: str = "/chat/completions"
    model: str
    api_version: str = "2024-06-01"
    api_key: SecretStr
    default_params: JSONDict = Field(default_factory=dict)


class LocalLLMConfig(Strict):
    """The embedded llama.cpp engine; `model_path` defaults to SmolLM2-135M."""

    model_path: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    n_ctx: int = Field(default=2048, ge=128)
    n_threads: int = Field(default=1, ge=1)
    default_params: JSONDict = Field(
        default_factory=lambda: {"max_tokens": 128, "temperature": 0.7, "repeat_penalty": 1.3}
    )


class AnthropicConfig(Strict):
    """Anthropic Messages API: POST `{base_url}{chat_endpoint}`.

    Glide 0.1.0's `anthropic` block: `base_url` defaults to
    `https://api.anthropic.com/v1` and `chat_endpoint` to `/messages`. Without a
    `chat_endpoint`, a `base_url` that does not end in a version segment (the bare
    origin, as earlier Sluice configs write it) gets `/v1/messages`. Glide's
    `default_params` names (`system`, `temperature`, `top_p`, `top_k`,
    `max_tokens`, `stop`) are understood (`stop` is sent as `stop_sequences`).
    """

    base_url: str = "https://api.anthropic.com/v1"
    chat_endpoint: str = "/messages"
    model: str = "claude-3-5-haiku-latest"
    api_key: SecretStr
    api_version: str = "2023-06-01"
    default_params: JSONDict = Field(default_factory=lambda: {"max_tokens": 1024})

    @model_validator(mode="before")
    @classmethod
    def _endpoint_for_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("chat_endpoint") is None and "base_url" in data:
            versioned = _url_path_ends_with_version(data["base_url"])
            return {**data, "chat_endpoint": "/messages" if versioned else "/v1/messages"}
        return data


COHERE_V1_PARAMS: frozenset[str] = frozenset(
    {"preamble", "connectors", "search_queries_only", "prompt_truncation"}
)
"""Params only Cohere's v1 chat API has (Glide 0.1.0 spoke v1)."""


class CohereConfig(Strict):
    """Cohere chat: `api: v2` (SSE) or `api: v1` (JSON lines), POST `{base_url}{chat_endpoint}`.

    Glide 0.1.0's `cohere` block (`base_url: https://api.cohere.ai/v1`,
    `chat_endpoint: /chat`) loads as is. Without `api`, it is v1 when the URL
    names `/v1` or `default_params` uses a v1-only param (`preamble`,
    `connectors`, `search_queries_only`, `prompt_truncation`), otherwise v2.
    Without `base_url`, it is `https://api.cohere.com/{api}`; without
    `chat_endpoint`, `/chat`, or `/{api}/chat` when `base_url` does not end in a
    version (the bare origin, as earlier Sluice configs write it).
    """

    base_url: str = "https://api.cohere.com/v2"
    chat_endpoint: str = "/chat"
    api: Literal["v1", "v2"] = "v2"
    model: str = "command-r-plus"
    api_key: SecretStr
    default_params: JSONDict = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _api_and_endpoint(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        base_url, endpoint = data.get("base_url"), data.get("chat_endpoint")
        if data.get("api") is None:
            url = f"{base_url or ''}{endpoint or ''}".split("://", 1)[-1]
            params = data.get("default_params")
            v1_params = isinstance(params, dict) and bool(COHERE_V1_PARAMS & params.keys())
            data["api"] = "v1" if v1_params or re.search(r"/v1(/|$)", url) else "v2"
        if base_url is None:
            base_url = data["base_url"] = f"https://api.cohere.com/{data['api']}"
        if endpoint is None:
            versioned = _url_path_ends_with_version(base_url)
            data["chat_endpoint"] = "/chat" if versioned else f"/{data['api']}/chat"
        return data

    @model_validator(mode="after")
    def _v1_params_need_v1(self) -> Self:
        given = sorted(COHERE_V1_PARAMS & self.default_params.keys())
        if self.api == "v2" and given:
            raise ValueError(
                f"only Cohere's v1 chat API takes default_params {', '.join(given)}; "
                "set api: v1 (or give a system message instead of a preamble)"
            )
        return self


class GeminiConfig(Strict):
    """Google Gemini `generateContent` / `streamGenerateContent?alt=sse`."""

    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    model: str = "gemini-1.5-flash"
    api_key: SecretStr
    default_params: JSONDict = Field(default_factory=dict)


class OllamaConfig(Strict):
    """Ollama's native chat API, POST `{base_url}{chat_endpoint}` (NDJSON stream).

    Glide 0.1.0's `ollama` block; its `default_params` (`num_ctx`, `top_k`, `stop`,
    `num_predict`, ... and Glide's spelling `microstat*` for `mirostat*`) become
    Ollama `options`.
    """

    base_url: str = "http://127.0.0.1:11434"
    chat_endpoint: str = "/api/chat"
    model: str = "llama3.2"
    default_params: JSONDict = Field(default_factory=dict)


class BedrockConfig(Strict):
    """AWS Bedrock Converse / ConverseStream, SigV4-signed:
    POST `{base_url}{chat_endpoint}/{model}/converse-stream` (or `/converse`).

    Glide 0.1.0's `bedrock` block loads as is: its `aws_region`, `access_key` and
    `secret_key` are other names for `region`, `access_key_id` and
    `secret_access_key`; its `chat_endpoint` (`/model`) is the path prefix; its
    `api_key`, which Glide requires but never sends, is accepted and unused
    (requests are signed with the access keys). Glide's `default_params`
    (`temperature`, `top_p`, `max_tokens`, `stop_sequences`) fill `inferenceConfig`.
    """

    base_url: str | None = None
    chat_endpoint: str = "/model"
    region: str = Field(default="us-east-1", validation_alias=AliasChoices("region", "aws_region"))
    model: str = "anthropic.claude-3-haiku-20240307-v1:0"
    access_key_id: SecretStr = Field(validation_alias=AliasChoices("access_key_id", "access_key"))
    secret_access_key: SecretStr = Field(
        validation_alias=AliasChoices("secret_access_key", "secret_key")
    )
    session_token: SecretStr | None = None
    api_key: SecretStr | None = None
    default_params: JSONDict = Field(default_factory=dict)


class OpenAIPresetConfig(Strict):
    """An OpenAI-compatible vendor by name (mistral, groq, ...): its base URL is known.

    `base_url` overrides the preset's (e.g. a self-hosted vLLM); everything else
    is the OpenAI-compatible adapter's.
    """

    base_url: str | None = None
    chat_endpoint: str = "/chat/completions"
    model: str
    api_key: SecretStr | None = None
    default_params: JSONDict = Field(default_factory=dict)


class OctoMLConfig(OpenAIPresetConfig):
    """Glide 0.1.0's `octoml` block: OctoAI's OpenAI-compatible API, Glide's defaults.

    OctoAI's hosted service has closed; `base_url` can point the block at any
    OpenAI-compatible server.
    """

    model: str = "mistral-7b-instruct-fp16"


OPENAI_PRESET_KEYS: tuple[str, ...] = (
    "octoml",
    "mistral",
    "groq",
    "together",
    "fireworks",
    "deepseek",
    "openrouter",
    "vllm",
)

PROVIDER_KEYS: tuple[str, ...] = (
    "openai",
    "azureopenai",
    "local",
    "anthropic",
    "cohere",
    "gemini",
    "ollama",
    "bedrock",
    *OPENAI_PRESET_KEYS,
)


class ModelBase(Strict):
    """What every routed model has, whatever it does: identity, weight, health, deadlines.

    Subclasses add their provider blocks (exactly one per model) in `PROVIDERS`.
    """

    PROVIDERS: ClassVar[tuple[str, ...]] = ()

    id: str = Field(min_length=1)
    enabled: bool = True
    weight: float = Field(default=1.0, gt=0)
    error_budget: ErrorBudgetField = Field(
        default_factory=lambda: ErrorBudget(budget=10, unit_seconds=60.0)
    )
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_provider_block(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: ({} if k in cls.PROVIDERS and v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_provider(self) -> Self:
        given = [key for key in self.PROVIDERS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"model {self.id!r} needs exactly one provider block "
                f"(one of {', '.join(self.PROVIDERS)}); found {given or 'none'}"
            )
        return self

    @property
    def provider_key(self) -> str:
        """The name of this model's provider block, e.g. "openai"."""
        return next(key for key in self.PROVIDERS if getattr(self, key) is not None)

    @property
    def provider_config(self) -> BaseModel:
        """The provider block itself."""
        block: BaseModel = getattr(self, self.provider_key)
        return block


class ModelCapabilities(Strict):
    """Per-model overrides of what its adapter declares it can do.

    `continuation`: whether the model is asked to continue a partial answer after
    another model broke mid-stream (`mid_stream: continue`). None (the default)
    keeps the adapter's own declaration; false makes that hop restart instead
    (`model_unavailable`, then the whole answer); true cannot teach an adapter
    that has no way to continue (Cohere, Gemini, Ollama, Bedrock, the local
    engine): it is logged and ignored there.
    """

    continuation: bool | None = None
    # tools / images / image_urls: None keeps the adapter's declaration; false
    # keeps requests that need it away from this model (a model behind an
    # OpenAI-compatible server that has no tool calling or vision); true cannot
    # teach an adapter that does not translate it (logged and ignored).
    tools: bool | None = None
    images: bool | None = None
    image_urls: bool | None = None


class LanguageModelConfig(ModelBase):
    """One model of a language router: shared settings plus exactly one provider block."""

    PROVIDERS: ClassVar[tuple[str, ...]] = PROVIDER_KEYS

    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)

    openai: OpenAIConfig | None = None
    azureopenai: AzureOpenAIConfig | None = None
    local: LocalLLMConfig | None = None
    anthropic: AnthropicConfig | None = None
    cohere: CohereConfig | None = None
    gemini: GeminiConfig | None = None
    ollama: OllamaConfig | None = None
    bedrock: BedrockConfig | None = None
    octoml: OctoMLConfig | None = None
    mistral: OpenAIPresetConfig | None = None
    groq: OpenAIPresetConfig | None = None
    together: OpenAIPresetConfig | None = None
    fireworks: OpenAIPresetConfig | None = None
    deepseek: OpenAIPresetConfig | None = None
    openrouter: OpenAIPresetConfig | None = None
    vllm: OpenAIPresetConfig | None = None


Strategy = Literal["priority", "round_robin", "weighted_round_robin", "least_latency"]

MidStream = Literal["continue", "restart"]
ToolCallStreaming = Literal["whole", "fragments"]

DEFAULT_CONTINUATION_INSTRUCTION = (
    "Your previous reply was cut off. Continue it from exactly where it stops, "
    "without repeating any of it."
)
"""Added after the request's own system prompt when a model continues a partial answer."""


class LanguageRouterConfig(Strict):
    """A language router: a routing strategy over models, retried as whole passes."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    enabled: bool = True
    strategy: Strategy = "priority"
    retry: RetryConfig = Field(default_factory=RetryConfig)
    # What a model failing after chunks were sent means for the client: `continue`
    # (the next model goes on from the partial answer, one seamless answer) or
    # `restart` (Glide's semantics: `model_unavailable`, then the answer restarts).
    mid_stream: MidStream = "continue"
    # How streamed tool calls reach the client: `whole` (each call held until its
    # arguments are complete and parse, then sent at once: a failover inside a
    # call stays invisible) or `fragments` (as they arrive; a failure inside a
    # call restarts the answer, or ends an OpenAI stream with an error event).
    tool_call_streaming: ToolCallStreaming = "whole"
    # The budget of one request across all its attempts and retry passes; a request
    # may ask for less (`deadline_ms`), never for more.
    deadline: Duration = Field(default=60.0, gt=0)
    # Added after the request's own system prompt (never replacing it) when a model
    # is asked to continue a partial answer; "" adds nothing.
    continuation_instruction: str = DEFAULT_CONTINUATION_INSTRUCTION
    models: list[LanguageModelConfig] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, models: list[LanguageModelConfig]) -> list[LanguageModelConfig]:
        return unique_ids(models, "model id")

    @property
    def enabled_models(self) -> list[LanguageModelConfig]:
        """Models with `enabled: true`, in config order."""
        return [m for m in self.models if m.enabled]


# ---- speech: speak (text to speech) and listen (speech to text) ----------------

AudioEncoding = Literal["pcm_s16le", "wav", "flac", "ogg_opus", "mp3"]


class AudioFormat(Strict):
    """An audio format on the wire: encoding, sample rate, channels."""

    encoding: AudioEncoding = "pcm_s16le"
    sample_rate: int = Field(default=24000, ge=8000, le=48000)
    channels: int = Field(default=1, ge=1, le=2)


class EspeakConfig(Strict):
    """The embedded espeak-ng engine (`espeakng-loader` wheel)."""

    voice: str = "en-us"
    rate_wpm: int = Field(default=175, ge=80, le=450)


class OpenAISpeechConfig(Strict):
    """OpenAI `/v1/audio/speech` (streamed PCM at 24 kHz)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    api_key: SecretStr | None = None
    default_params: JSONDict = Field(default_factory=dict)


class ElevenLabsConfig(Strict):
    """ElevenLabs streaming TTS (multi-context websocket or HTTP stream)."""

    base_url: str = "https://api.elevenlabs.io"
    ws_url: str = "wss://api.elevenlabs.io"
    transport: Literal["websocket", "http"] = "websocket"
    model: str = "eleven_flash_v2_5"
    voice_id: str
    api_key: SecretStr
    default_params: JSONDict = Field(default_factory=dict)


SPEAK_PROVIDER_KEYS: tuple[str, ...] = ("local", "openai", "elevenlabs")


class SpeakModelConfig(ModelBase):
    """One text-to-speech model: shared settings plus exactly one provider block."""

    PROVIDERS: ClassVar[tuple[str, ...]] = SPEAK_PROVIDER_KEYS

    local: EspeakConfig | None = None
    openai: OpenAISpeechConfig | None = None
    elevenlabs: ElevenLabsConfig | None = None


class PocketsphinxConfig(Strict):
    """The embedded pocketsphinx engine (en-US model shipped in its wheel)."""

    language: str = "en-US"
    workers: int = Field(default=1, ge=1, le=8)
    lm_path: str | None = None
    dict_path: str | None = None
    # with `interim_results`, the segment so far is decoded again after every this
    # much new audio (when a worker is free) and sent as an interim transcript
    interim_interval: Duration = Field(default=1.0, ge=0.2, le=10.0)


class OpenAITranscriptionConfig(Strict):
    """OpenAI `/v1/audio/transcriptions` (WAV in multipart, optional SSE deltas)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini-transcribe"
    api_key: SecretStr | None = None
    default_params: JSONDict = Field(default_factory=dict)


class DeepgramConfig(Strict):
    """Deepgram's streaming websocket (`/v1/listen`)."""

    ws_url: str = "wss://api.deepgram.com"
    model: str = "nova-3"
    api_key: SecretStr
    default_params: JSONDict = Field(default_factory=dict)


LISTEN_PROVIDER_KEYS: tuple[str, ...] = ("local", "openai", "deepgram")


class ListenModelConfig(ModelBase):
    """One speech-to-text model: shared settings plus exactly one provider block."""

    PROVIDERS: ClassVar[tuple[str, ...]] = LISTEN_PROVIDER_KEYS

    local: PocketsphinxConfig | None = None
    openai: OpenAITranscriptionConfig | None = None
    deepgram: DeepgramConfig | None = None


class VADConfig(Strict):
    """webrtcvad segmentation; timing counts audio samples, not wall-clock time."""

    mode: int = Field(default=2, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 20
    hangover: Duration = 0.3
    preroll: Duration = 0.3
    min_speech: Duration = 0.1
    max_segment: Duration = 15.0


class SpeakSection(Strict):
    """`speak:` of a speech router: models, default voice and output format."""

    strategy: Strategy = "priority"
    models: list[SpeakModelConfig] = Field(min_length=1)
    voice: str | None = None
    format: AudioFormat = Field(default_factory=AudioFormat)
    max_text_chars: int = Field(default=20_000, ge=1)


class ListenSection(Strict):
    """`listen:` of a speech router: models and VAD settings."""

    strategy: Strategy = "priority"
    models: list[ListenModelConfig] = Field(min_length=1)
    vad: VADConfig = Field(default_factory=VADConfig)
    max_audio_seconds: Duration = 3600.0


class SpeechRouterConfig(Strict):
    """A speech router: served at /v1/speech/{id}/speak and /v1/speech/{id}/listen."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    enabled: bool = True
    retry: RetryConfig = Field(default_factory=RetryConfig)
    speak: SpeakSection | None = None
    listen: ListenSection | None = None

    @model_validator(mode="after")
    def _has_an_endpoint(self) -> SpeechRouterConfig:
        if self.speak is None and self.listen is None:
            raise ValueError(f"speech router {self.id!r} needs a speak or a listen section")
        return self


# ---- embedding: text in, vectors out -------------------------------------------


class EmbedOpenAIConfig(Strict):
    """An OpenAI-compatible embeddings endpoint: POST `{base_url}{embed_endpoint}`.

    `batch_size`: inputs per vendor call (OpenAI takes up to 2048).
    """

    base_url: str = "https://api.openai.com/v1"
    embed_endpoint: str = "/embeddings"
    model: str = "text-embedding-3-small"
    api_key: SecretStr | None = None
    batch_size: int = Field(default=2048, ge=1)


class EmbedAzureConfig(Strict):
    """An Azure OpenAI embeddings deployment:
    POST `{base_url}/openai/deployments/{model}/embeddings?api-version=...`."""

    base_url: str
    model: str
    api_version: str = "2024-06-01"
    api_key: SecretStr
    batch_size: int = Field(default=2048, ge=1)


class EmbedCohereConfig(Strict):
    """Cohere's v2 embed API: POST `{base_url}/v2/embed` (96 texts per call)."""

    base_url: str = "https://api.cohere.com"
    model: str = "embed-english-v3.0"
    api_key: SecretStr
    input_type: str = "search_document"
    batch_size: int = Field(default=96, ge=1, le=96)


class EmbedGeminiConfig(Strict):
    """Gemini `models/{model}:embedContent` / `:batchEmbedContents` (100 per call)."""

    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    model: str = "gemini-embedding-001"
    api_key: SecretStr
    batch_size: int = Field(default=100, ge=1, le=100)


class EmbedOllamaConfig(Strict):
    """Ollama's `POST {base_url}/api/embed`."""

    base_url: str = "http://127.0.0.1:11434"
    model: str = "nomic-embed-text"
    batch_size: int = Field(default=256, ge=1)


class EmbedBedrockConfig(Strict):
    """AWS Bedrock InvokeModel, SigV4-signed: POST `{base_url}/model/{model}/invoke`.

    Titan text embeddings (`amazon.titan-embed-*`, one text per call) or Cohere
    embed (`cohere.embed-*`, 96 texts per call); the body follows the model family.
    """

    base_url: str | None = None
    region: str = Field(default="us-east-1", validation_alias=AliasChoices("region", "aws_region"))
    model: str = "amazon.titan-embed-text-v2:0"
    access_key_id: SecretStr = Field(validation_alias=AliasChoices("access_key_id", "access_key"))
    secret_access_key: SecretStr = Field(
        validation_alias=AliasChoices("secret_access_key", "secret_key")
    )
    session_token: SecretStr | None = None
    input_type: str = "search_document"
    batch_size: int | None = Field(default=None, ge=1)


class EmbedLocalConfig(Strict):
    """The embedded engine: llama.cpp's embedding mode (mean pooling) on a GGUF
    model, SmolLM2-135M from the `local` extra by default (576 dimensions)."""

    model_path: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    n_ctx: int = Field(default=512, ge=64)
    n_threads: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)


EMBED_PROVIDER_KEYS: tuple[str, ...] = (
    "openai",
    "azureopenai",
    "cohere",
    "gemini",
    "ollama",
    "bedrock",
    "local",
)


class EmbedCapabilities(Strict):
    """Per-model overrides of what its embedding adapter declares.

    `dimensions`: whether the model may be asked for shorter vectors (a request's
    `dimensions`). None keeps the adapter's declaration; false skips the model for
    such requests (e.g. OpenAI's text-embedding-ada-002, which refuses the field);
    true cannot teach an adapter whose vendor has no such field (logged, ignored).
    """

    dimensions: bool | None = None


class EmbeddingModelConfig(ModelBase):
    """One model of an embedding router: shared settings plus exactly one provider block.

    `dimensions`: the length of the vectors this model returns; sent to vendors
    that can shorten their vectors, and checked on every answer (a vector of
    another length fails the attempt). `space`: the name of the vector space
    the model's vectors live in (default: its provider block's `model`); two
    models are interchangeable for failover when space and dimensions match.
    `max_parallel`: vendor calls one request may have in flight when its input
    is split into batches.
    """

    PROVIDERS: ClassVar[tuple[str, ...]] = EMBED_PROVIDER_KEYS

    dimensions: int | None = Field(default=None, ge=1)
    space: str | None = Field(default=None, min_length=1)
    max_parallel: int = Field(default=4, ge=1)
    capabilities: EmbedCapabilities = Field(default_factory=EmbedCapabilities)

    openai: EmbedOpenAIConfig | None = None
    azureopenai: EmbedAzureConfig | None = None
    cohere: EmbedCohereConfig | None = None
    gemini: EmbedGeminiConfig | None = None
    ollama: EmbedOllamaConfig | None = None
    bedrock: EmbedBedrockConfig | None = None
    local: EmbedLocalConfig | None = None

    @property
    def vector_space(self) -> str:
        """The configured `space`, or the provider block's `model`."""
        if self.space is not None:
            return self.space
        return str(getattr(self.provider_config, "model", self.provider_key))


class EmbeddingRouterConfig(Strict):
    """An embedding router: served at /v1/embedding/{id}/embed and /v1/embeddings.

    Failover only makes sense between models whose vectors can be compared:
    unless `interchangeable: true`, every enabled model must have the same
    `space` and `dimensions`. `max_inputs` / `max_input_chars` bound one request.
    """

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    enabled: bool = True
    strategy: Strategy = "priority"
    retry: RetryConfig = Field(default_factory=RetryConfig)
    deadline: Duration = Field(default=60.0, gt=0)
    interchangeable: bool = False
    max_inputs: int = Field(default=2048, ge=1)
    max_input_chars: int = Field(default=100_000, ge=1)
    models: list[EmbeddingModelConfig] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, models: list[EmbeddingModelConfig]) -> list[EmbeddingModelConfig]:
        return unique_ids(models, "model id")

    @model_validator(mode="after")
    def _one_vector_space(self) -> Self:
        if self.interchangeable:
            return self
        models = self.enabled_models
        spaces = sorted({m.vector_space for m in models})
        if len(spaces) > 1:
            raise ValueError(
                f"embedding router {self.id!r} mixes models of different vector spaces "
                f"({', '.join(spaces)}); their vectors cannot be compared, so failover "
                "between them would corrupt an index. Give models that do produce the same "
                "vectors the same `space`, or set `interchangeable: true` on the router"
            )
        dims = {m.dimensions for m in models}
        if len(dims) > 1:
            shown = ", ".join(f"{m.id}: {m.dimensions or 'vendor default'}" for m in models)
            raise ValueError(
                f"embedding router {self.id!r} mixes vector dimensions ({shown}); give every "
                "model the same `dimensions`, or set `interchangeable: true` on the router"
            )
        return self

    @property
    def enabled_models(self) -> list[EmbeddingModelConfig]:
        """Models with `enabled: true`, in config order."""
        return [m for m in self.models if m.enabled]


class TurnConfig(Strict):
    """`turn:` of an agent router: how a conversation takes turns and what it remembers.

    `max_history_messages`: user and assistant messages kept per conversation (the
    oldest drop first; the instructions are always sent). `turn_detection`: the
    VAD's end of speech ends the user's turn and the reply starts by itself (a
    conversation may turn it off and commit turns by hand). `interim_results`:
    interim transcripts of the user's speech are sent. `language`: the listen
    language hint (None: each model's own).
    """

    max_history_messages: int = Field(default=20, ge=0, le=1000)
    turn_detection: bool = True
    interim_results: bool = True
    language: str | None = None


class AgentRouterConfig(Strict):
    """An agent router: served at /v1/agent/{id}/converse (listen, chat, speak in a row).

    `listen` and `speak` name speech routers (with a listen / speak section), `chat`
    a language router; each stage keeps that router's models, failover and deadlines.
    `instructions` is the system prompt (a conversation may send its own), `voice`
    the reply voice (else the speak router's).
    """

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    enabled: bool = True
    listen: str = Field(min_length=1)
    chat: str = Field(min_length=1)
    speak: str = Field(min_length=1)
    instructions: str | None = None
    voice: str | None = None
    turn: TurnConfig = Field(default_factory=TurnConfig)


class RoutersConfig(Strict):
    """`routers:` — language (chat), speech (speak / listen), embedding and agent routers."""

    language: list[LanguageRouterConfig] = Field(default_factory=list)
    speech: list[SpeechRouterConfig] = Field(default_factory=list)
    embedding: list[EmbeddingRouterConfig] = Field(default_factory=list)
    agent: list[AgentRouterConfig] = Field(default_factory=list)

    @field_validator("embedding")
    @classmethod
    def _unique_embedding_ids(
        cls, routers: list[EmbeddingRouterConfig]
    ) -> list[EmbeddingRouterConfig]:
        return unique_ids(routers, "embedding router id")

    @model_validator(mode="after")
    def _agents_name_routers(self) -> RoutersConfig:
        language = {r.id for r in self.language}
        listen = {r.id for r in self.speech if r.listen is not None}
        speak = {r.id for r in self.speech if r.speak is not None}
        seen: set[str] = set()
        for index, agent in enumerate(self.agent):
            where = f"routers.agent[{index}] ({agent.id!r})"
            if agent.id in seen:
                raise ValueError(f"duplicate agent router id {agent.id!r}")
            seen.add(agent.id)
            if agent.chat not in language:
                raise ValueError(f"{where}: chat names no language router {agent.chat!r}")
            if agent.listen not in listen:
                raise ValueError(
                    f"{where}: listen names no speech router with a listen section {agent.listen!r}"
                )
            if agent.speak not in speak:
                raise ValueError(
                    f"{where}: speak names no speech router with a speak section {agent.speak!r}"
                )
        return self

    @field_validator("language")
    @classmethod
    def _unique_router_ids(cls, routers: list[LanguageRouterConfig]) -> list[LanguageRouterConfig]:
        return unique_ids(routers, "router id")

    @field_validator("speech")
    @classmethod
    def _unique_speech_ids(cls, routers: list[SpeechRouterConfig]) -> list[SpeechRouterConfig]:
        return unique_ids(routers, "speech router id")


class RateLimit(Strict):
    """A request rate as a token bucket: `requests` per `per_seconds`, bursts up to `requests`.

    YAML takes the `"N/unit"` form (`"60/m"`, `"10/s"`, `"1000/h"`, `"5/10s"`) or
    `{requests: N, per: 1m}`.
    """

    requests: int = Field(ge=1)
    per_seconds: float = Field(gt=0)

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Accept `"N/unit"` and `{requests, per}` as well as the stored field names."""
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|h)\s*", value)
            if not m:
                raise ValueError(f"{value!r} is not a rate (use 'N/unit', e.g. '60/m')")
            count = int(m.group(2)) if m.group(2) else 1
            if int(m.group(1)) <= 0 or count <= 0:
                raise ValueError("a rate must be positive")
            return {"requests": int(m.group(1)), "per_seconds": count * _UNIT_SECONDS[m.group(3)]}
        if isinstance(value, dict) and "per" in value:
            rest = {k: v for k, v in value.items() if k != "per"}
            return {**rest, "per_seconds": parse_duration(value["per"])}
        return value


RateLimitField = Annotated[RateLimit, BeforeValidator(RateLimit.parse)]


class ImageLimitsConfig(Strict):
    """Images in chat messages: decoded bytes per image, images per request, and the
    media types accepted; anything else gets `invalid_image` for that request."""

    max_bytes: int = Field(default=5 << 20, ge=1)
    max_per_request: int = Field(default=16, ge=0)
    media_types: list[str] = Field(
        default_factory=lambda: ["image/png", "image/jpeg", "image/gif", "image/webp"]
    )


class LimitsConfig(Strict):
    """Per-socket and per-request limits; exceeding one ends the request with a typed error.

    Frame sizes close the socket with 1009 instead (the frame cannot be read).
    `max_sockets_per_key` and `rate_limit` apply to each client key (all
    unauthenticated clients together count as one key); a key entry may override
    them. None means no limit.
    """

    max_frame_bytes: int = Field(default=1 << 20, ge=1024)
    max_text_frame_bytes: int | None = Field(default=None, ge=1024)
    max_binary_frame_bytes: int | None = Field(default=None, ge=1024)
    max_requests_per_socket: int = Field(default=256, ge=1)
    max_sockets: int = Field(default=10_000, ge=1)
    max_sockets_per_key: int | None = Field(default=None, ge=1)
    rate_limit: RateLimitField | None = None
    max_queued_bytes_per_socket: int = Field(default=4 << 20, ge=4096)
    max_message_history: int = Field(default=1000, ge=0)
    max_metadata_bytes: int = Field(default=16 << 10, ge=2)
    images: ImageLimitsConfig = Field(default_factory=ImageLimitsConfig)
    slow_consumer_close_timeout: Duration = 2.0

    @property
    def text_frame_bytes(self) -> int:
        """The largest text frame a client may send."""
        return self.max_text_frame_bytes or self.max_frame_bytes

    @property
    def binary_frame_bytes(self) -> int:
        """The largest binary (audio) frame a client may send."""
        return self.max_binary_frame_bytes or self.max_frame_bytes


class ClientKeyConfig(Strict):
    """One client API key, stored hashed (`sluice hash-key` makes the hash).

    `hash` is `sha256:<64 hex>` (or bare hex) or `scrypt:<n>:<r>:<p>:<salt>:<hash>`.
    `routers` limits the key to those router ids (language and speech); None
    allows all. `rate_limit` and `max_sockets` override the `limits` defaults.
    """

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    hash: str = Field(min_length=1)
    routers: list[str] | None = None
    rate_limit: RateLimitField | None = None
    max_sockets: int | None = Field(default=None, ge=1)

    @field_validator("hash")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        text = value.strip()
        if re.fullmatch(r"(sha256:)?[0-9a-fA-F]{64}", text):
            return text.lower()
        parts = text.split(":")
        if parts[0] == "scrypt" and len(parts) == 6 and all(parts[1:]):
            return text
        raise ValueError(
            "hash must be 'sha256:<64 hex digits>' or 'scrypt:n:r:p:salt:hash' "
            "(run `sluice hash-key`); never put the key itself here"
        )


class AuthConfig(Strict):
    """Who may connect: client API keys, and the Origins browsers may connect from.

    With no `keys`, every client is let in and Sluice serves loopback only unless
    `allow_unauthenticated` is true. `origins` lists the browser Origins allowed to
    open websockets (and to POST): `[]` allows same-origin pages only, `"*"` any
    origin, `"https://*.example.com"` any subdomain. Requests without an Origin
    header (non-browser clients) are always allowed.
    """

    keys: list[ClientKeyConfig] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    origins: list[str] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: list[ClientKeyConfig]) -> list[ClientKeyConfig]:
        seen: set[str] = set()
        hashes: set[str] = set()
        for key in keys:
            if key.id in seen:
                raise ValueError(f"duplicate key id {key.id!r}")
            if key.hash in hashes:
                raise ValueError(f"key {key.id!r} has the same hash as another key")
            seen.add(key.id)
            hashes.add(key.hash)
        return keys

    @field_validator("origins")
    @classmethod
    def _origin_shape(cls, origins: list[str]) -> list[str]:
        normal = [o.strip().lower().rstrip("/") for o in origins]
        for origin in normal:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"origin {origin!r} must be '*' or scheme://host[:port] with no path"
                )
        return normal


class MetricsConfig(Strict):
    """`GET /metrics` (Prometheus text format); `require_key` asks for a client key."""

    enabled: bool = True
    require_key: bool = False


class TracingConfig(Strict):
    """OpenTelemetry traces: one span per request, a child span per provider attempt.

    Needs the `otel` extra (`pip install 'sluice-gateway[otel]'`). `exporter:
    console` prints spans to stdout; `otlp` sends them over OTLP/HTTP to
    `endpoint` (default: the OTEL_EXPORTER_OTLP_* environment variables).
    """

    enabled: bool = False
    exporter: Literal["console", "otlp"] = "console"
    endpoint: str | None = None
    service_name: str = "sluice"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _packages_present(self) -> TracingConfig:
        if not self.enabled:
            return self
        needed = ["opentelemetry.trace", "opentelemetry.sdk.trace"]
        if self.exporter == "otlp":
            needed.append("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        for module in needed:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise ValueError(
                    f"tracing is enabled but {module} is not installed; install the "
                    "'otel' extra (pip install 'sluice-gateway[otel]') or set "
                    "tracing.enabled: false"
                )
        return self


def _allowed_host(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    name = host.removeprefix("*.").removeprefix(".").strip("[]")
    if host == "*" or re.fullmatch(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*", name):
        return host
    try:
        ipaddress.ip_address(name)
    except ValueError:
        raise ValueError(
            f"allowed host {host!r} must be a host name or IP address (no scheme, port or "
            "path), '.example.com' for a domain and its subdomains, or '*'"
        ) from None
    return host


AllowedHost = Annotated[str, AfterValidator(_allowed_host)]


class ResumeConfig(Strict):
    """Resumable requests (docs/resume.md): each request's frames are kept so a client
    that lost its socket can `resume` them.

    `max_frames`: frames kept per request (the oldest go first; Redis trims
    approximately, `MINID ~`). `retention`: how long a finished request stays
    resumable; the in-memory log also keeps its finished requests within
    `max_bytes` (the oldest go first). `detached_timeout`: how long a request
    whose socket was lost keeps running with no client (then it ends with
    `shutting_down`). `flush_interval`: how often a Redis log writes the frames
    gathered meanwhile, in one round trip. `on_drain`: `auto` (with the log on
    Redis, a busy socket whose client said it resumes, with `?resume=1` on its
    upgrade URL as Sluice's Python and JS clients do, gets 1012 at once and its
    requests run on to be resumed; any other busy socket, and every socket with
    the in-memory log, finishes, then 1001), `wait` (GEP 8 for every
    socket) or `restart` (every busy socket gets 1012 at once). `redis`: a Redis
    URL for the log (None: `state.redis`'s server when that is set, else in
    memory); on Redis any
    instance resumes any request.
    `lease`: how long a running request's owner may go unheard before a resuming
    instance takes the request over (renewed every lease/3).
    """

    enabled: bool = True
    max_frames: int = Field(default=10_000, ge=16)
    retention: Duration = 30.0
    max_bytes: int = Field(default=16 << 20, ge=1 << 16)
    detached_timeout: Duration = 300.0
    flush_interval: Duration = 0.02
    on_drain: Literal["auto", "wait", "restart"] = "auto"
    redis: str | None = None
    lease: Duration = 3.0


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(value: str) -> str:
    if not value.startswith(_REDIS_SCHEMES):
        raise ValueError(
            f"a Redis URL starts with one of {', '.join(_REDIS_SCHEMES)} "
            "(e.g. redis://redis:6379/0, redis://:password@host:6379/0)"
        )
    return value


class RedisStateConfig(Strict):
    """`state.redis`: the Redis server every instance shares (docs/deploying.md).

    `url`: `redis://[:password@]host:port/db` (`rediss://` for TLS, `unix://` for a
    socket). `key_prefix` starts every key and channel Sluice uses, so several
    deployments can share one Redis. `connect_timeout` / `command_timeout`: how long
    one connection attempt / one command may take before Redis counts as down (the
    request then goes on with this instance's local state). `reconnect_interval`:
    how often a down Redis is tried again. `instance_ttl`: how long an instance's
    sockets count after it was last heard of (a crashed instance's sockets stop
    counting against their keys after this).
    """

    url: Annotated[str, AfterValidator(_redis_url)]
    key_prefix: str = Field(default="sluice:", max_length=64)
    connect_timeout: Duration = 1.0
    command_timeout: Duration = 0.25
    reconnect_interval: Duration = 1.0
    instance_ttl: Duration = 15.0

    @field_validator("connect_timeout", "command_timeout", "reconnect_interval", "instance_ttl")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value


class StateConfig(Strict):
    """`state:` where state shared by instances lives. With no `redis` (the default)
    everything is kept in this process, as a single instance needs."""

    redis: RedisStateConfig | None = None


class ServerConfig(Strict):
    """Where and how the HTTP/websocket server listens, and what a connection may hold.

    `allowed_hosts`: Host headers served besides loopback names and addresses when
    no client keys are configured (DNS rebinding); entries are host names or IP
    addresses, `.example.com` (it and any subdomain) or `"*"` (any Host: only
    behind a proxy that checks it). `header_timeout`: seconds a connection has to
    deliver a complete request head (from its opening, or from its first byte
    after a response). `keepalive_timeout`: seconds a connection may sit idle
    between requests. `max_pending_connections` / `max_pending_per_peer`:
    connections still sending their request head, per process and per peer
    address; more are refused with 503. `watch_config`: re-read the config file
    whenever its content changes (checked every 2 s), as SIGHUP does.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=9099, ge=0, le=65535)
    heartbeat: Duration = 20.0
    drain_grace: Duration = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    allowed_hosts: list[AllowedHost] = Field(default_factory=list)
    header_timeout: Duration = 10.0
    keepalive_timeout: Duration = 75.0
    max_pending_connections: int = Field(default=1024, ge=1)
    max_pending_per_peer: int = Field(default=128, ge=1)
    watch_config: bool = False

    @field_validator("header_timeout", "keepalive_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value


class SluiceConfig(Strict):
    """The whole configuration file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    routers: RoutersConfig = Field(default_factory=RoutersConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    resume: ResumeConfig = Field(default_factory=ResumeConfig)
    state: StateConfig = Field(default_factory=StateConfig)

    @property
    def language_routers(self) -> list[LanguageRouterConfig]:
        """Enabled language routers with at least one enabled model."""
        return [r for r in self.routers.language if r.enabled and r.enabled_models]

    @property
    def speech_routers(self) -> list[SpeechRouterConfig]:
        """Enabled speech routers."""
        return [r for r in self.routers.speech if r.enabled]

    @property
    def embedding_routers(self) -> list[EmbeddingRouterConfig]:
        """Enabled embedding routers with at least one enabled model."""
        return [r for r in self.routers.embedding if r.enabled and r.enabled_models]

    @property
    def agent_routers(self) -> list[AgentRouterConfig]:
        """Enabled agent routers whose listen, chat and speak routers are served."""
        chat = {r.id for r in self.language_routers}
        speech = {r.id for r in self.speech_routers}
        return [
            r
            for r in self.routers.agent
            if r.enabled and r.chat in chat and r.listen in speech and r.speak in speech
        ]
