"""Attacks of issue 10, each reproduced against a real node, each shown to fail now, with honest
users beside the attacker noticing nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil
import pytest
import websockets
from playwright.async_api import Browser
from websockets.asyncio.client import ClientConnection

from onionchat import logs
from onionchat.config import Limits, Settings
from onionchat.store import Room, Store

from conftest import PASSWORD, NodeProcess, b64url, connect, login, register, user

CONTROL = "\u0001" * 4000  # escaped to six bytes each in JSON: 24 KB a message on the wire
# Frames and history pages as fast as they go: these tests push the bounds in bytes, with
# history pages as the cheapest way to make the node write (their own rate is tested apart)
FLOOD = {
    "ONIONCHAT_LIMITS_RATE": "1000",
    "ONIONCHAT_LIMITS_BURST": "1000",
    "ONIONCHAT_LIMITS_HISTORY_RATE": "1000",
}


def rss_peak(node: NodeProcess) -> int:
    """The node's peak resident memory (VmHWM), in bytes."""
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def fill_history(node: NodeProcess, room: str, count: int, text: str) -> None:
    async with user(node, "filler") as filler:
        await filler.join(room)
        for i in range(count):
            await filler.say(room, text, ref=str(i))


@contextlib.asynccontextmanager
async def non_reader(node: NodeProcess, token: str) -> AsyncIterator[ClientConnection]:
    """A member of #lobby whose socket takes in next to nothing (4 KiB) and who never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    async with websockets.connect(node.ws_url, sock=sock, proxy=None, max_queue=1) as ws:
        await ws.send(json.dumps({"v": 1, "type": "auth", "token": token}))
        await ws.send(json.dumps({"v": 1, "type": "join", "room": "lobby"}))
        yield ws


# -- memory: what waits for a client is bounded in bytes -------------------------------------


async def test_a_client_that_never_reads_is_closed_and_the_node_stays_small(
    node_factory: Any,
) -> None:
    node = node_factory(env=FLOOD)
    await fill_history(node, "lobby", 200, CONTROL)
    before = rss_peak(node)
    token = await register(node, "mallory")
    async with user(node, "alice") as alice, non_reader(node, token) as mallory:
        await alice.join("lobby")
        request = json.dumps({"v": 1, "type": "history", "room": "lobby", "limit": 200})
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(2000):  # once 4.8 MB each; today a page is cut to 256 KiB
                await asyncio.wait_for(mallory.send(request), 5)
                if any(e.get("code") == 4009 for e in node.events() if e["event"] == "disconnect"):
                    break
        assert any(e.get("code") == 4009 for e in node.events() if e["event"] == "disconnect")
        # alice noticed nothing
        ack = await alice.say("lobby", "still here", ref="after")
        assert ack["type"] == "ack"
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(10_000):
                await asyncio.wait_for(mallory.recv(), 10)
        assert mallory.close_code == 4009 and "too slow" in (mallory.close_reason or "")
    assert rss_peak(node) - before < 64 * 2**20


async def test_a_client_that_never_reads_does_not_keep_its_socket(node_factory: Any) -> None:
    """Closed as too slow, its socket still held unsent bytes: it is let go all the same."""
    node = node_factory(env=FLOOD)
    await fill_history(node, "lobby", 40, CONTROL)
    assert node.proc is not None
    descriptors = Path(f"/proc/{node.proc.pid}/fd")
    before = len(list(descriptors.iterdir()))
    token = await register(node, "mallory")
    async with non_reader(node, token) as mallory:
        request = json.dumps({"v": 1, "type": "history", "room": "lobby", "limit": 200})
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            for _ in range(200):
                await asyncio.wait_for(mallory.send(request), 2)
        for _ in range(400):  # the node lets go within about 15 s; mallory still reads nothing
            if len(list(descriptors.iterdir())) <= before:
                break
            await asyncio.sleep(0.1)
        assert len(list(descriptors.iterdir())) <= before


async def test_a_history_page_is_cut_to_its_byte_budget(node_factory: Any) -> None:
    node = node_factory(env=FLOOD)
    await fill_history(node, "lobby", 60, CONTROL)
    async with user(node, "alice") as alice:
        joined = await alice.join("lobby")
        assert 0 < len(joined["history"]) < 50 and joined["more"]
        await alice.send(type="history", room="lobby", limit=200, ref="h")
        page = await alice.expect("history", ref="h")
        size = sum(len(json.dumps(m, separators=(",", ":"))) for m in page["messages"])
        assert size <= 256 * 1024 and page["more"]
        # paging on from the oldest one shown reaches every message, none twice
        seen = [m["id"] for m in page["messages"]]
        while page["more"]:
            await alice.send(type="history", room="lobby", before=seen[0], limit=200, ref="p")
            page = await alice.expect("history", ref="p")
            seen[:0] = [m["id"] for m in page["messages"]]
        assert len(seen) == len(set(seen)) == 60


async def test_one_user_cannot_hold_more_than_their_share(node_factory: Any) -> None:
    """Several connections of one user share one budget: opening more does not buy more."""
    node = node_factory(
        env={
            **FLOOD,
            "ONIONCHAT_LIMITS_SEND_QUEUE_BYTES": "4194304",
            "ONIONCHAT_LIMITS_USER_QUEUE_BYTES": "1048576",
        }
    )
    await fill_history(node, "lobby", 40, CONTROL)
    token = await register(node, "mallory")
    request = json.dumps({"v": 1, "type": "history", "room": "lobby", "limit": 200})
    async with contextlib.AsyncExitStack() as stack:
        socks = []
        for _ in range(3):
            socks.append(await stack.enter_async_context(non_reader(node, token)))
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(200):
                for ws in socks:
                    await asyncio.wait_for(ws.send(request), 5)
        reasons = []
        for ws in socks:
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                for _ in range(10_000):
                    await asyncio.wait_for(ws.recv(), 3)
            reasons.append((ws.close_code, ws.close_reason or ""))
        assert (4009, "too slow: over 1024 KiB were waiting for this user") in reasons


async def test_a_client_that_stops_reading_in_a_quiet_room_is_cut_off(node_factory: Any) -> None:
    """Not enough waits for it to be closed as too slow (the bound is set high here), but it
    reads nothing: after `limits.write_timeout` its socket is let go, descriptors with it."""
    node = node_factory(
        env={
            "ONIONCHAT_LIMITS_WRITE_TIMEOUT": "2",
            "ONIONCHAT_LIMITS_SEND_QUEUE_BYTES": str(256 * 2**20),
            "ONIONCHAT_LIMITS_USER_QUEUE_BYTES": str(256 * 2**20),
            "ONIONCHAT_LIMITS_RATE": "1000",
            "ONIONCHAT_LIMITS_BURST": "1000",
        }
    )
    await fill_history(node, "lobby", 40, CONTROL)
    assert node.proc is not None
    descriptors = Path(f"/proc/{node.proc.pid}/fd")
    before = len(list(descriptors.iterdir()))
    token = await register(node, "mallory")
    async with non_reader(node, token) as mallory:
        for _ in range(40):  # 10 MB: more than the kernel's buffers take
            await mallory.send(json.dumps({"v": 1, "type": "history", "room": "lobby"}))
        for _ in range(200):
            if any(e["event"] == "disconnect" and e["user"] == "mallory" for e in node.events()):
                break
            await asyncio.sleep(0.1)
        mine = [e for e in node.events() if e["event"] == "disconnect" and e["user"] == "mallory"]
        assert mine and mine[0].get("code") != 4009  # cut off, not closed as too slow
        for _ in range(100):
            if len(list(descriptors.iterdir())) <= before:
                break
            await asyncio.sleep(0.1)
        assert len(list(descriptors.iterdir())) <= before


# -- connections: caps, each with a clear refusal ---------------------------------------------


async def test_connection_caps_refuse_clearly(node_factory: Any) -> None:
    node = node_factory(
        env={
            "ONIONCHAT_LIMITS_USER_CONNECTIONS": "2",
            "ONIONCHAT_LIMITS_CONNECTIONS": "3",
            "ONIONCHAT_LIMITS_UNAUTHENTICATED": "2",
            "ONIONCHAT_AUTH_AUTH_TIMEOUT": "2",
        }
    )
    alice_token = await register(node, "alice")
    bob_token = await register(node, "bob")
    carol_token = await register(node, "carol")
    async with connect(node, alice_token) as a1, connect(node, alice_token):
        async with websockets.connect(node.ws_url, proxy=None) as a3:
            await a3.send(json.dumps({"v": 1, "type": "auth", "token": alice_token}))
            refusal = json.loads(await a3.recv())
            assert refusal["code"] == "too_many" and "2 connections open" in refusal["message"]
            with pytest.raises(websockets.ConnectionClosed):
                await a3.recv()
            assert a3.close_code == 1013
        await a1.join("lobby")
        async with connect(node, bob_token) as bob:
            async with websockets.connect(node.ws_url, proxy=None) as c:
                await c.send(json.dumps({"v": 1, "type": "auth", "token": carol_token}))
                refusal = json.loads(await c.recv())
                assert "the node is full" in refusal["message"]
            # no-JS pages count too, and say why in a page
            async with httpx.AsyncClient(base_url=node.url) as http:
                http.cookies.set("onionchat_session", carol_token)
                page = await http.get("/nojs/room/lobby")
                assert page.status_code == 503 and "the node is full" in page.text
            await bob.send(type="ping", ref="p")
            await bob.expect("pong", ref="p")
        # sockets that never authenticate: a cap, then the timeout
        async with (
            websockets.connect(node.ws_url, proxy=None) as s1,
            websockets.connect(node.ws_url, proxy=None) as s2,
            websockets.connect(node.ws_url, proxy=None) as s3,
        ):
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(s3.recv(), 5)
            assert s3.close_code == 1013
            for waiting in (s1, s2):
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(waiting.recv(), 10)
                assert waiting.close_code == 4001
        await a1.send(type="ping", ref="still")
        await a1.expect("pong", ref="still")
    assert any(e["event"] == "refused" for e in node.events())


# -- frames that cost more than they look ---------------------------------------------------


async def test_deep_nesting_is_a_bad_frame_not_a_traceback(node: NodeProcess) -> None:
    deep = '{"v":1,"type":"ping","ref":"d","x":' + "[" * 1000 + "]" * 1000 + "}"
    async with websockets.connect(node.ws_url, proxy=None) as ws:  # before logging in
        await ws.send(deep)
        assert json.loads(await ws.recv())["code"] == "too_large"  # 1 KiB before auth
        await ws.send(deep[:400] + "]" * 340 + "}")
        assert json.loads(await ws.recv())["code"] in ("bad_frame", "bad_json")
        token = await register(node, "alice")
        await ws.send(json.dumps({"v": 1, "type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(deep)
        assert json.loads(await ws.recv())["code"] == "bad_frame"
        await ws.send(json.dumps({"v": 1, "type": "ping", "ref": "alive"}))
        assert json.loads(await ws.recv())["type"] == "pong"
    text = node.log_path.read_text()
    assert "Traceback" not in text and "Exception in ASGI" not in text


async def test_room_creation_and_joins_have_quotas(node_factory: Any) -> None:
    node = node_factory(
        env={"ONIONCHAT_LIMITS_ROOM_CREATIONS": "3", "ONIONCHAT_LIMITS_JOIN_RATE": "0.2"}
    )
    async with user(node, "alice") as alice:
        for i in range(3):
            await alice.join(f"mine{i}")
        await alice.send(type="join", room="mine3", create=True, ref="4th")
        refused = await alice.expect("error", ref="4th")
        assert refused["code"] == "rate_limited" and "3 rooms this hour" in refused["message"]
    async with user(node, "bob") as bob:  # bob's own quota is untouched
        await bob.join("bobs")
        # joins: a burst of 10 (50 x 0.2 a second), then they are refused
        outcomes = []
        for i in range(12):
            for line, ref in ((f"/join mine{i % 3}", f"j{i}"), (f"/leave mine{i % 3}", f"l{i}")):
                await bob.send(type="command", line=line, room="bobs", ref=ref)
                frame = await bob.recv()
                while frame.get("ref") != ref:
                    frame = await bob.recv()
                outcomes.append(frame.get("code", frame["type"]))
        joins = outcomes[::2]
        assert joins[:9] == ["joined"] * 9 and "rate_limited" in joins[9:]
    # no-JS page views join rooms too (each page its own connection), at the same rate
    await register(node, "carol")
    statuses = []
    for _ in range(4):  # four sessions, as four browsers would have
        token = (await login(node, "carol")).json()["token"]
        async with httpx.AsyncClient(base_url=node.url) as http:
            http.cookies.set("onionchat_session", token)
            for i in range(3):
                page = await http.get(f"/nojs/room/mine{i}")
                statuses.append(page.status_code)
    assert statuses[:10] == [200] * 10 and 429 in statuses[10:]
    assert "slow down" in page.text


# -- login CSRF and DNS rebinding -----------------------------------------------------------


ATTACK_PAGE = """<!doctype html><html><head><meta name="referrer" content="no-referrer"></head>
<body><form id="f" method="post" action="{action}">
<input name="username" value="mallory"><input name="password" value="{password}">
</form><script>document.getElementById("f").submit()</script></body></html>"""


async def serve_page(html: str) -> tuple[asyncio.Server, int]:
    """Another site (another origin: localhost, not 127.0.0.1) serving one page."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            body = html.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_cross_site_form_cannot_log_a_browser_in(
    node: NodeProcess, browser: Browser
) -> None:
    await register(node, "mallory")
    page_html = ATTACK_PAGE.format(action=f"{node.url}/nojs/login", password=PASSWORD)
    server, port = await serve_page(page_html)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        async with page.expect_response(re.compile(r"/nojs/login$")) as posted:
            await page.goto(f"http://localhost:{port}/")
        assert (await posted.value).status == 403
        await page.goto(f"{node.url}/nojs/rooms")
        assert page.url.endswith("/nojs/login"), "the browser was logged in as mallory"
        # the node's own form still works, though it sends Origin: null
        form = page.locator("form[action='/nojs/login']")
        await form.get_by_label("Name").fill("mallory")
        await form.get_by_label("Password").fill(PASSWORD)
        await form.get_by_role("button", name="Log in").click()
        await page.wait_for_url(re.compile(r"/nojs/rooms$"))
        await context.close()
    finally:
        server.close()


