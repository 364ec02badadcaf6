"""The attackers of the `hostile` mode, each kind in processes of its own.

The mode starts them (`Attackers`, spawned processes whose handles and PIDs it keeps), waits
until they attack, measures the honest clients beside them, and stops them. Each process runs
one asyncio loop (uvloop when available) with its share of the attackers, stops by itself
after `max_seconds`, and answers "stop" with a tally of what its attackers did.

Kinds (`KINDS`):

- `history`: authenticated WebSocket members of the room with a small SO_RCVBUF that, once
  joined, never read again and ask for history pages (limit 200) as fast as the node's rate
  limit lets them (the rate and burst of its `ready` frame); they reconnect when dropped.
- `headers`: raw TCP connections sending `GET / HTTP/1.1`, a Host and an endless `X-Flood:`
  header, as fast as the socket takes it, up to `bytes` per connection; they reconnect when
  the node closes (or answers).
- `slowloris`: many raw TCP sockets per attacker, each sending a request head one byte every
  `interval` seconds and never finishing it; reconnect when closed.
- `pings`: authenticated WebSockets writing PING control frames as fast as the socket takes
  them (and reading what comes back); reconnect when closed.
- `logins`: `POST /api/login` with random secrets over a list of names, `concurrency` in
  flight (one "attacker" per slot), as fast as the answers come.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from bench.onionchat_target import Frame, OnionChatClient
from bench.target import HOST, ChatClient
from bench.wsclient import OP_PING, OP_TEXT, client_frame

Conn = multiprocessing.connection.Connection


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return int(soft)


def _why(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:80]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the tally of one process ----------------------------------------------------------------


class Tally:
    """What the attackers of one process did: counts, maxima, counted labels and samples."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.peaks: dict[str, float] = {}
        self.labels: dict[str, Counter[str]] = {}
        self.samples: dict[str, list[float]] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def peak(self, key: str, value: float) -> None:
        if value > self.peaks.get(key, float("-inf")):
            self.peaks[key] = value

    def label(self, group: str, value: str) -> None:
        self.labels.setdefault(group, Counter())[value] += 1

    def sample(self, key: str, value: float) -> None:
        values = self.samples.setdefault(key, [])
        if len(values) < 200_000:
            values.append(value)

    def asdict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "peaks": self.peaks,
            "labels": {g: dict(c.most_common(20)) for g, c in self.labels.items()},
            "samples": self.samples,
        }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The tallies of several processes as one (counts and labels add up, peaks take the
    highest; peaks of open sockets add up too, the processes holding them at once)."""
    counts: Counter[str] = Counter()
    peaks: dict[str, float] = {}
    labels: dict[str, Counter[str]] = {}
    samples: dict[str, list[float]] = {}
    for part in parts:
        counts.update(part.get("counts", {}))
        for key, value in part.get("peaks", {}).items():
            if key.startswith("open"):
                peaks[key] = peaks.get(key, 0) + value
            else:
                peaks[key] = max(peaks.get(key, value), value)
        for group, values in part.get("labels", {}).items():
            labels.setdefault(group, Counter()).update(values)
        for key, values in part.get("samples", {}).items():
            samples.setdefault(key, []).extend(values)
    return {
        "counts": dict(counts),
        "peaks": peaks,
        "labels": {g: dict(c.most_common(20)) for g, c in labels.items()},
        "samples": samples,
    }


# -- what every attacker shares ----------------------------------------------------------------


class Ctx:
    """One process's parameters, tally, stop and ready events, and what it must close."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.p = params
        self.port = int(params["port"])
        self.t = Tally()
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.sockets: set[socket.socket] = set()
        self.clients: set[OnionChatClient] = set()
        self.http: Any = None

    async def sleep(self, seconds: float) -> None:
        """Sleep, or less if the attack is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.wait()

    async def connect(self, sndbuf: int = 0) -> socket.socket | None:
        """A connected non-blocking TCP socket to the node, or None (the failure counted)."""
        loop = asyncio.get_running_loop()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.t.label("connect_failed", _why(exc))
            return None
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(5.0):
                await loop.sock_connect(sock, (HOST, self.port))
        except (OSError, TimeoutError) as exc:
            sock.close()
            self.t.label("connect_failed", _why(exc))
            return None
        self.sockets.add(sock)
        self.t.add("connections")
        return sock

    def drop(self, sock: socket.socket) -> None:
        self.sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def close_all(self) -> None:
        for sock in list(self.sockets):
            self.drop(sock)
        for client in list(self.clients):
            client.abort()
        self.clients.clear()


async def _writable(sock: socket.socket, timeout: float) -> bool:
    """Wait until the socket can take more bytes (True), or `timeout`."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_writer(fd, ready)
    try:
        async with asyncio.timeout(timeout):
            await future
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_writer(fd)


