"""Hostile networks: what an attacker on the network or a careless client does to a
running Sluice, replayed on loopback with raw sockets (issue 22).

DNS rebinding (Host checks), half-sent requests and idle connections (the
connection guard), non-standard JSON in and out, malformed uploads and 413s on
the OpenAI routes, path traversal on the playground, oversized request heads,
invalid UTF-8 in websocket text frames, websockets that never send anything,
and every method on every route. Resource tests report the server's open file
descriptors and resident memory before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config import check_config
from config.models import SluiceConfig
from protocol import jsoncodec
from security.hosts import HostPolicy, host_name
from server import GATEWAY
from tests.ops_helpers import scripted_config, value, with_sections
from tests.raw_http import (
    CLOSE,
    TEXT,
    close_raw,
    eof_within,
    exchange,
    json_body,
    metrics_of,
    open_raw,
    read_frame,
    read_response,
    request,
    rss_bytes,
    served,
    server_fds,
    upgrade,
    ws_frame,
)
from tests.test_limits import NeverReads, wait_until
from tests.test_secrets import _free_port as free_port
from transport.http_guard import HTTP_GUARD
from transport.http_json import json_response

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/language/r/chatStream"
CHAT_BODY = json.dumps({"message": {"content": "hi"}}).encode()


def config_with(**server: Any) -> SluiceConfig:
    """The scripted router `r`, a speech router `s` (never contacted) and `server` settings."""
    base = scripted_config()
    speech = SluiceConfig.model_validate(
        {
            "routers": {
                "speech": [
                    {
                        "id": "s",
                        "listen": {
                            "models": [{"id": "stt", "openai": {"base_url": "http://127.0.0.1:9"}}]
                        },
                    }
                ]
            }
        }
    ).routers.speech
    routers = base.routers.model_copy(update={"speech": speech})
    config = base.model_copy(update={"routers": routers})
    return with_sections(config, server=server) if server else config


# ---- DNS rebinding -------------------------------------------------------------------


def test_host_names_and_the_policy() -> None:
    assert host_name("LocalHost.:9099") == "localhost"
    assert host_name("[::1]:80") == "::1"
    assert host_name("attacker.example") == "attacker.example"
    policy = HostPolicy(
        ["sluice.internal", ".corp.example", "*.lab.example", "10.1.2.3"], enforced=True
    )
    for good in (
        "localhost",
        "localhost:9099",
        "127.0.0.1:9099",
        "127.8.9.10",
        "[::1]:9099",
        "sluice.internal:80",
        "corp.example",
        "api.corp.example:443",
        "10.1.2.3:9099",
        "gpu1.lab.example",
        None,  # no Host header: not a browser
    ):
        assert policy.allows(good), good
    for bad in (
        "attacker.example:9099",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "evilcorp.example",
        "0x7f000001",
        "10.1.2.4",
        "notlab.example",
        "",
    ):
        assert not policy.allows(bad), bad
    # the address the connection arrived on, as an IP literal (probes, curl by IP)
    assert policy.allows("192.168.7.7:9099", local_address="192.168.7.7")
    assert policy.allows("192.168.7.7", local_address="::ffff:192.168.7.7")
    assert not policy.allows("192.168.7.8", local_address="192.168.7.7")
    assert HostPolicy(["*"], enforced=True).allows("anything.example")
    assert HostPolicy([], enforced=False).allows("anything.example")


def test_allowed_hosts_are_validated_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sluice.yaml"
    path.write_text(
        "server:\n  allowed_hosts:\n    - ok.example\n    - http://bad.example/\n"
        "  header_timeout: 0s\n"
    )
    problems = "\n".join(check_config(str(path)))
    assert "allowed_hosts" in problems and "bad.example" in problems, problems
    assert "header_timeout" in problems, problems
    assert ":4" in problems or "line 4" in problems, problems
    good = tmp_path / "good.yaml"
    good.write_text(
        "server:\n  allowed_hosts: [sluice.internal, .corp.example, '*.lab.example', "
        "'[::1]', 10.0.0.5]\n  header_timeout: 5s\n  max_pending_per_peer: 16\n"
    )
    assert check_config(str(good)) == []


async def test_dns_rebinding_is_refused_before_routing_on_http_and_upgrades() -> None:
    async with served(config_with()) as sluice:
        evil = f"attacker.example:{sluice.port}"
        origin = f"Origin: http://{evil}"
        # the probe: a completion and a websocket for a page that rebound its name
        resp = await exchange(
            sluice.port, request("POST", "/v1/language/r/chat", evil, origin, body=CHAT_BODY)
        )
        assert resp.status == 403 and json_body(resp)["name"] == "host_not_allowed", resp
        assert set(json_body(resp)) == {"name", "message"}
        resp = await exchange(sluice.port, upgrade(CHAT, evil, origin))
        assert resp.status == 403 and json_body(resp)["name"] == "host_not_allowed", resp
        # same-origin GETs carry no Origin: the Host alone decides; unknown paths too
        for path in ("/v1/language/", "/metrics", "/playground/", "/no/such/route", "/v1/health"):
            resp = await exchange(sluice.port, request("GET", path, evil))
            assert resp.status == 403 and json_body(resp)["name"] == "host_not_allowed", path
        for name in ("localhost.attacker.example", "127.0.0.1.nip.io"):
            resp = await exchange(sluice.port, request("GET", "/v1/language/", name))
            assert resp.status == 403, name
        # loopback names are served, with or without a port
        for host in (sluice.host, f"localhost:{sluice.port}", "localhost", "[::1]"):
            resp = await exchange(sluice.port, request("GET", "/v1/language/", host))
            assert resp.status == 200, host
        resp = await exchange(
            sluice.port,
            request("POST", "/v1/language/r/chat", f"localhost:{sluice.port}", body=CHAT_BODY),
        )
        assert resp.status == 200
        assert json_body(resp)["model_response"]["message"]["content"] == "ok"
        # Origin rules are unchanged: null is refused, a missing Origin passes
        resp = await exchange(sluice.port, upgrade(CHAT, sluice.host, "Origin: null"))
        assert resp.status == 403 and json_body(resp)["name"] == "origin_not_allowed"
        resp = await exchange(sluice.port, upgrade(CHAT, sluice.host))
        assert resp.status == 101
        metrics = await metrics_of(sluice.port)
        assert value(metrics, "sluice_rejections_total", reason="host_not_allowed") == 9
        assert value(metrics, "sluice_requests_total") == 1  # only the loopback call ran


async def test_allowed_hosts_and_client_keys() -> None:
    config = config_with(allowed_hosts=["sluice.internal", ".corp.example"])
    async with served(config) as sluice:
        for host, status in (
            ("sluice.internal:9099", 200),
            ("api.corp.example", 200),
            ("corp.example", 200),
            ("evil.example", 403),
            ("sluice.internal.evil.example", 403),
        ):
            resp = await exchange(sluice.port, request("GET", "/v1/language/", host))
            assert resp.status == status, host
    # with keys the key is what a rebinding page lacks: a foreign Host gets 401
    keyed = with_sections(config_with(), auth={"keys": [{"id": "k", "hash": "sha256:" + "0" * 64}]})
    async with served(keyed) as sluice:
        resp = await exchange(sluice.port, request("GET", "/v1/language/", "attacker.example"))
        assert resp.status == 401 and json_body(resp)["name"] == "unauthorized"


# ---- half-sent requests and idle connections -------------------------------------------


async def test_half_sent_requests_time_out_and_are_capped_per_peer() -> None:
    config = config_with(header_timeout="1s", max_pending_per_peer=40)
    async with served(config) as sluice:
        gc_fds, rss = server_fds(), rss_bytes()
        started = asyncio.get_running_loop().time()
        conns = [await open_raw(sluice.port) for _ in range(60)]
        for _, writer in conns:
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        peak_fds = server_fds()
        # 40 are pending; 20 are answered 503 at once and closed
        outcomes: list[bytes] = await asyncio.gather(*(eof_within(r, 15) for r, _ in conns))
        took = asyncio.get_running_loop().time() - started
        refused = [o for o in outcomes if o.startswith(b"HTTP/1.1 503")]
        timed_out = [o for o in outcomes if o.startswith(b"HTTP/1.1 408")]
        # a refused client whose head crossed the server's close may see a reset instead
        assert len(timed_out) == 40 and len(refused) + outcomes.count(b"") == 20, outcomes[:3]
        assert refused and b'"name":"too_many_connections"' in refused[0]
        assert b'"name":"request_timeout"' in timed_out[0]
        metrics = await metrics_of(sluice.port)
        assert value(metrics, "sluice_http_pending_connections") == 0
        assert value(metrics, "sluice_http_header_timeouts_total") == 40
        refused_total = "sluice_http_connections_refused_total"
        assert value(metrics, refused_total, reason="peer_pending_limit") == 20
        # every server-side descriptor is gone while the clients still hold theirs
        left_server_side = server_fds() - gc_fds - len(conns)
        for _, writer in conns:
            await close_raw(writer)
        resp = await exchange(sluice.port, request("GET", "/v1/health", sluice.host))
        assert resp.status == 200  # the server lives
        after_fds, after_rss = server_fds(), rss_bytes()
    print(
        f"60 half-sent requests: fds {gc_fds} -> peak {peak_fds} -> {after_fds} "
        f"(server side left {left_server_side}), RSS {rss >> 20} -> {after_rss >> 20} MiB, "
        f"all closed in {took:.1f}s"
    )
    assert left_server_side <= 2
    assert after_fds <= gc_fds + 2
    assert took < 12  # 1 s timeout; generous for a loaded machine
    assert after_rss - rss < 32 << 20


async def test_the_process_wide_pending_cap_and_trickled_heads() -> None:
    config = config_with(header_timeout="1500ms", max_pending_connections=10)
    async with served(config) as sluice:
        conns = [await open_raw(sluice.port) for _ in range(10)]
        guard = sluice.app[HTTP_GUARD]
        await wait_until(lambda: guard.pending == 10, 5)
        extra_reader, extra_writer = await open_raw(sluice.port)
        resp = await read_response(extra_reader)
        assert resp.status == 503 and json_body(resp)["name"] == "too_many_connections"
        await close_raw(extra_writer)
        # one of them trickles a byte at a time: the deadline is for the whole head
        reader, writer = conns[0]
        head = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = asyncio.ensure_future(eof_within(reader, 10))
        with contextlib.suppress(ConnectionError):
            for i in range(40):  # 4 s of trickling
                if answer.done():
                    break
                writer.write(head[i : i + 1] if i < len(head) else b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
        data = await answer
        assert data.startswith(b"HTTP/1.1 408"), data
        assert loop.time() - start < 10
        for r, w in conns[1:]:
            assert await eof_within(r, 10) == b""  # sent nothing: closed quietly
            await close_raw(w)
        await close_raw(writer)
        metrics = await metrics_of(sluice.port)
        assert value(metrics, "sluice_http_connections_refused_total", reason="pending_limit") == 1
        assert value(metrics, "sluice_http_header_timeouts_total") == 10


async def test_kept_alive_connections_are_timed_between_requests() -> None:
    config = config_with(header_timeout="1s", keepalive_timeout="1s")
    async with served(config) as sluice:
        reader, writer = await open_raw(sluice.port)
        for _ in range(3):  # requests inside the idle window keep the connection
            writer.write(request("GET", "/v1/health", sluice.host))
            assert (await read_response(reader)).status == 200
            await asyncio.sleep(0.3)
        # a slow request (the head arrived) is not cut by the head timeout
        writer.write(request("POST", "/v1/language/r/chat", sluice.host, body=CHAT_BODY))
        assert (await read_response(reader)).status == 200
        # idle past keepalive_timeout: closed without a response
        assert await eof_within(reader, 10) == b""
        await close_raw(writer)
        # a second request that stops half-way on a kept-alive connection
        reader, writer = await open_raw(sluice.port)
        writer.write(request("GET", "/v1/health", sluice.host))
        assert (await read_response(reader)).status == 200
        writer.write(b"GET /v1/health HTTP/1.1\r\n")
        assert (await eof_within(reader, 10)).startswith(b"HTTP/1.1 408")
        await close_raw(writer)
        metrics = await metrics_of(sluice.port)
        assert value(metrics, "sluice_http_idle_closes_total") == 1
        assert value(metrics, "sluice_http_header_timeouts_total") == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_real_sluice_process_sheds_200_half_sent_requests(tmp_path: Path) -> None:
    """The probe of issue 22 against `sluice serve`: 200 connections that stop after a
    header line; the process's descriptors and RSS before, at the peak and after."""
    port = free_port()
    config = tmp_path / "sluice.yaml"
    config.write_text(
        "server:\n  header_timeout: 2s\n  max_pending_per_peer: 150\n"
        "routers:\n  language:\n    - id: r\n      models:\n        - id: m\n"
        "          openai: {base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "server.py"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        # one process: the pending caps are per process, and its descriptors are counted
        "--workers",
        "1",
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    pid = str(proc.pid)
    try:
        for _ in range(600):
            try:
                resp = await exchange(port, request("GET", "/v1/ready", f"127.0.0.1:{port}"))
                if resp.status == 200:
                    break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("sluice serve did not become ready")
        fds_before, rss_before = len(os.listdir(f"/proc/{pid}/fd")), rss_bytes(pid)
        conns = [await open_raw(port) for _ in range(200)]
        for _, writer in conns:
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
        await asyncio.sleep(0.5)
        fds_peak = len(os.listdir(f"/proc/{pid}/fd"))
        outcomes = await asyncio.gather(*(eof_within(r, 30) for r, _ in conns))
        fds_after, rss_after = len(os.listdir(f"/proc/{pid}/fd")), rss_bytes(pid)
        for _, writer in conns:
            await close_raw(writer)
        metrics = await metrics_of(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    print(
        f"sluice serve, 200 half-sent requests: fds {fds_before} -> {fds_peak} -> {fds_after}, "
        f"RSS {rss_before >> 20} -> {rss_after >> 20} MiB"
    )
    assert sum(o.startswith(b"HTTP/1.1 408") for o in outcomes) == 150
    assert sum(o.startswith(b"HTTP/1.1 503") or o == b"" for o in outcomes) == 50
    assert value(metrics, "sluice_http_connections_refused_total") == 50
    assert fds_peak <= fds_before + 150 + 5
    assert fds_after <= fds_before + 2
    assert rss_after - rss_before < 32 << 20
    assert value(metrics, "sluice_http_header_timeouts_total") == 150
    logs = stderr.decode()
    assert '"msg": "file descriptors"' in logs or "file descriptor headroom" in logs, logs[-2000:]
    assert '"nofile_soft"' in logs


# ---- strict JSON ---------------------------------------------------------------------


async def next_text(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next text frame the server sends, parsed strictly (pings are skipped)."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == TEXT:
            frame: dict[str, Any] = jsoncodec.loads(payload)
            return frame
        assert opcode != CLOSE, payload


async def open_socket(sluice: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw websocket on the chat endpoint."""
    reader, writer = await open_raw(sluice.port)
    writer.write(upgrade(CHAT, sluice.host))
    assert (await read_response(reader)).status == 101
    return reader, writer


NON_STANDARD = [
    b'{"request_id":"n1","message":{"content":"x"},"metadata":{"a":NaN}}',
    b'{"request_id":"n2","message":{"content":"x"},"metadata":{"b":1e400}}',
    b'{"request_id":"n3","message":{"content":"x"},"metadata":{"c":Infinity}}',
    b'{"request_id":"n4","message":{"content":"x"},"metadata":{"d":-Infinity}}',
    b'{"request_id":"n5","message":{"content":"\\ud800 lone"}}',
]
NOT_UTF8 = [
    b"\xff\xfe",
    b'{"request_id":"u1","message":{"content":"\xc3\x28"}}',
    b'{"request_id":"u2","message":{"content":"\xed\xa0\x80"}}',  # an encoded surrogate
]


async def test_non_standard_json_and_invalid_utf8_frames_end_only_themselves() -> None:
    async with served(config_with()) as sluice:
        reader, writer = await open_socket(sluice)
        for raw in NON_STANDARD + NOT_UTF8:
            writer.write(ws_frame(TEXT, raw))
            frame = await next_text(reader)
            assert frame["type"] == "error" and frame["request_id"] is None, (raw, frame)
            assert frame["error"]["name"] == "payload_parse_error", (raw, frame)
            assert "finish_reason" not in frame["error"]
        assert "UTF-8" in frame["error"]["message"]
        # the socket lives on; every frame of a real request is strict JSON
        writer.write(ws_frame(TEXT, b'{"request_id":"fine","message":{"content":"hi"}}'))
        frames = [await next_text(reader)]
        while "finish_reason" not in frames[-1].get("chunk", frames[-1].get("error", {})):
            frames.append(await next_text(reader))
        assert frames[-1]["chunk"]["finish_reason"] == "complete"
        assert sluice.provider.opened == 1
        await close_raw(writer)


async def test_an_oversized_frame_that_is_not_utf8_still_closes_1009() -> None:
    config = with_sections(
        config_with(), limits={"max_text_frame_bytes": 2048, "max_binary_frame_bytes": 8192}
    )
    async with served(config) as sluice:
        reader, writer = await open_socket(sluice)
        writer.write(ws_frame(TEXT, b"\xff" * 4000))
        opcode, payload = await read_frame(reader)
        assert opcode == CLOSE and int.from_bytes(payload[:2], "big") == 1009
        await close_raw(writer)


async def test_http_bodies_are_strict_json_on_glide_and_openai_routes() -> None:
    nan_chat = b'{"message":{"content":"x"},"override_params":{"m":{"temperature":NaN}}}'
    nan_openai = b'{"model":"r","messages":[{"role":"user","content":"x"}],"temperature":NaN}'
    huge_openai = b'{"model":"s","input":"hi","voice":"alloy","speed":1e400}'
    not_utf8 = b'{"model":"r","messages":[{"role":"user","content":"\xff"}]}'
    async with served(config_with()) as sluice:
        json_type = "Content-Type: application/json"
        resp = await exchange(
            sluice.port,
            request("POST", "/v1/language/r/chat", sluice.host, json_type, body=nan_chat),
        )
        assert resp.status == 400 and json_body(resp)["name"] == "payload_parse_error"
        for path, body in (
            ("/v1/chat/completions", nan_openai),
            ("/v1/audio/speech", huge_openai),
            ("/v1/chat/completions", not_utf8),
        ):
            resp = await exchange(
                sluice.port, request("POST", path, sluice.host, json_type, body=body)
            )
            error = json_body(resp)["error"]
            assert resp.status == 400 and error["code"] == "payload_parse_error", (path, resp)
            assert error["type"] == "invalid_request_error"
        # the connection and server live on
        resp = await exchange(
            sluice.port, request("POST", "/v1/language/r/chat", sluice.host, body=CHAT_BODY)
        )
        assert resp.status == 200


def test_http_json_responses_cannot_carry_nan_or_infinity() -> None:
    response = json_response({"a": float("nan"), "b": float("inf"), "c": -float("inf")})
    assert response.body == b'{"a":null,"b":null,"c":null}'
    assert response.content_type == "application/json"


# ---- uploads and 413 -----------------------------------------------------------------

WAV = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(24) + b"data" + bytes(4)


def part(name: str, data: bytes, *headers: str, filename: str | None = None) -> bytes:
    """One multipart part with boundary XyZ."""
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename:
        disposition += f'; filename="{filename}"'
    head = "\r\n".join(["--XyZ", disposition, *headers]) + "\r\n\r\n"
    return head.encode() + data + b"\r\n"


MULTIPART = "Content-Type: multipart/form-data; boundary=XyZ"
GOOD_FORM = part("model", b"s") + part("file", WAV, filename="a.wav") + b"--XyZ--\r\n"
MALFORMED_UPLOADS = {
    "no boundary": ("Content-Type: multipart/form-data", GOOD_FORM, ()),
    "unterminated": (MULTIPART, part("model", b"s") + b"--XyZ\r\nContent-Disposition: f", ()),
    "nested multipart part": (
        MULTIPART,
        part(
            "file",
            b"--inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner--",
            "Content-Type: multipart/mixed; boundary=inner",
        )
        + b"--XyZ--\r\n",
        (),
    ),
    "compressed body": (MULTIPART, gzip.compress(GOOD_FORM)[:40], ("Content-Encoding: gzip",)),
    "compressed part": (
        MULTIPART,
        part("model", b"s")
        + part("file", b"not deflate data", "Content-Encoding: deflate", filename="a.wav")
        + b"--XyZ--\r\n",
        (),
    ),
    "unknown part encoding": (
        MULTIPART,
        part("model", b"s")
        + part("file", WAV, "Content-Transfer-Encoding: uuencode", filename="a.wav")
        + b"--XyZ--\r\n",
        (),
    ),
    "wrong boundary": (MULTIPART, GOOD_FORM.replace(b"XyZ", b"Other"), ()),
}


async def test_malformed_multipart_uploads_are_400s_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with served(config_with()) as sluice:
        caplog.clear()  # start-up notes (e.g. endpoints without a router) are not the point
        for problem, (content_type, body, headers) in MALFORMED_UPLOADS.items():
            raw = request(
                "POST", "/v1/audio/transcriptions", sluice.host, content_type, *headers, body=body
            )
            resp = await exchange(sluice.port, raw)
            assert resp.status == 400, (problem, resp)
            error = json_body(resp)["error"]
            assert error["type"] == "invalid_request_error"
            if problem == "compressed part":  # aiohttp hands the part over undecoded
                assert error["code"] == "unsupported_format", error
                continue
            assert error["code"] == "invalid_request", (problem, error)
            assert "multipart" in error["message"], (problem, error)
        resp = await exchange(sluice.port, request("GET", "/v1/health", sluice.host))
        assert resp.status == 200
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
    refused = [r for r in caplog.records if r.getMessage() == "malformed multipart upload refused"]
    assert len(refused) >= 5 and all(r.levelno == logging.INFO for r in refused)


async def test_every_body_limit_answers_413_payload_too_large() -> None:
    big = b"x" * 1_500_000
    openai_cases = (
        ("/v1/chat/completions", "Content-Type: application/json", big),
        ("/v1/audio/speech", "Content-Type: application/json", big),
        (
            "/v1/audio/transcriptions",
            MULTIPART,
            part("model", b"s") + part("file", WAV + big, filename="a.wav") + b"--XyZ--\r\n",
        ),
    )
    async with served(config_with()) as sluice:
        for path, content_type, body in openai_cases:
            resp = await exchange(
                sluice.port, request("POST", path, sluice.host, content_type, body=body)
            )
            assert resp.status == 413, (path, resp)
            error = json_body(resp)["error"]
            assert error["code"] == "payload_too_large", (path, error)
            assert error["type"] == "invalid_request_error" and error["param"] is None
            assert "limits.max_text_frame_bytes" in error["message"]
        # a small compressed body that expands past the limit (a decompression bomb)
        bomb = gzip.compress(
            part("model", b"s")
            + part("file", WAV + bytes(8 << 20), filename="a.wav")
            + b"--XyZ--\r\n"
        )
        assert len(bomb) < 64 << 10
        resp = await exchange(
            sluice.port,
            request(
                "POST",
                "/v1/audio/transcriptions",
                sluice.host,
                MULTIPART,
                "Content-Encoding: gzip",
                body=bomb,
            ),
        )
        assert resp.status == 413 and json_body(resp)["error"]["code"] == "payload_too_large"
        resp = await exchange(
            sluice.port, request("POST", "/v1/language/r/chat", sluice.host, body=big)
        )
        assert resp.status == 413 and json_body(resp)["name"] == "payload_too_large"
        resp = await exchange(
            sluice.port,
            request(
                "POST", "/v1/language/r/chat", sluice.host, "Content-Encoding: gzip", body=bomb
            ),
        )
        assert resp.status == 413 and json_body(resp)["name"] == "payload_too_large"


# ---- also covered: traversal, oversized heads, silent sockets, every method ----------

TRAVERSALS = [
    "/playground/../server.py",
    "/playground/%2e%2e/server.py",
    "/playground/%2e%2e%2fserver.py",
    "/playground/..%2f..%2fsecret.txt",
    "/playground/.%2e/secret.txt",
    "/playground/%252e%252e/secret.txt",
    "/playground/..%5csecret.txt",
    "/playground/..\\secret.txt",
    "/playground//etc/passwd",
    "/playground/%2fetc%2fpasswd",
    "/playground/link-to-passwd",
    "/playground/link-to-parent/secret.txt",
    "/playground/index.html%00.txt",
    "/playground/" + "../" * 20 + "etc/passwd",
    "/playground/sluice-client/../../../server.py",
    "/playground/sluice-client/%2e%2e/%2e%2e/%2e%2e/server.py",
    "/playground/sluice-client/..%2f..%2f..%2fserver.py",
    "/playground/sluice-client/%252e%252e/client.js",
]


async def test_playground_paths_never_leave_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>playground</html>")
    (tmp_path / "secret.txt").write_text("SECRET-OUTSIDE")
    (static / "link-to-passwd").symlink_to("/etc/passwd")
    (static / "link-to-parent").symlink_to(tmp_path)
    monkeypatch.setattr("glide_api.playground.static_dir", lambda: static)
    async with served(config_with()) as sluice:
        assert (
            await exchange(sluice.port, request("GET", "/playground/", sluice.host))
        ).status == 200
        for path in TRAVERSALS:
            resp = await exchange(sluice.port, request("GET", path, sluice.host))
            assert resp.status in (400, 403, 404), (path, resp.status)
            assert b"SECRET-OUTSIDE" not in resp.body and b"root:" not in resp.body, path
            assert b"import" not in resp.body, path  # no source file either
        resp = await exchange(sluice.port, request("GET", "/playground/index.html", sluice.host))
        assert resp.status == 200 and b"playground" in resp.body


OVERSIZED_HEADS = {
    "request line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "header value": b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: "
    + b"b" * 100_000
    + b"\r\n\r\n",
    "header name": b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"
    + b"N" * 100_000
    + b": 1\r\n\r\n",
    "many headers": b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    + b"\r\n",
    "junk": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500) + b"\r\n\r\n",
    "duplicate host": b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
}


async def test_oversized_and_garbage_request_heads_are_refused_and_the_server_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    secret = b"Authorization: Bearer sluice-client-key-in-a-long-line-" + b"k" * 9000
    async with served(config_with()) as sluice:
        caplog.clear()  # start-up notes (e.g. endpoints without a router) are not the point
        fds = server_fds()
        heads = {**OVERSIZED_HEADS, "a key in a long line": b"GET / HTTP/1.1\r\n" + secret}
        for name, raw in heads.items():
            reader, writer = await open_raw(sluice.port)
            with contextlib.suppress(ConnectionError):
                writer.write(raw)
                await writer.drain()
            answer = await eof_within(reader, 10)
            await close_raw(writer)
            status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
            assert status in (400, 413, 414, 431), (name, answer[:200])
            resp = await exchange(sluice.port, request("GET", "/v1/health", sluice.host))
            assert resp.status == 200, name
        assert server_fds() <= fds + 2
    # a client's garbage is not a server error, and its bytes are not logged
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [(r.name, r.getMessage()) for r in loud]
    refused = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(refused) == len(heads) - 1  # aiohttp logs a bad method (the TLS bytes) at debug
    assert not any(b"sluice-client-key" in r.getMessage().encode() for r in caplog.records)


async def test_websockets_that_never_send_are_dropped_by_the_heartbeat() -> None:
    async with (
        served(config_with(heartbeat="400ms")) as sluice,
        aiohttp.ClientSession() as http,
    ):
        gateway = sluice.app[GATEWAY]
        fds = server_fds()
        # an idle client that answers pings (aiohttp does while it reads) is a normal
        # client: it stays
        alive = await http.ws_connect(f"http://{sluice.host}{CHAT}")
        reading = asyncio.ensure_future(alive.receive())
        silent = [await NeverReads.connect("127.0.0.1", sluice.port, CHAT) for _ in range(5)]
        await wait_until(lambda: len(gateway.sessions) == 6, 5)
        took = await wait_until(lambda: len(gateway.sessions) == 1, 15)
        await asyncio.sleep(1)  # more heartbeats than the silent ones got
        assert len(gateway.sessions) == 1
        await alive.send_str(json.dumps({"request_id": "still", "message": {"content": "hi"}}))
        frame = json.loads((await asyncio.wait_for(reading, 5)).data)
        assert frame["request_id"] == "still"
        await alive.close()
        metrics = await metrics_of(sluice.port)
        for sock in silent:
            sock.close()
        await wait_until(lambda: server_fds() <= fds + 2, 5)
    print(f"5 silent websockets dropped by the heartbeat in {took:.2f}s")
    assert value(metrics, "sluice_socket_heartbeat_timeouts_total", endpoint="chatStream") == 5


METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")


def concrete_paths(sluice: Any) -> list[str]:
    """Every route of the app with its variables filled in."""
    paths = set()
    for resource in sluice.app.router.resources():
        path = resource.canonical
        if path == "/playground" and "{" not in path and resource.get_info().get("directory"):
            path = "/playground/index.html"
        path = path.replace("{endpoint}", "listen")
        path = path.replace("/v1/speech/{router}", "/v1/speech/s").replace("{router}", "r")
        paths.add(path)
    return sorted(paths)


async def test_every_method_on_every_route_gets_an_answer_never_a_5xx() -> None:
    async with served(config_with()) as sluice:
        paths = concrete_paths(sluice)
        assert "/v1/language/r/chatStream" in paths and "/v1/audio/transcriptions" in paths
        for path in paths:
            for method in METHODS:
                resp = await exchange(sluice.port, request(method, path, sluice.host))
                assert resp.status < 500, (method, path, resp)
                if method == "HEAD":
                    assert resp.body == b"", (path, resp)
                elif resp.status >= 400 and resp.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    body = json_body(resp)
                    assert {"name", "message"} <= set(body) or "error" in body, (method, path)
        resp = await exchange(sluice.port, request("GET", "/v1/health", sluice.host))
        assert resp.status == 200
