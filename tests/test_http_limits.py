"""What a hostile client cannot do to the node's HTTP and WebSocket layer (issue 10): an
oversized request head is refused 431 before any real work, a slow or silent socket is closed,
the node keeps its file descriptors (503 past limits.sockets), a ping flood closes the
flooder's WebSocket, and invalid UTF-8 costs a warning, not a traceback. Raw sockets, so that
nothing between the test and the node is polite on its behalf."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from conftest import NodeProcess, register, user

KIB = 1024
LIMIT = 16 * KIB  # limits.header_bytes, the default
SLOW = {"ONIONCHAT_LIMITS_REQUEST_TIMEOUT": "1", "ONIONCHAT_AUTH_AUTH_TIMEOUT": "1"}


def head(node: NodeProcess, path: str = "/api/health", *lines: bytes, size: int = 0) -> bytes:
    """A GET head; with `size`, padded by an X-Pad header to exactly that many bytes."""
    start = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (path.encode(), node.port)
    body = b"".join(line + b"\r\n" for line in lines)
    if size:
        pad = size - len(start) - len(body) - len(b"X-Pad: \r\n\r\n")
        body += b"X-Pad: " + b"p" * pad + b"\r\n"
    out = start + body + b"\r\n"
    assert not size or len(out) == size
    return out


UPGRADE = (
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
)


@contextlib.asynccontextmanager
async def raw(
    node: NodeProcess,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """One response (head and Content-Length body), or what came before the node closed."""
    out = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(timeout):
            out = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in out.lower().split(b"\r\n")[1:]
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            out += await reader.readexactly(length)
    return out


async def read_to_end(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the node closes the connection; fails if it does not within `timeout`."""
    out = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
    return out


