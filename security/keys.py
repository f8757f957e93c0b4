"""Client API keys: generate, hash, verify, and look up the configured entry.

A key string flows in (from `Authorization: Bearer` or the websocket
subprotocol); the `ClientKeyConfig` it matches (or None) flows out. Keys are
never stored, only hashes:

- `sha256:<hex>`: one SHA-256 of the key. Right for generated keys (256 random
  bits cannot be guessed, so a slow hash buys nothing) and costs ~1 µs.
- `scrypt:<n>:<r>:<p>:<salt b64>:<hash b64>`: a slow, salted hash for keys a
  human chose. Each check costs tens of milliseconds and runs in a worker
  thread; results are remembered (bounded) so a client's reconnects stay cheap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Sequence

from config.models import ClientKeyConfig

KEY_PREFIX = "sluice-"
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 64 << 20
_CACHE_SIZE = 4096


def generate_key() -> str:
    """A new random client key: `sluice-` and 43 URL-safe characters (256 bits).

    Its characters are all valid in a websocket subprotocol token, so browsers
    can send it as `sluice.auth.<key>`.
    """
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_key(key: str, scheme: str = "sha256") -> str:
    """The stored form of `key`: `sha256:<hex>` or `scrypt:n:r:p:salt:hash`."""
    if not key:
        raise ValueError("an empty key cannot be hashed")
    if scheme == "sha256":
        return "sha256:" + _sha256_hex(key)
    if scheme == "scrypt":
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(
            key.encode("utf-8"),
            salt=salt,
            n=SCRYPT_N,
            r=SCRYPT_R,
            p=SCRYPT_P,
            dklen=_SCRYPT_DKLEN,
            maxmem=_SCRYPT_MAXMEM,
        )
        return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{_b64(salt)}:{_b64(digest)}"
    raise ValueError(f"unknown hash scheme {scheme!r} (use sha256 or scrypt)")


def verify_key(key: str, stored: str) -> bool:
    """Whether `key` matches the stored hash (constant-time comparison)."""
    if stored.startswith("scrypt:"):
        try:
            _, n, r, p, salt, digest = stored.split(":")
            expected = base64.b64decode(digest)
            got = hashlib.scrypt(
                key.encode("utf-8"),
                salt=base64.b64decode(salt),
                n=int(n),
                r=int(r),
                p=int(p),
                dklen=len(expected),
                maxmem=_SCRYPT_MAXMEM,
            )
        except ValueError:
            return False
        return hmac.compare_digest(got, expected)
    hex_digest = stored.removeprefix("sha256:")
    return hmac.compare_digest(_sha256_hex(key), hex_digest.lower())


class KeyRing:
    """The configured client keys: a presented key in, its entry (or None) out.

    SHA-256 entries are found by digest in one dictionary lookup. scrypt entries
    are checked one by one in a worker thread; every verdict is cached by the
    presented key's SHA-256 (at most 4096 entries, oldest dropped).
    """

    def __init__(self, keys: Sequence[ClientKeyConfig]) -> None:
        self._by_digest: dict[str, ClientKeyConfig] = {}
        self._slow: list[ClientKeyConfig] = []
        for key in keys:
            if key.hash.startswith("scrypt:"):
                self._slow.append(key)
            else:
                self._by_digest[key.hash.removeprefix("sha256:").lower()] = key
        self._cache: OrderedDict[str, ClientKeyConfig | None] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._by_digest or self._slow)

    async def lookup(self, presented: str) -> ClientKeyConfig | None:
        """The entry whose hash matches `presented`, or None."""
        digest = _sha256_hex(presented)
        found = self._by_digest.get(digest)
        if found is not None or not self._slow:
            return found
        if digest in self._cache:
            self._cache.move_to_end(digest)
            return self._cache[digest]
        match = await asyncio.get_running_loop().run_in_executor(None, self._check_slow, presented)
        self._cache[digest] = match
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return match

    def _check_slow(self, presented: str) -> ClientKeyConfig | None:
        for key in self._slow:
            if verify_key(presented, key.hash):
                return key
        return None
