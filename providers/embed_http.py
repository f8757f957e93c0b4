"""One JSON POST to an embedding vendor, its failures classified.

`post_json(session, url, body, headers=..., timeout=..., label=..., secrets=...)`:
the JSON body goes out; the parsed JSON object answer comes back, or a
`ProviderError` (by HTTP status with Retry-After for an error status, TIMEOUT /
TRANSIENT / PROTOCOL for transport failures, PROTOCOL for a body that is not a
JSON object).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from protocol import jsoncodec
from providers.http_errors import error_from_exception, error_from_response
from providers.types import ErrorCategory, ProviderError


async def post_json(
    session: aiohttp.ClientSession,
    url: str | URL,
    body: bytes | Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's per-call timeout)
    label: str,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """POST `body` (JSON-encoded unless already bytes) to `url`; the JSON object answer out."""
    data = body if isinstance(body, bytes) else jsoncodec.dumps(body)
    try:
        async with session.post(
            url,
            data=data,
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            if resp.status >= 300:
                raise await error_from_response(resp, label, secrets=secrets)
            raw = await resp.read()
    except ProviderError:
        raise
    except (aiohttp.ClientError, TimeoutError) as error:
        raise error_from_exception(error, label) from None
    try:
        answer = jsoncodec.loads(raw)
    except ValueError:
        raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ProviderError(ErrorCategory.PROTOCOL, f"{label}: the answer is not a JSON object")
    return answer


def client_timeout(connect: float, total: float) -> aiohttp.ClientTimeout:
    """The timeout of one vendor call: `connect` to connect, `total` for the whole call."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)
