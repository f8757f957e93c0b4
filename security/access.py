"""Who is calling, and may they: authentication, Origins, per-key limits.

An HTTP request (or websocket upgrade) flows into `access_middleware`; either a
refusal (401 / 403, before any upgrade) flows out, or the handler runs with the
caller's `Client` at `request[CLIENT]`.

- Keys: `Authorization: Bearer <key>`, or for browsers, which cannot set headers
  on a websocket, the subprotocol `sluice.auth.<key>` offered beside `sluice.v1`
  (`new WebSocket(url, ["sluice.v1", "sluice.auth." + key])`); the server
  answers with `sluice.v1`, never echoing the key (offering the key without
  `sluice.v1` is a 400). Missing or wrong key: 401 `unauthorized`; a key not
  allowed on the router: 403 `forbidden`.
- Origins: a browser request that carries `Origin` (every websocket upgrade, and
  every non-GET request) must come from an allowed origin, else 403
  `origin_not_allowed` (cross-site websocket hijacking). No `Origin` header means
  no browser, and is allowed.
- Limits per key: a token bucket of requests (`rate_limit`) and a count of open
  websockets (`max_sockets`), counted in a `security.limits.LimitStore` (in
  shared memory when several workers serve). With no keys, all callers are one
  client, `anonymous`.
`/v1/health`, `/v1/ready` (and `/metrics` unless `metrics.require_key`) are open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from yarl import URL

from config.models import AuthConfig, LimitsConfig
from protocol.frames import ErrorName
from security.keys import KeyRing
from security.limits import (
    ANONYMOUS,
    AsyncAdmission,
    LimitPolicy,
    LimitStore,
    LocalLimits,
    SocketCap,
)

log = logging.getLogger("sluice.access")

SUBPROTOCOL = "sluice.v1"
AUTH_SUBPROTOCOL_PREFIX = "sluice.auth."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rejection = Callable[[str, str], None]
"""(endpoint, reason) of every refused request, for metrics."""


@dataclass(frozen=True)
class Client:
    """One caller (a configured key, or `anonymous`) and where its limits are counted.

    `take_request(now)` spends a token of the key's rate limit: None when the
    request may go on, else the seconds until a token is back. `open_socket()` /
    `close_socket()` count the key's websockets against its own cap and the
    server's `limits.max_sockets`. The counts live in a `LimitStore`, shared by
    every worker process of a server.
    """

    key_id: str
    routers: frozenset[str] | None
    limits: LimitStore

    @property
    def max_sockets(self) -> int | None:
        """This key's websocket cap (None: only the server's cap applies)."""
        return self.limits.policy.of(self.key_id).max_sockets

    def may_use(self, router_id: str) -> bool:
        """Whether this key may use router `router_id`."""
        return self.routers is None or router_id in self.routers

    def take_request(self, now: float) -> float | None:
        """Admit one request at `now` (None), or the seconds to wait for a token."""
        return self.limits.take_request(self.key_id, now)

    def open_socket(self) -> SocketCap | None:
        """Count one more websocket (None), or the cap that refused it (nothing counted)."""
        return self.limits.take_socket(self.key_id)

    @property
    def shared(self) -> AsyncAdmission | None:
        """The store when its counts are shared by instances (`state.redis`), else None."""
        store = self.limits
        return store if isinstance(store, AsyncAdmission) else None

    async def admit_request(self, now: float) -> float | None:
        """`take_request`, counted across instances when the store is shared."""
        shared = self.shared
        if shared is None:
            return self.limits.take_request(self.key_id, now)
        return await shared.admit_request(self.key_id, now)

    async def admit_socket(self) -> SocketCap | None:
        """`open_socket`, counted across instances when the store is shared."""
        shared = self.shared
        if shared is None:
            return self.limits.take_socket(self.key_id)
        return await shared.admit_socket(self.key_id)

    def close_socket(self) -> None:
        """One of this key's websockets closed."""
        self.limits.release_socket(self.key_id)


CLIENT = web.RequestKey("sluice_client", Client)