async def _answer(sock: socket.socket) -> str:
    """The first thing the node says on a raw connection: its status, or how it ended."""
    loop = asyncio.get_running_loop()
    try:
        data = await loop.sock_recv(sock, 4096)
    except OSError as exc:
        return type(exc).__name__
    if not data:
        return "closed without an answer"
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    return parts[1] if len(parts) > 1 and line.startswith("HTTP/") else line[:40]


class Member(OnionChatClient):
    """An authenticated WebSocket of an attacker (or of the history fill)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.sink = self

    async def enter(
        self,
        port: int,
        token: str,
        room: str | None = None,
        rcvbuf: int | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Connect, authenticate, maybe join `room`; the node's limits from `ready`."""
        async with asyncio.timeout(timeout):
            await self.open(HOST, port, "/ws", rcvbuf=rcvbuf)
            waiter = self._expect("ready")
            self.send_text(b'{"v":1,"type":"auth","token":' + msgspec.json.encode(token) + b"}")
            _, payload, _ = await waiter
            if room is not None:
                await self.join(room)
        for line in payload.split(b"\n"):
            if b'"ready"' in line:
                frame = msgspec.json.decode(line)
                if isinstance(frame, dict) and frame.get("type") == "ready":
                    limits = frame.get("limits")
                    return limits if isinstance(limits, dict) else {}
        return {}

    async def say(self, room: str, text: str, timeout: float = 15.0) -> str:
        """Send a chat message; its id once acknowledged (RequestError if refused)."""
        ref = self._ref()
        waiter = self._expect(ref)
        self.send_message(room, text, ref)
        async with asyncio.timeout(timeout):
            frame, _, _ = await waiter
        return frame.id or ""

    # the Sink of its own acks
    def message(self, client: ChatClient, text: str, now: int) -> None:
        pass

    def ack(self, client: ChatClient, ref: str | None, id: str | None, now: int) -> None:
        waiter = self.pending.pop(ref, None) if ref is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result((Frame(type="ack", ref=ref, id=id), b"", now))


# -- the kinds -----------------------------------------------------------------------------------


async def history(c: Ctx, i: int) -> None:
    """A member that never reads and asks for big history pages at the node's rate limit."""
    p = c.p
    token = p["tokens"][i]
    frame = b'{"v":1,"type":"history","room":' + msgspec.json.encode(p["room"]) + b',"limit":200}'
    wire = client_frame(OP_TEXT, frame)
    while not c.stop.is_set():
        client = Member(i)
        try:
            limits = await client.enter(c.port, token, p["room"], rcvbuf=p["rcvbuf"])
        except Exception as exc:
            client.abort()
            c.t.label("setup_failed", _why(exc))
            await c.sleep(0.5)
            continue
        c.clients.add(client)
        c.t.add("connections")
        transport = client.transport
        assert transport is not None
        transport.pause_reading()  # from now on it never reads: its buffers fill up
        c.t.add("members_joined")
        rate = float(p.get("rate") or limits.get("rate") or 20.0) * 0.95
        burst = float(p.get("burst") or limits.get("burst") or 60) * 0.9
        tokens, last = burst, time.monotonic()
        opened = last
        blocked_since = 0.0
        c.ready.set()
        while not c.stop.is_set() and not client.closed.done():
            now = time.monotonic()
            tokens = min(burst, tokens + (now - last) * rate)
            last = now
            if transport.get_write_buffer_size() > 64 * 1024:
                # the node stopped reading it: wait, and note for how long
                blocked_since = blocked_since or now
                await c.sleep(0.05)
                continue
            if blocked_since:
                c.t.sample("blocked_s", now - blocked_since)
                blocked_since = 0.0
            while tokens >= 1.0:
                transport.write(wire)
                tokens -= 1.0
                c.t.add("history_requests")
                c.t.add("bytes_sent", len(wire))
            await asyncio.sleep(max(0.002, (1.0 - tokens) / rate))
        now = time.monotonic()
        if blocked_since:
            c.t.sample("blocked_s", now - blocked_since)
            c.t.add("ended_blocked")
        if client.closed.done() and not c.stop.is_set():
            c.t.add("closed_by_node")
            c.t.sample("alive_s", now - opened)
        c.t.add("bytes_received_while_joining", client.bytes_in)
        c.clients.discard(client)
        client.abort()
        await c.sleep(0.2)


