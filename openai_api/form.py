"""Reading a `multipart/form-data` upload without trusting it.

The request flows in with the body limit (`limits.max_text_frame_bytes`); a
`Form` (text fields and file contents by field name) flows out, or an
`ApiError`: 400 `invalid_request` naming what is wrong with the body (no
boundary, unterminated, a part without a name, a nested multipart part, an
encoding that cannot be decoded; logged at info, it is the client's mistake)
or 413 `payload_too_large`. Parts are read into memory as they arrive and
counted against the limit after decoding, so a compressed body cannot expand
past it; nothing is spooled to temporary files.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from openai_api.errors import ApiError, too_large

log = logging.getLogger("sluice.openai")

MALFORMED = (
    ValueError,
    LookupError,
    RuntimeError,
    AssertionError,
    TypeError,
    zlib.error,
    HttpProcessingError,
)
"""What aiohttp's multipart reader raises on a body it cannot read."""


@dataclass
class Form:
    """A parsed form: text fields and uploaded files (their decoded bytes) by name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def malformed(endpoint: str, problem: str, error: BaseException | None = None) -> ApiError:
    """A 400 `invalid_request` for a multipart body that cannot be read (logged at info)."""
    log.info(
        "malformed multipart upload refused",
        extra={
            "endpoint": endpoint,
            "problem": problem[:200],
            "error": type(error).__name__ if error is not None else None,
        },
    )
    return ApiError(
        400, f"the multipart body cannot be read: {problem[:200]}", code="invalid_request"
    )


def _problem(error: BaseException) -> str:
    if isinstance(error, HttpProcessingError):
        return error.message or type(error).__name__
    return str(error) or type(error).__name__


async def read_form(request: web.Request, max_bytes: int, endpoint: str) -> Form:
    """The request's multipart form, at most `max_bytes` of decoded part data in all."""
    content_type = request.headers.get("Content-Type", "")
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send the audio as multipart/form-data", code="invalid_request")
    if "boundary=" not in content_type.lower():
        raise malformed(endpoint, "the Content-Type has no boundary parameter")
    form = Form()
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise malformed(endpoint, "a part is itself multipart (nested multipart)")
            if part.name is None:
                raise malformed(endpoint, "a part has no name in its Content-Disposition")
            raw = bytearray()
            while chunk := await part.read_chunk():
                raw += chunk
                if total + len(raw) > max_bytes:
                    raise too_large()
            data = bytes(part.decode(raw))
            total += len(data)
            if total > max_bytes:
                raise too_large()
            if part.filename is not None:
                form.files[part.name] = data
            else:
                form.fields[part.name] = data.decode(part.get_charset("utf-8"))
    except MALFORMED as error:
        raise malformed(endpoint, _problem(error), error) from None
    return form