async def test_only_the_nodes_own_host_names_are_answered(node_factory: Any) -> None:
    node = node_factory(env={"ONIONCHAT_SERVER_HOSTS": "chat.example"})
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/api/health")).status_code == 200
        for host in (f"localhost:{node.port}", "chat.example", "[::1]:80"):
            assert (await http.get("/api/health", headers={"host": host})).status_code == 200
        rebound = await http.get("/", headers={"host": "attacker.example"})
        assert rebound.status_code == 421 and "host name" in rebound.text
    for hosts in (["attacker.example"], [f"127.0.0.1:{node.port}", "attacker.example"]):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        head = "".join(f"Host: {h}\r\n" for h in hosts)
        handshake = (
            f"GET /ws HTTP/1.1\r\n{head}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(handshake.encode())
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split()[1] == b"403", status
        writer.close()


# -- password work on the node --------------------------------------------------------------


async def nojs_token(http: httpx.AsyncClient) -> str:
    page = await http.get("/nojs/login")
    found = re.search(r'name="token" value="(\w+)"', page.text)
    assert found is not None
    return found[1]


async def test_abandoned_no_js_logins_cost_no_derivation(node_factory: Any) -> None:
    node = node_factory(
        env={"ONIONCHAT_AUTH_DERIVATIONS": "3", "ONIONCHAT_AUTH_MAX_ITERATIONS": "10000000"}
    )
    async with httpx.AsyncClient(base_url=node.url) as http:
        body = {"username": "heavy", "salt": b64url(bytes(16)), "secret": b64url(bytes(32))}
        # 10 million iterations: two seconds of work a derivation here
        response = await http.post("/api/register", json={**body, "iterations": 10_000_000})
        assert response.status_code == 201
        http.cookies.clear()  # logged out again: the attacker only knows the name
        token = await nojs_token(http)
        cookie = f"onionchat_form={http.cookies['onionchat_form']}"
    form = f"username=heavy&password=x&token={token}".encode()
    head = (
        f"POST /nojs/login HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nCookie: {cookie}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n\r\n"
    ).encode()
    # Eight at once: two derive, three wait, three are refused with no work at all.
    streams = [await asyncio.open_connection("127.0.0.1", node.port) for _ in range(8)]
    for _, writer in streams:
        writer.write(head + form)
        await writer.drain()

    async def status(reader: asyncio.StreamReader) -> bytes:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(reader.readline(), 1.5)
        return b""

    lines = await asyncio.gather(*(status(reader) for reader, _ in streams))
    assert sum(b" 429 " in line for line in lines) == 3 and lines.count(b"") == 5
    for _, writer in streams:  # and everyone hangs up
        writer.close()
    for _ in range(100):
        dropped = [e for e in node.events() if e["event"] == "dropped"]
        if len(dropped) >= 3:
            break
        await asyncio.sleep(0.1)
    assert len(dropped) == 3
    # an honest no-JS login goes through right after
    await register(node, "honest")
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
        token = await nojs_token(http)
        data = {"username": "honest", "password": PASSWORD, "token": token}
        assert (await http.post("/nojs/login", data=data)).status_code == 303


# -- logs and files -------------------------------------------------------------------------


def test_a_log_field_cannot_forge_a_line() -> None:
    record = logging.LogRecord("onionchat", logging.INFO, "", 0, "login", None, None)
    record.user = "x\n2026-12-01T00:00:00.000+00:00 INFO    login  user=admin\u202e"
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and "\u202e" not in line and "\\x0a2026" in line
    assert "\n" not in logs.JsonFormatter().format(record)


async def test_the_log_keeps_no_attempted_names_nor_who_writes_to_whom(
    node_factory: Any,
) -> None:
    node = node_factory("--log-level", "debug")  # a line per message, too
    async with httpx.AsyncClient(base_url=node.url) as http:
        await http.post(
            "/api/login", json={"username": "guessed-name", "secret": b64url(bytes(32))}
        )
    async with user(node, "bob") as bob, user(node, "mallory"):
        await bob.send(type="send", to="mallory", text="hello there", ref="d")
        await bob.expect("ack", ref="d")
    text = node.log_path.read_text()
    assert "guessed-name" not in text
    assert "bob+mallory" not in text and "hello there" not in text
    direct = [e for e in node.events() if e["event"] == "direct"]
    assert len(direct) == 1 and set(direct[0]) >= {"id"} and "room" not in direct[0]


async def test_an_open_data_directory_is_closed_at_start(node_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    node = node_factory()
    assert node.data_dir == data and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert any(e["event"] == "fixed" for e in node.events())


# -- the store is shared by every transport: direct checks of the node's core ------------------


async def test_the_history_budget_holds_in_the_core(tmp_path: Path) -> None:
    """A single message larger than the budget still comes (alone): a page is never empty."""
    from onionchat.node import Node
    from onionchat.protocol import Message

    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        room: Room = await store.create_room("big", False)
        for i in range(3):
            await store.add_message(
                room.id, Message(id=f"{i:026d}", room="big", ts=i, sender="a", text="y" * 20000)
            )
        settings = Settings()
        node = Node(settings, store, None)  # type: ignore[arg-type]
        raw, more = await node._page(room, None, 50)
        page = [msgspec.json.decode(m) for m in raw]
        assert [len(m["text"]) for m in page] == [20000, 20000, 20000] and not more
        tight = Node(Settings(limits=Limits(history_bytes=16 * 1024)), store, None)  # type: ignore[arg-type]
        raw, more = await tight._page(room, None, 50)
        page = [msgspec.json.decode(m) for m in raw]
        assert len(page) == 1 and page[0]["id"] == f"{2:026d}" and more
        # The store reads newest first, a batch at a time, only as far as it is asked.
        newest = store.newest(room, None, 50)
        assert (await anext(newest)).id == f"{2:026d}"
        await newest.aclose()
    finally:
        await store.close()


async def test_password_work_runs_at_the_lowest_priority() -> None:
    """Hashing takes only the CPU the chat leaves (SCHED_IDLE, nice 19), in a process of its
    own: a thread that low would hold the event loop's GIL whenever the scheduler passed it by."""
    from onionchat.background import Workers

    workers = Workers(1)
    try:
        pid = await workers.run(os.getpid)
        assert pid != os.getpid()
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    finally:
        workers.close()


def running(process: psutil.Process) -> bool:
    """Alive, not a zombie waiting for whoever adopted it to reap it."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_a_killed_node_leaves_no_hashing_process_behind(node: NodeProcess) -> None:
    """SIGKILL gives a node no chance to stop its workers: they see it and leave by themselves,
    with nothing of theirs (a fork server, a resource tracker) still running."""
    await register(node, "alice")
    await login(node, "alice")
    assert node.proc is not None
    workers = psutil.Process(node.proc.pid).children(recursive=True)
    assert workers, "hashing ran in no process of the node's"
    node.proc.kill()
    node.proc.wait(5)
    deadline = time.monotonic() + 10
    while (left := [p for p in workers if running(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for process in left:  # ours, recorded before the kill: do not leave them to the next test
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not left, f"still running 10 s after the node was killed: {[p.pid for p in left]}"


def test_clients_faults_cannot_fill_the_log() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("info", "json")
    uvicorn_error = logging.getLogger("uvicorn.error")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    uvicorn_error.addHandler(keep)
    try:
        for _ in range(1000):
            uvicorn_error.warning("Invalid HTTP request received.")
        uvicorn_error.error("something else")
    finally:
        uvicorn_error.removeHandler(keep)
        root.handlers[:], root.level = saved[0], saved[1]
    assert [r.getMessage() for r in seen] == ["Invalid HTTP request received.", "something else"]