async def headers(c: Ctx, i: int) -> None:
    """One header flooder: one connection at a time, reconnecting when closed."""
    p = c.p
    head = f"GET / HTTP/1.1\r\nHost: {HOST}:{c.port}\r\nX-Flood: ".encode()
    chunk = memoryview(b"a" * 65536)
    limit = int(p["bytes"])
    while not c.stop.is_set():
        # What the node does not read waits here, not in megabytes of this machine's kernel
        # copied beside the honest clients (4 MiB a connection, 80 MB/s): the node sees the
        # same flood either way.
        sock = await c.connect(sndbuf=int(p.get("sndbuf", 0)))
        if sock is None:
            await c.sleep(0.1)
            continue
        reader = asyncio.create_task(_answer(sock))
        sent = 0
        data = memoryview(head)
        stalled = 0.0
        ended = "stopped"
        try:
            while not c.stop.is_set():
                if reader.done():
                    ended = "answered"
                    break
                if sent >= limit:
                    ended = "reached the limit"
                    break
                try:
                    n = sock.send(data)
                except BlockingIOError:
                    t0 = time.monotonic()
                    if not await _writable(sock, 0.5):
                        stalled += time.monotonic() - t0
                    continue
                except OSError as exc:
                    ended = _why(exc)
                    break
                sent += n
                c.t.add("bytes_sent", n)
                c.ready.set()
                data = data[n:] if n < len(data) else chunk
        finally:
            if ended != "stopped" and not reader.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await asyncio.shield(reader)
            if reader.done():
                c.t.label("answer", reader.result())
                if not c.stop.is_set():
                    c.t.add("closed_by_node")
            reader.cancel()
            c.drop(sock)
        c.t.label("ended", ended)
        c.t.sample("bytes_per_connection", sent)
        c.t.peak("max_bytes_one_connection", sent)
        if stalled:
            c.t.sample("stalled_s", stalled)


async def slowloris(c: Ctx, i: int) -> None:
    """One slowloris attacker: `sockets` sockets, each trickling a request head."""
    n = int(c.p["sockets"])
    await asyncio.gather(*(_slow_socket(c, i * n + j, n) for j in range(n)))


async def _slow_socket(c: Ctx, k: int, per_attacker: int) -> None:
    p = c.p
    interval = float(p["interval"])
    head = (
        f"GET /?slow={k} HTTP/1.1\r\nHost: {HOST}:{c.port}\r\nUser-Agent: slow\r\nX-Slow-{k}: "
        + "a" * 100_000
    ).encode()
    planned = int(p["planned"])
    # spread the first connects over a second, and the bytes over the interval
    await c.sleep(random.random())
    while not c.stop.is_set():
        sock = await c.connect()
        if sock is None:
            await c.sleep(1.0)
            continue
        c.t.counts["open_now"] += 1
        c.t.peak("open_sockets", c.t.counts["open_now"])
        if c.t.counts["open_now"] >= 0.9 * planned:
            c.ready.set()
        reader = asyncio.create_task(_answer(sock))
        opened = time.monotonic()
        pos = 0
        try:
            while not c.stop.is_set():
                try:
                    pos += sock.send(head[pos : pos + 1])
                    c.t.add("bytes_sent")
                except BlockingIOError:
                    pass
                except OSError as exc:
                    c.t.label("ended", _why(exc))
                    break
                if pos >= len(head):
                    break
                pause = interval * (0.9 + 0.2 * random.random())
                done, _ = await asyncio.wait({reader}, timeout=pause)
                if done:
                    break
        finally:
            c.t.counts["open_now"] -= 1
            if reader.done():
                c.t.label("answer", reader.result())
                if not c.stop.is_set():
                    c.t.add("closed_by_node")
                    c.t.sample("alive_s", time.monotonic() - opened)
            reader.cancel()
            c.drop(sock)
        await c.sleep(0.05)


async def pings(c: Ctx, i: int) -> None:
    """An authenticated WebSocket that writes PING frames as fast as the socket takes them."""
    token = c.p["tokens"][i]
    batch = b"".join(client_frame(OP_PING, b"hostile ping") for _ in range(128))
    while not c.stop.is_set():
        client = Member(i)
        try:
            await client.enter(c.port, token)
        except Exception as exc:
            client.abort()
            c.t.label("setup_failed", _why(exc))
            await c.sleep(0.5)
            continue
        c.clients.add(client)
        c.t.add("connections")
        transport = client.transport
        assert transport is not None
        opened = time.monotonic()
        c.ready.set()
        # As fast as the socket takes them, without spinning while it takes none: the
        # attacker's own CPU is not the node's cost (a real one is elsewhere on Tor).
        transport.set_write_buffer_limits(high=256 * 1024)
        while not c.stop.is_set() and not client.closed.done():
            transport.write(batch)
            c.t.add("pings_sent", 128)
            c.t.add("bytes_sent", len(batch))
            await client.writable()
            await asyncio.sleep(0)
        if client.closed.done() and not c.stop.is_set():
            c.t.add("closed_by_node")
            c.t.label("close_code", str(client.closed.result()))
            c.t.sample("alive_s", time.monotonic() - opened)
        c.t.add("bytes_received", client.bytes_in)
        c.clients.discard(client)
        client.abort()
        await c.sleep(0.05)


