"""Image parts of chat messages: OpenAI's `image_url` in, `ImagePart` out, and the limits.

A `data:` URL (`data:image/png;base64,...`) is decoded once, when the request is
validated; an https URL is kept as it is (Sluice never fetches it: only vendors
that fetch URLs themselves receive it). What is wrong with an image (bad base64,
a media type the gateway does not take, too large, too many) is reported by
`image_problem` as one sentence, which each surface answers with the typed
`invalid_image` error for that request only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from providers.types import ImagePart

DEFAULT_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The media types every vendor with image input takes (`limits.images.media_types`)."""

DEFAULT_MAX_BYTES = 5 << 20
"""Decoded bytes per image by default: Anthropic's per-image limit, the smallest
of the vendors' that inline images (`limits.images.max_bytes`)."""

DEFAULT_MAX_IMAGES = 16
"""Images per request by default (`limits.images.max_per_request`)."""

_DATA_URL = re.compile(r"^data:([A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+)?((?:;[^;,]*)*),(.*)$", re.DOTALL)


class Limits(Protocol):
    """What `image_problem` reads (`config.models.ImageLimitsConfig` or `ImageLimits`)."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def max_per_request(self) -> int: ...
    @property
    def media_types(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What a request's images may be: bytes per decoded image, images per request,
    and the accepted media types."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_per_request: int = DEFAULT_MAX_IMAGES
    media_types: tuple[str, ...] = DEFAULT_MEDIA_TYPES


@dataclass(frozen=True, slots=True)
class ParsedImage:
    """An image URL as read: the part to send, or `problem` saying why it cannot be."""

    part: ImagePart
    problem: str | None = None


def parse_image_url(url: str, detail: str | None = None) -> ParsedImage:
    """`image_url.url` in -> the `ImagePart` (bytes decoded from a `data:` URL, or the
    https URL as is), or a `problem` for a URL that is neither (or bad base64)."""
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None:
            return ParsedImage(ImagePart(detail=detail), "the data URL has no ',' before its data")
        media_type = (match.group(1) or "").lower()
        flags = [flag.strip().lower() for flag in match.group(2).split(";") if flag.strip()]
        if "base64" not in flags:
            return ParsedImage(
                ImagePart(media_type or None, detail=detail),
                "the data URL is not base64 (`data:<type>;base64,<data>` expected)",
            )
        try:
            data = base64.b64decode(match.group(3).strip(), validate=True)
        except (binascii.Error, ValueError):
            problem = "the data URL's base64 does not decode"
            return ParsedImage(ImagePart(media_type or None, detail=detail), problem)
        if not media_type:
            problem = "the data URL has no media type"
            return ParsedImage(ImagePart(None, data, detail=detail), problem)
        return ParsedImage(ImagePart(media_type, data, detail=detail))
    if url.lower().startswith("https://") and len(url) > len("https://"):
        return ParsedImage(ImagePart(url=url, detail=detail))
    shown = url if len(url) <= 40 else f"{url[:40]}..."
    return ParsedImage(
        ImagePart(detail=detail),
        f"image URL {shown!r} is neither a data: URL nor an https URL",
    )


def image_problem(images: Iterable[ParsedImage], limits: Limits) -> str | None:
    """A request's images and the limits in -> the first problem (one sentence), or None."""
    count = 0
    for number, image in enumerate(images, start=1):
        count = number
        if image.problem is not None:
            return f"image {number}: {image.problem}"
        part = image.part
        if part.data is None:
            continue
        if part.media_type not in limits.media_types:
            return (
                f"image {number}: media type {part.media_type!r} is not accepted "
                f"(limits.images.media_types: {', '.join(limits.media_types)})"
            )
        if len(part.data) > limits.max_bytes:
            return (
                f"image {number}: {len(part.data)} bytes; the limit is {limits.max_bytes} "
                "(limits.images.max_bytes)"
            )
    if count > limits.max_per_request:
        return (
            f"the request has {count} images; the limit is {limits.max_per_request} "
            "(limits.images.max_per_request)"
        )
    return None