def _origin_tuple(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


class OriginPolicy:
    """Which browser Origins may open websockets and send non-GET requests.

    `[]`: same origin only (the Origin names the host the request was sent to);
    `"*"`: any; `"https://app.example.com"`: exactly that; `"https://*.example.com"`:
    any subdomain of example.com over https.
    """

    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self._exact: set[tuple[str, str, int | None]] = set()
        self._suffixes: list[tuple[str, str, int | None]] = []
        for origin in origins:
            if origin == "*":
                continue
            if "://*." in origin:
                scheme, rest = origin.split("://*.", 1)
                url = URL(f"{scheme}://{rest}")
                self._suffixes.append((scheme, "." + (url.host or ""), url.port))
            else:
                self._exact.add(_origin_tuple(URL(origin)))

    def allows(self, origin: str, host: str) -> bool:
        """Whether a request with `Origin: origin` sent to `Host: host` is allowed."""
        if self.any:
            return True
        try:
            url = URL(origin.strip())
        except ValueError:
            return False
        if not url.scheme or not url.host:
            return False  # "null" (sandboxed pages, file://) and junk
        scheme, name, port = _origin_tuple(url)
        if (scheme, name, port) in self._exact:
            return True
        for s_scheme, suffix, s_port in self._suffixes:
            if scheme == s_scheme and name.endswith(suffix) and port == s_port:
                return True
        try:
            target = URL(f"{scheme}://{host}")
        except ValueError:
            return False
        return (target.host or "").lower() == name and target.port == port


def presented_key(request: web.Request) -> str | None:
    """The client key of a request: the Bearer token, else the auth subprotocol."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""
    offered = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    for proto in offered.split(","):
        proto = proto.strip()
        if proto.startswith(AUTH_SUBPROTOCOL_PREFIX):
            return proto[len(AUTH_SUBPROTOCOL_PREFIX) :]
    return None


def _auth_without_subprotocol(request: web.Request) -> bool:
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    has_auth = any(p.startswith(AUTH_SUBPROTOCOL_PREFIX) for p in offered)
    return has_auth and SUBPROTOCOL not in offered


def endpoint_of(request: web.Request) -> str:
    """A metrics label for the endpoint a request is for."""
    path = request.path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if last in ("chat", "chatStream", "speak", "listen", "embed"):
        return last
    if path in ("/v1/language", "/v1/speech", "/v1/embedding"):
        return "list"
    return last or "root"


def _protected(request: web.Request, metrics_need_key: bool) -> bool:
    path = request.path
    if path.startswith(
        (
            "/v1/language",
            "/v1/speech",
            "/v1/embedding",
            "/v1/chat/",
            "/v1/audio/",
            "/v1/embeddings",
            "/v1/agent",
            "/v1/realtime",
        )
    ):
        return True
    return metrics_need_key and path.rstrip("/") == "/metrics"


def _refuse(status: int, name: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"name": name, "message": message}, status=status, headers=headers)


class Access:
    """The app's access policy: keys, Origins and one `Client` per key.

    Built once per app from `auth` and `limits`; `on_reject(endpoint, reason)`
    hears every refusal (metrics). Sockets and request tokens are counted in
    `store` (shared by the workers of one server), else in this process.
    """

    def __init__(
        self,
        auth: AuthConfig,
        limits: LimitsConfig,
        *,
        metrics_need_key: bool = False,
        on_reject: Rejection | None = None,
        store: LimitStore | None = None,
    ) -> None:
        self._metrics_need_key = metrics_need_key
        self._on_reject = on_reject
        self.limits = store or LocalLimits(LimitPolicy.build(auth, limits))
        self.anonymous = Client(ANONYMOUS, None, self.limits)
        self.reconfigure(auth, limits)

    def reconfigure(self, auth: AuthConfig, limits: LimitsConfig) -> None:
        """Keys, Origins and per-key limits in (start-up, or a config reload); they
        apply from the next request or upgrade on. Requests already admitted and
        sockets already open keep the `Client` they were admitted as."""
        self.keyring = KeyRing(auth.keys)
        self.origins = OriginPolicy(auth.origins)
        self.limits.set_policy(LimitPolicy.build(auth, limits))
        self._clients: dict[str, Client] = {
            key.id: Client(
                key.id, frozenset(key.routers) if key.routers is not None else None, self.limits
            )
            for key in auth.keys
        }

    @property
    def keys_required(self) -> bool:
        """Whether any client key is configured (so every API call needs one)."""
        return bool(self.keyring)

    def _reject(self, request: web.Request, status: int, name: str, message: str) -> web.Response:
        endpoint = endpoint_of(request)
        if self._on_reject is not None:
            self._on_reject(endpoint, name)
        log.info(
            "request refused",
            extra={"endpoint": endpoint, "reason": name, "status": status, "path": request.path},
        )
        headers = {"WWW-Authenticate": 'Bearer realm="sluice"'} if status == 401 else {}
        return _refuse(status, name, message, **headers)

    async def check(self, request: web.Request) -> web.Response | None:
        """Refuse `request` (the response) or admit it (None, `request[CLIENT]` set)."""
        origin = request.headers.get(hdrs.ORIGIN)
        is_upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if (
            origin is not None
            and (is_upgrade or request.method not in ("GET", "HEAD", "OPTIONS"))
            and not self.origins.allows(origin, request.host)
        ):
            return self._reject(
                request,
                403,
                ErrorName.ORIGIN_NOT_ALLOWED,
                "this Origin may not use Sluice (see auth.origins)",
            )
        if is_upgrade and _auth_without_subprotocol(request):
            # aiohttp would log the offered protocols (the key) for want of an overlap
            return self._reject(
                request,
                400,
                ErrorName.INVALID_REQUEST,
                f"offer the subprotocol '{SUBPROTOCOL}' together with "
                f"'{AUTH_SUBPROTOCOL_PREFIX}<key>'",
            )
        client = self.anonymous
        if self.keys_required and _protected(request, self._metrics_need_key):
            key = presented_key(request)
            if not key:
                return self._reject(
                    request,
                    401,
                    ErrorName.UNAUTHORIZED,
                    "an API key is required: send 'Authorization: Bearer <key>', or offer "
                    f"the websocket subprotocols '{SUBPROTOCOL}' and "
                    f"'{AUTH_SUBPROTOCOL_PREFIX}<key>'",
                )
            entry = await self.keyring.lookup(key)
            if entry is None:
                return self._reject(
                    request, 401, ErrorName.UNAUTHORIZED, "the API key is not valid"
                )
            client = self._clients[entry.id]
        router_id = request.match_info.get("router")
        if router_id is not None and not client.may_use(router_id):
            return self._reject(
                request,
                403,
                ErrorName.FORBIDDEN,
                f"this API key may not use router {router_id!r}",
            )
        request[CLIENT] = client
        return None


ACCESS = web.AppKey("sluice_access", Access)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the app's `Access` (at `app[ACCESS]`) before every handler."""
    refusal = await request.app[ACCESS].check(request)
    if refusal is not None:
        return refusal
    return await handler(request)