async def logins(c: Ctx, i: int) -> None:
    """One slot of the login spray: a login with a random secret as soon as the last is
    answered, over the names in turn."""
    import httpx

    if c.http is None:
        slots = int(c.p["concurrency"])
        c.http = httpx.AsyncClient(
            base_url=f"http://{HOST}:{c.port}",
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            timeout=30.0,
            trust_env=False,
        )
    http: httpx.AsyncClient = c.http
    names: list[str] = c.p["names"]
    step = int(c.p["concurrency"])
    k = i
    while not c.stop.is_set():
        name = names[k % len(names)]
        k += step
        secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        t0 = time.monotonic()
        try:
            r = await http.post("/api/login", json={"username": name, "secret": secret})
        except httpx.HTTPError as exc:
            c.t.label("error", _why(exc))
            await c.sleep(0.05)
            continue
        ms = (time.monotonic() - t0) * 1000
        c.t.add("requests")
        c.t.label("status", str(r.status_code))
        c.t.sample(f"ms_{r.status_code}", ms)
        if r.status_code == 429:
            with contextlib.suppress(ValueError):
                c.t.peak("max_retry_after_s", float(r.headers.get("retry-after", "0")))
        c.ready.set()


KINDS: dict[str, Callable[[Ctx, int], Coroutine[Any, Any, None]]] = {
    "history": history,
    "headers": headers,
    "slowloris": slowloris,
    "pings": pings,
    "logins": logins,
}


# -- one attacker process ------------------------------------------------------------------------


async def _serve(conn: Conn, kind: str, params: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    c = Ctx(params)
    fd = conn.fileno()

    def readable() -> None:  # any message, or the pipe closing, means stop
        loop.remove_reader(fd)
        c.stop.set()

    loop.add_reader(fd, readable)
    started = time.monotonic()
    attack = KINDS[kind]
    tasks = [asyncio.create_task(attack(c, i)) for i in params["attackers"]]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(float(params.get("ready_timeout", 30.0))):
            await c.ready.wait()
    os.set_blocking(fd, True)
    conn.send(("ready", {"ready": c.ready.is_set(), "after_s": time.monotonic() - started}))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(float(params["max_seconds"])):
            await c.stop.wait()
    c.stop.set()
    _, pending = await asyncio.wait(tasks, timeout=3.0)
    for task in pending:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            c.t.label("crashed", _why(result))
    c.close_all()
    if c.http is not None:
        with contextlib.suppress(Exception):
            await c.http.aclose()
    c.t.counts.pop("open_now", None)
    out = c.t.asdict() | {"seconds": time.monotonic() - started, "sched_idle": _idle()}
    os.set_blocking(fd, True)
    conn.send(("stats", out))


def _idle() -> bool:
    try:
        return os.sched_getscheduler(0) == os.SCHED_IDLE
    except (OSError, AttributeError):
        return False


def attacker_main(conn: Conn, kind: str, params: dict[str, Any]) -> None:
    """Entry point of an attacker process."""
    fds = raise_fd_limit()
    params = params | {"fd_limit": fds}
    with contextlib.suppress(OSError):
        os.nice(int(params.get("nice", 0)))
    if params.get("idle"):
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    runner(_serve(conn, kind, params))


class Attackers:
    """The attacker processes of one step: started, waited for, stopped; only these."""

    def __init__(self, kind: str, params: list[dict[str, Any]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.conns: list[Conn] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for p in params:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=attacker_main, args=(child, kind, p), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.ready: list[dict[str, Any]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def wait_ready(self, timeout: float = 45.0) -> bool:
        """Until every process attacks (or says it could not); True if all do."""
        end = time.monotonic() + timeout
        for conn in self.conns:
            if not conn.poll(max(0.0, end - time.monotonic())):
                self.ready.append({"ready": False, "after_s": None})
                continue
            try:
                _, info = conn.recv()
            except (EOFError, OSError):
                info = {"ready": False, "after_s": None}
            self.ready.append(info)
        return all(r["ready"] for r in self.ready)

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """Stop every process; their merged tally (and which processes did not answer)."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", None))
        parts: list[dict[str, Any]] = []
        missing = 0
        end = time.monotonic() + timeout
        for conn in self.conns:
            got = False
            while conn.poll(max(0.0, end - time.monotonic())):
                try:
                    what, value = conn.recv()
                except (EOFError, OSError):
                    break
                if what == "stats":
                    parts.append(value)
                    got = True
                    break
            missing += not got
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()  # only the processes this object started
                proc.join(5)
        for conn in self.conns:
            conn.close()
        out = merge(parts)
        out["processes"] = len(self.procs)
        out["processes_without_tally"] = missing
        out["seconds"] = max((p.get("seconds", 0.0) for p in parts), default=None)
        out["sched_idle"] = bool(parts) and all(p.get("sched_idle") for p in parts)
        return out
