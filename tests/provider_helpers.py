"""What the chat adapter tests share: the one-message request and two ways to run it."""

from __future__ import annotations

import pytest

from providers.types import ChatDelta, ChatParams, ChatProvider, Message, ProviderError

PARAMS = ChatParams(messages=(Message("user", "hi"),))


async def collect(provider: ChatProvider, params: ChatParams = PARAMS) -> list[ChatDelta]:
    """Every delta `provider` streams for `params`."""
    return [delta async for delta in provider.stream(params)]


async def stream_error(provider: ChatProvider) -> tuple[ProviderError, list[ChatDelta]]:
    """The `ProviderError` streaming `PARAMS` ends with, and the deltas seen before it."""
    seen: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in provider.stream(PARAMS):
            seen.append(delta)
    return caught.value, seen
