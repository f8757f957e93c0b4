"""A TCP proxy on loopback that cuts the connections through it when told to.

client ─► proxy (127.0.0.1:port) ─► upstream; an HTTP control app on its own port:
- `POST /cut`: cut every connection through the proxy now (no close frame: a 1006).
- `POST /cut-on-send`: cut the first connection that next sends data after its
  first chunk (its upgrade request), before forwarding it: a request on the wire
  that never reached the server.
- `POST /freeze`: the connections open now stop carrying bytes either way but stay
  open (a half-open network: only a heartbeat notices); new ones work.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web


class CuttingProxy:
    """Bytes in, bytes out, both ways, until a cut: the websocket under a client dies."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cuts = 0
        self.cut_on_send = False
        self._frozen: set[int] = set()
        self._pairs: set[int] = set()
        self._next_pair = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on an ephemeral loopback port (`self.port`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and cut whatever is still open."""
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Abort every proxied connection (both sides); returns how many sockets were cut."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        self._writers.clear()
        self.cuts += len(writers) // 2
        return len(writers) // 2

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pair = (writer, up_writer)
        self._writers.update(pair)
        self._next_pair += 1
        pair_id = self._next_pair
        self._pairs.add(pair_id)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: bool) -> None:
            chunks = 0
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    chunks += 1
                    if client and chunks > 1 and self.cut_on_send:
                        self.cut_on_send = False
                        for w in pair:
                            w.transport.abort()
                            self._writers.discard(w)
                        self.cuts += 1
                        return
                    if pair_id in self._frozen:
                        continue
                    dst.write(data)
                    await dst.drain()
            self._pairs.discard(pair_id)
            dst.transport.abort()
            self._writers.discard(dst)

        tasks = [
            asyncio.create_task(pipe(reader, up_writer, True)),
            asyncio.create_task(pipe(up_reader, writer, False)),
        ]
        self._tasks.update(tasks)
        for task in tasks:
            task.add_done_callback(self._tasks.discard)

    def control_app(self) -> web.Application:
        """The HTTP control surface (`/cut`, `/cut-on-send`, `/freeze`)."""

        async def cut(_: web.Request) -> web.Response:
            return web.json_response({"cut": self.cut()})

        async def cut_on_send(_: web.Request) -> web.Response:
            self.cut_on_send = True
            return web.json_response({"armed": True})

        async def freeze(_: web.Request) -> web.Response:
            self._frozen |= self._pairs
            return web.json_response({"frozen": len(self._pairs)})

        app = web.Application()
        app.router.add_post("/cut", cut)
        app.router.add_post("/cut-on-send", cut_on_send)
        app.router.add_post("/freeze", freeze)
        return app