async def exchange(node: NodeProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` (while reading: the node may answer and close before it has all of it)
    and return all the node sent before closing."""
    async with raw(node) as (reader, writer):

        async def send() -> None:
            with contextlib.suppress(ConnectionError):
                writer.write(data)
                await writer.drain()

        sending = asyncio.create_task(send())
        try:
            return await read_to_end(reader, timeout)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def cpu_seconds(node: NodeProcess) -> float:
    """The node's user + system CPU time, from /proc/PID/stat."""
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def health(node: NodeProcess) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as http:
        assert (await http.get("/api/health")).status_code == 200


async def log_event(node: NodeProcess, event: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in node.events() if e.get("event") == event]
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} in the log: {node.log_path.read_text()[-2000:]}")


# -- the request head's size -----------------------------------------------------------------


async def test_a_head_over_the_limit_gets_431_while_others_are_served(node: NodeProcess) -> None:
    big = head(node, "/api/health", b"X-Big: " + b"b" * 17 * KIB)

    async def slowly() -> bytes:
        async with raw(node) as (reader, writer):
            for start in range(0, len(big), 4 * KIB):  # five writes, a tenth of a second apart
                writer.write(big[start : start + 4 * KIB])
                await writer.drain()
                await asyncio.sleep(0.1)
            return await read_to_end(reader)

    refused, _ = await asyncio.gather(slowly(), health(node))
    assert status(refused) == 431
    assert b"Request Header Fields Too Large" in refused.split(b"\r\n")[0]
    assert b"connection: close" in refused.lower()
    assert refused.endswith(b"the request head is over 16384 bytes\n")
    # at the limit exactly, it is served; one byte more is not
    assert (
        status(await exchange(node, head(node, "/api/health", b"Connection: close", size=LIMIT)))
        == 200
    )
    assert status(await exchange(node, head(node, "/api/health", size=LIMIT + 1))) == 431
    await health(node)


async def test_each_request_of_a_kept_alive_connection_has_the_whole_limit(
    node: NodeProcess,
) -> None:
    near = head(node, "/api/health", size=LIMIT - 100)
    async with raw(node) as (reader, writer):
        for _ in range(3):  # one at a time: each near the limit, all of them far over it
            writer.write(near)
            assert status(await read_response(reader)) == 200
        writer.write(head(node, "/api/health", size=LIMIT + 1))
        assert status(await read_to_end(reader)) == 431
    # pipelined: three heads in one write, each under the limit, all served
    last = head(node, "/api/health", b"Connection: close")
    answers = await exchange(node, near + near + last)
    assert answers.count(b"HTTP/1.1 200 OK") == 3
    # a body (of known length, then chunked) does not count toward the next head
    body = b'{"username":"nobody"}'
    post = b"POST /api/prelogin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % node.port
    sized = post + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunked = post + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answers = await exchange(node, sized + body + near + chunked + last)
    assert answers.count(b"HTTP/1.1 200 OK") == 4, answers[-300:]


async def test_a_4mb_cookie_on_the_websocket_upgrade_is_refused_cheaply(
    node: NodeProcess,
) -> None:
    cookie = b"Cookie: oc=" + b"c" * 4 * KIB * KIB
    before = cpu_seconds(node)
    refused = await exchange(node, head(node, "/ws", *UPGRADE, cookie))
    spent = cpu_seconds(node) - before
    assert status(refused) == 431
    assert spent < 0.5, f"the node spent {spent:.2f} s of CPU on a refused head"
    await health(node)


async def test_a_header_flooder_waits_for_its_answer(node: NodeProcess) -> None:
    """Once refused, a client that goes on sending is read no more, and its 431 is held back a
    second: a flooder that reconnects on its answer opens one connection a second, not
    hundreds (each cost the node 300 µs, most of it in the kernel). Then the node sends EOF and
    closes a second later, so that the answer is read before the reset its unread data makes
    (draining it instead, the node's reset lost the answer)."""
    async with raw(node) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
        started = time.monotonic()

        async def flood() -> int:
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < 64 * KIB * KIB:
                    writer.write(b"f" * 64 * KIB)
                    await writer.drain()
                    sent += 64 * KIB
            return sent

        flooding = asyncio.create_task(flood())
        answer = await read_to_end(reader)  # the answer, then the node's EOF
        answered = time.monotonic() - started
        assert status(answer) == 431
        sent = await asyncio.wait_for(flooding, 10)  # until the node closes: a reset
    assert 0.5 < answered < 5, answered
    assert sent < 64 * KIB * KIB  # it could not send it all
    await health(node)


# -- slow and silent sockets -----------------------------------------------------------------


async def test_silent_and_half_sent_requests_are_closed_after_the_request_timeout(
    node_factory: Any,
) -> None:
    node = node_factory(env=SLOW)

    async def silent() -> None:
        async with raw(node) as (reader, _):
            assert await read_to_end(reader) == b""  # closed, unanswered: it never asked

    async def half(data: bytes) -> None:
        assert status(await exchange(node, data)) == 408

    async def kept_alive_then_half() -> None:
        async with raw(node) as (reader, writer):
            writer.write(head(node))
            assert status(await read_response(reader)) == 200
            await asyncio.sleep(0.5)
            writer.write(head(node)[:20])  # the next request starts, and stops
            answer = await read_to_end(reader)
            assert status(answer) == 408
            assert answer.endswith(b"the request head did not arrive within 1 seconds\n")

    async def idle_kept_alive() -> None:  # uvicorn's timeout_keep_alive, 5 s
        async with raw(node) as (reader, writer):
            writer.write(head(node))
            assert status(await read_response(reader)) == 200
            assert await read_to_end(reader, timeout=10) == b""

    async def slow_body() -> None:  # a whole head, then a body that never comes
        async with raw(node) as (reader, writer):
            writer.write(
                b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{" % node.port
            )
            assert b" 200 " not in await read_to_end(reader)  # closed, never served

    started = time.monotonic()
    await asyncio.gather(
        slow_body(),
        silent(),
        half(head(node)[:30]),
        half(head(node, "/ws", *UPGRADE)[:-2]),  # a WebSocket handshake but its last line
        kept_alive_then_half(),
        idle_kept_alive(),
        health(node),
    )
    assert time.monotonic() - started < 10
    await health(node)


async def test_an_unauthenticated_websocket_is_closed_after_the_auth_timeout(
    node_factory: Any,
) -> None:
    node = node_factory(env=SLOW)
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4001


# -- the socket cap --------------------------------------------------------------------------


async def test_past_limits_sockets_a_connection_gets_503_and_the_log_says_so(
    node_factory: Any,
) -> None:
    node = node_factory(env={"ONIONCHAT_LIMITS_SOCKETS": "20"})
    await asyncio.sleep(0.3)  # the start's health check has closed its connection
    async with contextlib.AsyncExitStack() as stack:
        open_ones = []
        for _ in range(20):  # kept alive (5 s), each served once to be sure it was let in
            reader, writer = await stack.enter_async_context(raw(node))
            writer.write(head(node))
            assert status(await read_response(reader)) == 200
            open_ones.append((reader, writer))
        async with raw(node) as (reader, _):
            refused = await read_to_end(reader)
        assert status(refused) == 503
        assert b"connection: close" in refused.lower()
        assert b"20 connections open" in refused
        # one closes: there is room again
        open_ones[0][1].close()
        await asyncio.sleep(0.2)
        assert status(await exchange(node, head(node, "/api/health", b"Connection: close"))) == 200
        ports = [w.get_extra_info("sockname")[1] for _, w in open_ones]
    high = await log_event(node, "sockets_high")
    assert high["level"] == "warning" and high["open"] == 17 and high["cap"] == 20
    refusal = await log_event(node, "sockets_refused")
    assert refusal["level"] == "warning" and refusal["refused"] == 1 and refusal["cap"] == 20
    logged = node.log_path.read_text()
    assert not any(f":{port}" in logged or f", {port})" in logged for port in ports)
    for entry in (high, refusal):
        assert "127.0.0.1" not in json.dumps(entry)


# -- WebSockets ------------------------------------------------------------------------------


async def test_a_ping_flood_closes_the_websocket_4008_and_others_chat_on(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        for n in range(10):  # within the burst: answered, nothing closed
            await asyncio.wait_for(await alice.ws.ping(b"calm%d" % n), 5)
        token = await register(node, "mallory")
        async with websockets.connect(node.ws_url, proxy=None) as mallory:
            await mallory.send(json.dumps({"v": 1, "type": "auth", "token": token}))
            with pytest.raises(websockets.ConnectionClosed):
                for n in range(100_000):
                    await mallory.ping(b"%d" % n)
                    if n % 50 == 0:
                        await alice.say("lobby", f"still here {n}", ref=f"r{n}")
                        await bob.expect("message", text=f"still here {n}")
                while True:
                    await asyncio.wait_for(mallory.recv(), 5)
            assert mallory.close_code == 4008
            assert mallory.close_reason == "flooding: too many pings"
        # and mallory's reconnections are refused for a while, cheaply: each refusal is held
        # back (an idle socket) rather than answered at once for the next attempt
        async with websockets.connect(node.ws_url, proxy=None) as again:
            await again.send(json.dumps({"v": 1, "type": "auth", "token": token}))
            answer = asyncio.ensure_future(again.recv())
            done, _ = await asyncio.wait({answer}, timeout=1.0)
            assert not done
            await alice.say("lobby", "while mallory waits", ref="waits")
            assert (await bob.expect("message"))["text"] == "while mallory waits"
            refusal = json.loads(await asyncio.wait_for(answer, 10))
            assert (
                refusal["code"] == "too_many"
                and "flooding: mallory may connect again" in (refusal["message"])
            )
            with pytest.raises(websockets.ConnectionClosed):
                await again.recv()
            assert again.close_code == 1013
        await alice.say("lobby", "after the flood", ref="after")
        assert (await bob.expect("message"))["text"] == "after the flood"
        await asyncio.wait_for(await bob.ws.ping(b"still answered"), 5)
    assert (await log_event(node, "ping_flood"))["closed"] == 1


async def test_a_ping_flood_sent_with_the_login_costs_its_user_too(node: NodeProcess) -> None:
    """The flood comes before the node has looked the token up (one burst with the auth
    frame): the penalty still holds from the moment the user is known, so the reconnection
    that follows at once is refused, not taken."""
    token = await register(node, "mallory")
    async with websockets.connect(node.ws_url, proxy=None) as mallory:
        burst = [json.dumps({"v": 1, "type": "auth", "token": token})]
        with pytest.raises(websockets.ConnectionClosed):
            await mallory.send(burst[0])
            for n in range(100_000):
                await mallory.ping(b"%d" % n)
            while True:
                await asyncio.wait_for(mallory.recv(), 5)
    # (the close frame may go unread by a client that only writes: then it sees 1006)
    async with websockets.connect(node.ws_url, proxy=None) as again:
        await again.send(burst[0])
        refusal = json.loads(await asyncio.wait_for(again.recv(), 10))
        assert refusal["type"] == "error" and refusal["code"] == "too_many", refusal
        assert "flooding: mallory may connect again" in refusal["message"]
    assert (await log_event(node, "ping_flood"))["closed"] == 1


async def test_invalid_utf8_closes_1007_and_logs_no_traceback(node: NodeProcess) -> None:
    async with user(node, "alice") as alice:
        await alice.ws.send(b'{"v":1,"type":"ping","ref":"\xc3\x28"}', text=True)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await alice.recv()
        assert alice.ws.close_code == 1007
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        said = [e for e in node.events() if e["msg"].startswith("Invalid UTF-8")]
        if said:
            break
        await asyncio.sleep(0.05)
    assert said and said[0]["level"] == "warning", node.log_path.read_text()[-2000:]
    assert not [e for e in node.events() if "traceback" in e], node.log_path.read_text()[-3000:]


async def test_held_refusals_are_bounded_past_that_answered_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flooder's refusals are held back as idle sockets, but never more than `app.HELD`
    of them: past that, each is answered at once (so they cannot pile up either)."""
    from onionchat import app

    monkeypatch.setattr(app, "HELD", 2)
    monkeypatch.setattr(app, "HOLD", 30.0)
    waiting = app.Waiting()
    held = [asyncio.create_task(waiting.hold(20.0)) for _ in range(2)]
    await asyncio.sleep(0)
    assert waiting.held == 2
    await asyncio.wait_for(waiting.hold(20.0), 1)  # the third: not held
    await asyncio.wait_for(waiting.hold(0.0), 1)  # and no penalty, no hold
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert waiting.held == 0
