"""The shapes every embedding adapter speaks, independent of any vendor.

Flow: an `EmbedRequest` (texts, optional `dimensions` and `input_type`) goes to
`embed_in_batches(provider, request, max_parallel)`, which cuts the texts into the
adapter's `batch_size` slices, calls `provider.embed_batch` for them in parallel
(at most `max_parallel` at a time) and returns one `EmbedResult` with the vectors
in input order. Vendor failures leave an adapter only as `ProviderError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from providers.types import ErrorCategory, ProviderError

InputType = Literal["search_document", "search_query", "classification", "clustering"]
"""What the texts are for (Cohere's `input_type`, Gemini's `taskType`); vendors
without such a hint ignore it."""


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """Texts to embed, and what the caller asked of the vectors."""

    inputs: tuple[str, ...]
    dimensions: int | None = None
    input_type: InputType | None = None


@dataclass(frozen=True, slots=True)
class EmbedBatch:
    """One vendor call's answer: one vector per text sent, and the tokens billed."""

    vectors: list[list[float]]
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """A whole request's vectors in input order and its token count."""

    vectors: list[list[float]]
    tokens: int = 0


class EmbeddingProvider(Protocol):
    """A vendor adapter for one configured embedding model.

    `batch_size`: the most texts one `embed_batch` call may carry (the vendor's
    limit). `dimensions`: capability, the vendor can return shorter vectors when
    asked (`EmbedRequest.dimensions`).
    """

    provider_id: str
    model_name: str
    batch_size: int
    dimensions: bool

    async def embed_batch(self, texts: Sequence[str], request: EmbedRequest) -> EmbedBatch:
        """Embed `texts` (at most `batch_size`) in one vendor call; raise `ProviderError`."""
        ...

    async def aclose(self) -> None:
        """Release whatever the adapter holds (threads, models)."""
        ...


class _Abandoned(Exception):
    """A batch not sent because another batch of the same request failed."""


def batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    """`texts` cut into consecutive slices of at most `size` (>= 1): [a b c d e], 2 ->
    [a b] [c d] [e]."""
    return [texts[i : i + size] for i in range(0, len(texts), max(1, size))]


async def embed_in_batches(
    provider: EmbeddingProvider, request: EmbedRequest, max_parallel: int = 4
) -> EmbedResult:
    """All of `request.inputs` embedded by `provider`, in order.

    The inputs are cut by the adapter's `batch_size`; the slices are sent in
    parallel, at most `max_parallel` at once. The first failing slice fails the
    whole result (the others are cancelled): failover then retries the request
    on another model, never mixing two models' vectors. A slice that answers
    with the wrong number of vectors is a PROTOCOL error.
    """
    slices = batches(request.inputs, provider.batch_size)
    gate = asyncio.Semaphore(max(1, max_parallel))
    failed: list[BaseException] = []

    async def one(texts: Sequence[str]) -> EmbedBatch:
        async with gate:
            if failed:  # a batch already failed: send nothing more
                raise _Abandoned
            try:
                batch = await provider.embed_batch(texts, request)
            except BaseException as error:
                failed.append(error)
                raise
        if len(batch.vectors) != len(texts):
            raise ProviderError(
                ErrorCategory.PROTOCOL,
                f"{provider.provider_id}/{provider.model_name}: {len(batch.vectors)} vectors "
                f"for {len(texts)} texts",
            )
        return batch

    if len(slices) == 1:
        answers = [await one(slices[0])]
    else:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(part)) for part in slices]
        except ExceptionGroup as group:
            real = [e for e in group.exceptions if not isinstance(e, _Abandoned)]
            first = (real or list(group.exceptions))[0]
            raise first from None
        answers = [task.result() for task in tasks]
    vectors = [vector for answer in answers for vector in answer.vectors]
    return EmbedResult(vectors, sum(answer.tokens for answer in answers))


def vectors_of(raw: object, label: str) -> list[list[float]]:
    """A vendor's JSON list of vectors checked as lists of numbers (PROTOCOL error if not)."""
    if not isinstance(raw, list):
        raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: the answer has no list of vectors")
    out: list[list[float]] = []
    for vector in raw:
        if not isinstance(vector, list) or not vector:
            raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: a vector is not a list")
        if all(type(value) is float for value in vector):  # the common case: keep the list
            out.append(vector)
            continue
        for value in vector:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: a vector holds {value!r}")
        out.append([float(v) for v in vector])
    return out
