"""The benchmark's fake OpenAI upstream: stamped SSE chunks, cheap enough to share a core.

It speaks the same wire format as `fakes/openai_server.py` (a role event, one
`chat.completion.chunk` per content delta, a finish event, a usage event, then
`data: [DONE]`), but each content delta *is* its send stamp: `content` holds
`time.time_ns()` taken just before the bytes are handed to the socket (the event also
carries it as `sluice_sent_ns`). Sluice forwards only the content of a delta, so
putting the stamp there lets the client measure every target the same way.

It is a bare asyncio protocol rather than an aiohttp app because it shares one core
with the load client: per chunk it costs a timer callback and one `write`, so the
load generator, not the upstream, is what runs out first.

    POST /{workload}/v1/chat/completions   {"stream": true, ...}
    200 text/event-stream (chunked)        data: {...,"content":"<ns>",...}  x chunks

Workloads are named on the command line: `--workload paced:50:20` is 50 chunks,
20 ms apart; `--workload burst:50:0` sends them back to back (each its own write).

    python -m benchmarks.upstream --port 9100 --workload paced:50:20 --workload burst:50:0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from dataclasses import dataclass

_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Workload:
    """One stream shape: `chunks` content deltas, `delay` seconds before each one."""

    name: str
    chunks: int
    delay: float

    @classmethod
    def parse(cls, spec: str) -> Workload:
        """`name:chunks:delay_ms` -> Workload."""
        name, chunks, delay_ms = spec.split(":")
        return cls(name, int(chunks), float(delay_ms) / 1000.0)


def _event(ident: str, choices: str, stamp: int) -> bytes:
    data = (
        f'data: {{"id":"{ident}","object":"chat.completion.chunk","created":{stamp // 10**9},'
        f'"model":"bench","system_fingerprint":"fp_bench","choices":{choices},'
        f'"sluice_sent_ns":{stamp}}}\n\n'
    ).encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def _choice(delta: str, finish: str = "null") -> str:
    return f'[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]'


_ROLE = _choice('{"role":"assistant","content":""}')
_FINISH = _choice("{}", '"stop"')
_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: parse a request, stream the answer, repeat."""

    def __init__(self, workloads: dict[str, Workload], counter: list[int]) -> None:
        self._workloads = workloads
        self._counter = counter
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False
        self._paused = False
        self._pending = False
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._stream: tuple[str, Workload] | None = None
        self._sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """The client went away: stop the stream's timer."""
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def pause_writing(self) -> None:
        """The socket buffer is full: hold the next chunk."""
        self._paused = True

    def resume_writing(self) -> None:
        """The socket drained: send what was held."""
        self._paused = False
        if self._pending:
            self._pending = False
            self._next()

    def data_received(self, data: bytes) -> None:
        """Buffer request bytes; start answering once a whole request is in."""
        self._buffer += data
        if not self._busy:
            self._try_request()

    def _try_request(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _HEAD_LIMIT:
                self._reply(431, b'{"error":{"message":"headers too large"}}', close=True)
            return
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = [*head[0].split(" ", 2), "", ""][:3]
        headers = {}
        for line in head[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body_and_rest = self._dechunk(end + 4)
            if body_and_rest is None:
                return
            body, rest_at = body_and_rest
        else:
            length = int(headers.get("content-length", "0") or 0)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            rest_at = end + 4 + length
        del self._buffer[:rest_at]
        self._handle(method, path, body)

    def _dechunk(self, start: int) -> tuple[bytes, int] | None:
        body = bytearray()
        at = start
        while True:
            eol = self._buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(self._buffer[at:eol]).split(b";")[0], 16)
            if len(self._buffer) < eol + 2 + size + 2:
                return None
            body += self._buffer[eol + 2 : eol + 2 + size]
            at = eol + 2 + size + 2
            if size == 0:
                return bytes(body), at

    def _handle(self, method: str, path: str, body: bytes) -> None:
        parts = path.split("?")[0].strip("/").split("/")
        workload = self._workloads.get(parts[0]) if len(parts) == 4 else None
        if method != "POST" or workload is None or parts[1:] != ["v1", "chat", "completions"]:
            self._reply(404, b'{"error":{"message":"no such route"}}')
            return
        try:
            request = json.loads(body)
        except ValueError:
            self._reply(400, b'{"error":{"message":"body is not JSON"}}')
            return
        self._counter[0] += 1
        ident = f"chatcmpl-bench{self._counter[0]}"
        if not request.get("stream"):
            answer = {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": str(time.time_ns())},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            self._reply(200, json.dumps(answer).encode())
            return
        self._busy = True
        self._stream = (ident, workload)
        self._sent = 0
        self._write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _event(ident, _ROLE, time.time_ns())
        )
        self._schedule(workload.delay)

    def _schedule(self, delay: float) -> None:
        if delay > 0:
            self._timer = self._loop.call_later(delay, self._next)
        else:
            self._timer = self._loop.call_soon(self._next)

    def _next(self) -> None:
        self._timer = None
        if self._transport is None or self._stream is None:
            return
        if self._paused:
            self._pending = True
            return
        ident, workload = self._stream
        if self._sent < workload.chunks:
            stamp = time.time_ns()
            content = _choice(f'{{"content":"{stamp}"}}')
            self._write(_event(ident, content, stamp))
            self._sent += 1
            if self._sent < workload.chunks:
                self._schedule(workload.delay)
                return
        usage = (
            '[],"usage":{"prompt_tokens":1,'
            f'"completion_tokens":{self._sent},"total_tokens":{self._sent + 1}}}'
        )
        now = time.time_ns()
        self._write(_event(ident, _FINISH, now) + _event(ident, usage, now) + _DONE)
        self._stream = None
        self._busy = False
        if self._buffer:
            self._try_request()

    def _reply(self, status: int, body: bytes, close: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if close:
            lines.append("Connection: close")
        head = "\r\n".join(lines) + "\r\n\r\n"
        self._write(head.encode() + body)
        if close and self._transport is not None:
            self._transport.close()
        elif self._buffer:
            self._try_request()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


async def serve(host: str, port: int, workloads: list[Workload]) -> None:
    """Serve `workloads` on host:port until SIGINT/SIGTERM; print `ready <port>` once bound."""
    loop = asyncio.get_running_loop()
    by_name = {w.name: w for w in workloads}
    counter = [0]
    server = await loop.create_server(
        lambda: UpstreamProtocol(by_name, counter), host, port, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line entry: `--host`, `--port`, one `--workload name:chunks:delay_ms` each."""
    parser = argparse.ArgumentParser(description="Stamped fake OpenAI upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workload", action="append", type=Workload.parse, default=[])
    args = parser.parse_args(argv)
    workloads = args.workload or [Workload("paced", 50, 0.02), Workload("burst", 50, 0.0)]
    asyncio.run(serve(args.host, args.port, workloads))


if __name__ == "__main__":
    main()
