"""Test helpers: embedding routers whose models point at the fake embedding server."""

from __future__ import annotations

from typing import Any

from config.models import SluiceConfig
from fakes.embed_servers import FakeEmbed

SPACE = "fake-space"
"""The vector space every fake-backed model declares, so routers may mix vendors."""

BEDROCK_KEYS = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "fake-secret-key"}


def vendor_block(vendor: str, fake: FakeEmbed, **extra: Any) -> dict[str, Any]:
    """The provider block (`{"openai": {...}}`) of `vendor` pointing at `fake`."""
    url = fake.url
    blocks: dict[str, dict[str, Any]] = {
        "openai": {"base_url": f"{url}/v1", "api_key": "sk-fake-openai"},
        "azureopenai": {"base_url": url, "model": "embed-deployment", "api_key": "az-fake"},
        "cohere": {"base_url": url, "api_key": "co-fake-key"},
        "gemini": {"base_url": f"{url}/v1beta", "api_key": "gm-fake-key"},
        "ollama": {"base_url": url},
        "bedrock": {"base_url": url, **BEDROCK_KEYS},
    }
    return {vendor: {**blocks[vendor], **extra}}


def embed_model(
    model_id: str, vendor: str, fake: FakeEmbed, *, space: str | None = SPACE, **extra: Any
) -> dict[str, Any]:
    """One embedding model: `extra` keys that are provider fields go into the block."""
    model_keys = {
        "dimensions",
        "max_parallel",
        "error_budget",
        "client",
        "health",
        "weight",
        "capabilities",
    }
    block_extra = {k: v for k, v in extra.items() if k not in model_keys}
    model = {k: v for k, v in extra.items() if k in model_keys}
    out = {"id": model_id, **model, **vendor_block(vendor, fake, **block_extra)}
    if space is not None:
        out["space"] = space
    return out


def embed_config(
    *models: dict[str, Any], router_id: str = "emb", auth: Any = None, **router: Any
) -> SluiceConfig:
    """A config with one embedding router of `models` (no retry passes, no backoff)."""
    retry = {"max_retries": 0, "min_delay": 0, "max_delay": 0}
    config: dict[str, Any] = {
        "routers": {
            "embedding": [{"id": router_id, "retry": retry, **router, "models": list(models)}]
        }
    }
    if auth is not None:
        config["auth"] = auth
    return SluiceConfig.model_validate(config)
