"""`python -m bench.p2p`: the loopback experiment behind docs/p2p.md (issue 12, "Without brokers?").

A study, not a feature: it measures what ZeroMQ and py-libp2p would give between nodes, and the
mosquitto + aiomqtt path the nodes use today beside them, so that the doc's claims are figures.
Everything listens on 127.0.0.1, every loop is bounded in count and time, and every process it
starts (subscriber processes, one mosquitto) is ended by the handle kept when it was started.

Tor is not run here. Its two effects that matter are stood in for on loopback: a SOCKS5 server of
our own shows what a ZeroMQ dialer asks the proxy for (a name, or an address resolved locally),
and a relay that holds every chunk for a fixed time shows how many round trips each protocol needs
before its first message: over an onion service each one crosses six relays, and costs hundreds
of milliseconds or more.

The study's extra packages: `pip install pyzmq libp2p` (see docs/p2p.md for the versions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import getpass
import importlib.metadata
import json
import multiprocessing
import os
import platform
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PAYLOAD = 200  # bytes a message, about one chat message in its sealed envelope
HERE = Path(__file__).resolve().parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PACE = 50_000  # messages/s for the slow-subscriber run: the fast one keeps up, the slow cannot
FAKE_ONION = "p2pstudy" + "a" * 48 + ".onion"  # 56 characters, as a v3 onion name; never resolved
Results = dict[str, Any]


# -- small helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def summary_ms(samples_ns: list[int]) -> dict[str, float | int | None]:
    """p50/p99/max in milliseconds (microsecond precision) and the sample count."""
    if not samples_ns:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(samples_ns)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] / 1e6, 3)

    return {"n": len(s), "p50": at(0.50), "p99": at(0.99), "max": round(s[-1] / 1e6, 3)}


def data_message(seq: int) -> bytes:
    """b"d", an 8-byte sequence number, padding: PAYLOAD bytes in all."""
    return b"d" + seq.to_bytes(8, "big") + b"." * (PAYLOAD - 9)


def seq_of(message: bytes) -> int:
    return int.from_bytes(message[1:9], "big")


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


# -- a relay on loopback: SOCKS5 front and added latency -----------------------------------------


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed during the SOCKS5 handshake")
        data += chunk
    return data


class Relay:
    """Forwards TCP connections on 127.0.0.1 to `target`, each chunk held `delay_s` on its way
    (a stand-in for an onion circuit's one-way time), so a protocol's setup time divided by the
    round trip gives the round trips it needs. With `socks`, each connection is a SOCKS5 CONNECT
    first, as tor's SocksPort would see it: the request is recorded, the target is always ours
    (as tor maps an onion name to its service). At most `max_connections`, for at most
    `limit_s` each."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay_s: float = 0.0,
        socks: bool = False,
        max_connections: int = 4,
        limit_s: float = 30.0,
    ) -> None:
        self.target, self.delay_s, self.socks = target, delay_s, socks
        self.max_connections, self.limit_s = max_connections, limit_s
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Relay:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(2)
        self._listener.close()

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        accepted = 0
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and accepted < self.max_connections:
            if time.monotonic() > deadline:
                return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            accepted += 1
            self._spawn(self._connection, client)

    def _connection(self, client: socket.socket) -> None:
        try:
            client.settimeout(5)
            if self.socks:
                self._socks_handshake(client)
            upstream = socket.create_connection(self.target, 5)
            if self.socks:  # succeeded, bound to 0.0.0.0:0 (tor answers the same)
                client.sendall(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._forward(client, upstream)
        except OSError:
            pass
        finally:
            client.close()

    def _socks_handshake(self, client: socket.socket) -> None:
        _, n = _exact(client, 2)
        methods = list(_exact(client, n))
        request: dict[str, Any] = {"methods": methods}
        if 2 in methods:  # username/password: what tor uses to isolate streams
            client.sendall(b"\x05\x02")
            _, ulen = _exact(client, 2)
            request["username"] = _exact(client, ulen).decode()
            _exact(client, _exact(client, 1)[0])  # the password
            client.sendall(b"\x01\x00")
        else:
            client.sendall(b"\x05\x00")
        _, cmd, _, atyp = _exact(client, 4)
        if atyp == 3:
            host = _exact(client, _exact(client, 1)[0]).decode()
        elif atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, _exact(client, 4))
        else:
            host = socket.inet_ntop(socket.AF_INET6, _exact(client, 16))
        (port,) = struct.unpack("!H", _exact(client, 2))
        kinds = {1: "IPv4 address", 3: "domain name, unresolved", 4: "IPv6 address"}
        request.update(command=cmd, atyp=atyp, kind=kinds.get(atyp), host=host, port=port)
        self.requests.append(request)

    def _forward(self, a: socket.socket, b: socket.socket) -> None:
        """Both directions, each through a queue that holds a chunk `delay_s`, in order."""
        deadline = time.monotonic() + self.limit_s
        pending: dict[int, queue.Queue[tuple[float, bytes]]] = {
            a.fileno(): queue.Queue(),
            b.fileno(): queue.Queue(),
        }
        peer = {a.fileno(): b, b.fileno(): a}
        for fd in pending:
            self._spawn(self._writer, peer[fd], pending[fd], deadline)
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for s in readable:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    pending[s.fileno()].put((time.monotonic() + self.delay_s, chunk))
        finally:
            for q in pending.values():
                q.put((0.0, b""))
            time.sleep(self.delay_s)
            b.close()

    def _writer(self, to: socket.socket, q: queue.Queue[tuple[float, bytes]], end: float) -> None:
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                due, chunk = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if not chunk:
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                to.sendall(chunk)
            except OSError:
                return


# -- ZeroMQ PUB/SUB ------------------------------------------------------------------------------


def _zmq() -> Any:
    """pyzmq, imported when used: the study's package, not the project's (typed Any, so that
    mypy passes without it as with it)."""
    import zmq  # type: ignore[import-not-found, unused-ignore]

    return zmq


def _subscriber(
    endpoint: str, delay_s: float, total: int, limit_s: float, conn: Connection
) -> None:
    """One SUB in its own process (a node of its own): counts what arrives, sleeping `delay_s`
    after each message (a slow node). Ends once the publisher has said it is done and nothing
    has come for 1 s, or after `limit_s`."""
    zmq = _zmq()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    got = bytearray(total)
    received, first_ns, last_ns, ready, publisher_done = 0, 0, 0, False, False
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not publisher_done and conn.poll():
            publisher_done = conn.recv() == "sent"
        if not sub.poll(1000 if publisher_done else 50):
            if publisher_done:
                break
            continue
        message = sub.recv()
        if message[:1] == b"p":  # a probe: the publisher waits for one to reach every subscriber
            if not ready:
                conn.send("ready")
                ready = True
            continue
        seq = seq_of(message)
        if seq < total and not got[seq]:
            got[seq] = 1
            received += 1
        last_ns = time.monotonic_ns()
        first_ns = first_ns or last_ns
        if delay_s:
            time.sleep(delay_s)
        if received == total:
            break
    missing = [i for i in range(total) if not got[i]]
    gaps = sum(1 for i in missing if i == 0 or got[i - 1])
    conn.send(
        {
            "received": received,
            "lost": total - received,
            "first_lost_seq": missing[0] if missing else None,
            "gaps": gaps,
            "receive_s": round((last_ns - first_ns) / 1e9, 3) if received > 1 else None,
            "receive_rate_per_s": round(received / ((last_ns - first_ns) / 1e9))
            if received > 1 and last_ns > first_ns
            else None,
        }
    )
    sub.close()
    ctx.term()


def zmq_pubsub(
    total: int,
    delays_ms: list[float],
    *,
    nodrop: bool = False,
    limit_s: float = 45.0,
    send_limit_s: float = 30.0,
    rate_per_s: float | None = None,
) -> Results:
    """One PUB (bound) and one subscriber process per entry of `delays_ms` (a subscriber's
    sleep after each message); `total` messages sent as fast as the PUB takes them, or at
    `rate_per_s`. With `nodrop` (ZMQ_XPUB_NODROP), a send at the high-water mark fails with
    EAGAIN instead of dropping, and is retried until `send_limit_s`: nothing is dropped, the
    publisher waits instead. Subscribers stop after `limit_s`."""
    zmq = _zmq()
    mp = multiprocessing.get_context("spawn")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if nodrop:
        pub.setsockopt(zmq.XPUB_NODROP, 1)
    port = pub.bind_to_random_port(f"tcp://{HOST}")
    hwm = pub.getsockopt(zmq.SNDHWM)  # left at the default; RCVHWM's is the same
    subs: list[tuple[Any, Connection]] = []
    try:
        for delay in delays_ms:
            mine, theirs = mp.Pipe()
            p = mp.Process(
                target=_subscriber,
                args=(f"tcp://{HOST}:{port}", delay / 1000, total, limit_s, theirs),
                daemon=True,
            )
            p.start()
            subs.append((p, mine))
        ready: set[int] = set()
        deadline = time.monotonic() + 20
        while len(ready) < len(subs) and time.monotonic() < deadline:
            with contextlib.suppress(zmq.Again):
                pub.send(b"p", zmq.NOBLOCK)
            for i, (_, conn) in enumerate(subs):
                if i not in ready and conn.poll() and conn.recv() == "ready":
                    ready.add(i)
            time.sleep(0.005)
        if len(ready) < len(subs):
            raise RuntimeError("the subscribers did not connect within 20 s")

        waited, sent = 0, 0
        send_deadline = time.monotonic() + send_limit_s
        t0 = time.monotonic_ns()
        for seq in range(total):
            message = data_message(seq)
            if nodrop:
                while time.monotonic() < send_deadline:
                    try:
                        pub.send(message, zmq.NOBLOCK)
                        break
                    except zmq.Again:  # at the high-water mark: wait for the slowest one
                        waited += 1
                        time.sleep(0.0002)
                else:
                    break  # out of time: `sent` says how far the publisher got
            else:
                pub.send(message)
            sent += 1
            if rate_per_s and seq % 100 == 99:  # paced: a rate the fast subscriber keeps up with
                ahead = (t0 + sent / rate_per_s * 1e9 - time.monotonic_ns()) / 1e9
                if ahead > 0:
                    time.sleep(ahead)
        send_s = (time.monotonic_ns() - t0) / 1e9
        for _, conn in subs:
            conn.send("sent")
        results = []
        for (_, conn), delay in zip(subs, delays_ms, strict=True):
            got = conn.recv() if conn.poll(limit_s) else {"error": "no answer"}
            results.append({"delay_ms_per_message": delay, **got})
    finally:
        for p, _ in subs:
            p.join(5)
            if p.is_alive():
                p.terminate()  # our own child, by its handle
                p.join(5)
        pub.close()
        ctx.term()
    return {
        "messages": total,
        "sent": sent,
        "payload_bytes": PAYLOAD,
        "sndhwm": hwm,
        "rcvhwm": hwm,
        "xpub_nodrop": nodrop,
        "send_s": round(send_s, 3),
        "send_rate_per_s": round(sent / send_s) if send_s else None,
        "paced_per_s": rate_per_s,
        "send_retries_at_hwm": waited if nodrop else None,
        "subscribers": results,
    }


def _sync(pub: Any, sub: Any, zmq: Any) -> bool:
    """Probe until the SUB gets one (its subscription has reached the PUB); drop the probes."""
    for _ in range(400):  # 4 s at most
        pub.send(b"p")
        if sub.poll(10):
            while sub.poll(100):
                sub.recv()
            return True
    return False


def _send_paced(pub: Any, first: int, count: int) -> None:
    """A pace a subscriber keeps up with (under the high-water mark): what is lost is lost
    to the absence, not to speed."""
    for seq in range(first, first + count):
        pub.send(data_message(seq))
        if seq % 100 == 99:
            time.sleep(0.002)


def _drain(
    sub: Any, counts: dict[str, int], phases: list[tuple[str, int, int]], idle_ms: int
) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sub.poll(idle_ms):
        message = sub.recv()
        if message[:1] != b"d":
            continue
        seq = seq_of(message)
        for name, lo, hi in phases:
            if lo <= seq < hi:
                counts[name] += 1


def zmq_reconnect(before: int, away: int, after: int, *, sub_binds: bool) -> Results:
    """A subscriber that goes away and comes back. `sub_binds`: the SUB is the listener and the
    PUB dials it (then the PUB's pipe outlives the connection and queues up to SNDHWM in the
    publisher's memory); otherwise the PUB listens and the SUB dials (the usual way)."""
    zmq = _zmq()
    ctx = zmq.Context()
    endpoint = f"tcp://{HOST}:{free_port()}"
    phases = [("before", 0, before), ("away", before, before + away)]
    phases.append(("after", before + away, before + away + after))
    counts = dict.fromkeys(("before", "away", "after"), 0)

    def new_sub() -> Any:
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        if sub_binds:
            s.bind(endpoint)
        else:
            s.connect(endpoint)
        return s

    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    sub: Any = None
    try:
        if not sub_binds:
            pub.bind(endpoint)
        sub = new_sub()
        if sub_binds:
            pub.connect(endpoint)
        if not _sync(pub, sub, zmq):
            raise RuntimeError("no subscription within 4 s")
        _send_paced(pub, 0, before)
        _drain(sub, counts, phases, 300)

        sub.close()  # the subscriber's node goes away
        sub = None
        time.sleep(0.3)
        _send_paced(pub, before, away)
        time.sleep(0.3)
        sub = new_sub()  # and comes back
        if sub_binds:  # the PUB redials by itself (ZMQ_RECONNECT_IVL 100 ms)
            _drain(sub, counts, phases, 1500)
        if not _sync(pub, sub, zmq):
            raise RuntimeError("no subscription within 4 s after the reconnect")
        _drain(sub, counts, phases, 300)
        _send_paced(pub, before + away, after)
        _drain(sub, counts, phases, 300)
    finally:
        if sub is not None:
            sub.close()
        pub.close()
        ctx.term()
    return {
        "listener": "SUB (the PUB dials)" if sub_binds else "PUB (the SUB dials)",
        "sent": {"before": before, "away": away, "after": after},
        "received": counts,
        "lost_while_away": away - counts["away"],
    }


def zmq_socks(delay_ms: float) -> Results:
    """A SUB dialing a `.onion` name through ZMQ_SOCKS_PROXY (our SOCKS5 server on loopback,
    standing in for tor's SocksPort): what the proxy is asked, and the time to the first
    message with and without `delay_ms` each way after the SOCKS handshake."""
    zmq = _zmq()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port(f"tcp://{HOST}")
    out: Results = {"dialed": f"tcp://{FAKE_ONION}:4242", "first_message_s": {}}
    try:
        for delay in (0.0, delay_ms):
            with Relay((HOST, port), delay_s=delay / 1000, socks=True, max_connections=1) as relay:
                sub = ctx.socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                sub.setsockopt(zmq.SOCKS_PROXY, f"{HOST}:{relay.port}".encode())
                sub.setsockopt(zmq.SOCKS_USERNAME, b"node-south")  # tor: one circuit per name
                sub.setsockopt(zmq.SOCKS_PASSWORD, b"x")
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                t0 = time.monotonic()
                sub.connect(out["dialed"])
                first = None
                while time.monotonic() - t0 < 10:
                    pub.send(b"p")
                    if sub.poll(2):
                        sub.recv()
                        first = time.monotonic() - t0
                        break
                sub.close()
                out["first_message_s"][f"{delay:g} ms"] = round(first, 3) if first else None
                out["socks_requests"] = relay.requests
    finally:
        pub.close()
        ctx.term()
    return out


def zmq_echo(samples: int) -> Results:
    """REQ/REP round trip of one message on loopback, both ends in this thread."""
    zmq = _zmq()
    ctx = zmq.Context()
    rep, req = ctx.socket(zmq.REP), ctx.socket(zmq.REQ)
    try:
        for s in (rep, req):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 5000)
        req.connect(f"tcp://{HOST}:{rep.bind_to_random_port(f'tcp://{HOST}')}")
        message, rtts = data_message(0), []
        for _ in range(samples):
            t = time.perf_counter_ns()
            req.send(message)
            rep.send(rep.recv())
            req.recv()
            rtts.append(time.perf_counter_ns() - t)
    finally:
        rep.close()
        req.close()
        ctx.term()
    return {"round_trip_ms": summary_ms(rtts[10:])}


# -- plain TCP (asyncio), the floor --------------------------------------------------------------


async def _tcp_echo(samples: int) -> Results:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for _ in range(samples):
                writer.write(await reader.readexactly(PAYLOAD))
        writer.close()

    server = await asyncio.start_server(echo, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    rtts: list[int] = []
    async with server, asyncio.timeout(30):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        message = data_message(0)
        for _ in range(samples):
            t = time.perf_counter_ns()
            writer.write(message)
            await reader.readexactly(PAYLOAD)
            rtts.append(time.perf_counter_ns() - t)
        writer.close()
    return {"round_trip_ms": summary_ms(rtts[10:])}


# -- py-libp2p (trio) ----------------------------------------------------------------------------

ECHO = "/onionchat-study/echo/1.0.0"
COUNT = "/onionchat-study/count/1.0.0"


async def _libp2p_pair(body: Callable[[Any, Any], Awaitable[None]]) -> None:
    """Two fresh hosts (new keys), both listening on 127.0.0.1, with the echo and count
    protocols on the second; `body(a, b)` runs while both are up."""
    import multiaddr  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import trio  # type: ignore[import-not-found, unused-ignore]
    from libp2p import new_host  # type: ignore[import-not-found, unused-ignore]
    from libp2p.custom_types import TProtocol  # type: ignore[import-not-found, unused-ignore]

    async def echo(stream: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                await stream.write(data)
        with contextlib.suppress(Exception):
            await stream.close()

    listen = [multiaddr.Multiaddr(f"/ip4/{HOST}/tcp/0")]
    a, b = new_host(), new_host()
    b.set_stream_handler(TProtocol(ECHO), echo)
    with trio.fail_after(30):
        async with a.run(listen_addrs=listen), b.run(listen_addrs=listen):
            await body(a, b)


async def _read_exactly(stream: Any, n: int) -> bytes:
    data = b""
    for _ in range(10_000):  # bounded: a read returns at least one byte or ends the stream
        if len(data) >= n:
            break
        chunk = await stream.read(n - len(data))
        if not chunk:
            raise EOFError("stream closed")
        data += chunk
    return data


async def _libp2p_echo_rtts(a: Any, b: Any, samples: int) -> list[int]:
    from libp2p.peer.peerinfo import info_from_p2p_addr  # type: ignore[import-not-found, unused-ignore]

    await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
    stream = await a.new_stream(b.get_id(), [ECHO])
    message, rtts = data_message(0), []
    for _ in range(samples):
        t = time.perf_counter_ns()
        await stream.write(message)
        await _read_exactly(stream, PAYLOAD)
        rtts.append(time.perf_counter_ns() - t)
    await stream.close()
    return rtts


async def _libp2p_main(samples: int, stream_messages: int, delay_ms: float) -> Results:
    import multiaddr  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import trio  # type: ignore[import-not-found, unused-ignore]
    from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr  # type: ignore[import-not-found, unused-ignore]
    from libp2p.utils.version import get_agent_version  # type: ignore[import-not-found, unused-ignore]

    out: Results = {}
    connects: list[int] = []
    streams: list[int] = []

    async def connect_once(a: Any, b: Any) -> None:
        t = time.perf_counter_ns()
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        connects.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        stream = await a.new_stream(b.get_id(), [ECHO])
        streams.append(time.perf_counter_ns() - t)
        await stream.close()

    for _ in range(5):
        await _libp2p_pair(connect_once)
    out["connect_ms"] = [round(c / 1e6, 1) for c in connects]
    out["first_stream_ms"] = [round(s / 1e6, 1) for s in streams]

    def through_relay(delay: float) -> Callable[[Any, Any], Awaitable[None]]:
        """Connect, open a stream, one echo, through the relay (a fresh pair each time, so
        that no address learned before is dialed instead of the relay)."""

        async def body(a: Any, b: Any) -> None:
            b_port = int(b.get_transport_addrs()[0].value_for_protocol("tcp"))
            times: dict[str, float] = {}
            with Relay((HOST, b_port), delay_s=delay / 1000, max_connections=2) as relay:
                addr = multiaddr.Multiaddr(f"/ip4/{HOST}/tcp/{relay.port}")
                t = time.monotonic()
                await a.connect(PeerInfo(b.get_id(), [addr]))
                times["connect"] = time.monotonic() - t
                stream = await a.new_stream(b.get_id(), [ECHO])
                times["stream"] = time.monotonic() - t
                await stream.write(data_message(0))
                await _read_exactly(stream, PAYLOAD)
                times["first_echo"] = time.monotonic() - t
                await stream.close()
            out.setdefault("through_relay_s", {})[f"{delay:g} ms"] = {
                k: round(v, 3) for k, v in times.items()
            }

        return body

    for delay in (0.0, delay_ms):
        await _libp2p_pair(through_relay(delay))

    async def rtt_and_identify(a: Any, b: Any) -> None:
        rtts = await _libp2p_echo_rtts(a, b, samples)
        out["round_trip_ms"] = summary_ms(rtts[10:])
        for _ in range(50):  # identify runs after the connection: wait for it (≤ 1 s)
            if b.get_peerstore().addrs(a.get_id()):
                break
            await trio.sleep(0.02)
        learned: Results = {"addrs": [str(x) for x in b.get_peerstore().addrs(a.get_id())]}
        learned["agent_version_sent"] = get_agent_version()
        with contextlib.suppress(Exception):
            learned["protocols"] = sorted(b.get_peerstore().get_protocols(a.get_id()))
        out["what_the_listener_learned_of_the_dialer"] = learned

    await _libp2p_pair(rtt_and_identify)

    async def one_way(a: Any, b: Any) -> None:
        total = stream_messages * PAYLOAD
        done = trio.Event()
        span: dict[str, int] = {}

        async def count(stream: Any) -> None:
            got = 0
            for _ in range(stream_messages * 4):
                if got >= total:
                    break
                chunk = await stream.read(65536)
                if not chunk:
                    break
                got += len(chunk)
            span["end"], span["bytes"] = time.monotonic_ns(), got
            done.set()
            with contextlib.suppress(Exception):
                await stream.close()

        b.set_stream_handler(COUNT, count)
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        stream = await a.new_stream(b.get_id(), [COUNT])
        t0 = time.monotonic_ns()
        for seq in range(stream_messages):
            await stream.write(data_message(seq))
        await done.wait()
        s = (span["end"] - t0) / 1e9
        out["one_stream"] = {
            "messages": stream_messages,
            "bytes_received": span["bytes"],
            "s": round(s, 3),
            "rate_per_s": round(stream_messages / s),
        }
        await stream.close()

    await _libp2p_pair(one_way)
    return out


async def _libp2p_rtt_only(samples: int) -> list[int]:
    rtts: list[int] = []

    async def body(a: Any, b: Any) -> None:
        rtts.extend(await _libp2p_echo_rtts(a, b, samples))

    await _libp2p_pair(body)
    return rtts


def libp2p_guest(samples: int) -> Results:
    """The echo again, with trio as a guest on an asyncio loop (uvloop when installed, as the
    node runs): the one way to have libp2p inside the node's own loop."""
    import trio  # type: ignore[import-not-found, unused-ignore]

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        loop_name = f"uvloop {version('uvloop')}"
    except ImportError:
        factory, loop_name = asyncio.new_event_loop, "asyncio"

    async def host() -> list[int]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def soon(fn: Callable[[], object]) -> None:
            loop.call_soon_threadsafe(fn)

        trio.lowlevel.start_guest_run(
            _libp2p_rtt_only,
            samples,
            run_sync_soon_threadsafe=soon,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        rtts: list[int] = (await asyncio.wait_for(done, 40)).unwrap()
        return rtts

    with asyncio.Runner(loop_factory=factory) as runner:
        rtts = runner.run(host())
    return {"host_loop": loop_name, "round_trip_ms": summary_ms(rtts[10:])}


def libp2p_study(samples: int, stream_messages: int, delay_ms: float) -> Results:
    """All of py-libp2p's figures, or exactly why there are none."""
    try:
        import libp2p  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        import trio  # type: ignore[import-not-found, unused-ignore]
    except Exception as exc:
        return {"error": error_text(exc), "installed": version("libp2p")}
    try:
        out: Results = trio.run(_libp2p_main, samples, stream_messages, delay_ms)
    except BaseException as exc:  # a trio.Cancelled/MultiError as much as an OSError
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"error": error_text(exc)}
    try:
        out["guest_mode"] = libp2p_guest(samples)
    except Exception as exc:
        out["guest_mode"] = {"error": error_text(exc)}
    return out


# -- mosquitto + aiomqtt, what the nodes do today ------------------------------------------------


@contextlib.contextmanager
def mosquitto(directory: Path, lines: list[str]) -> Iterator[tuple[int, Path]]:
    """One mosquitto of our own on a free loopback port, with `lines` added to its config;
    ended by the PID it was started with. Yields its port and its log (notices included:
    that is where it says it drops a client's messages)."""
    port = free_port()
    conf = directory / f"mosquitto-{port}.conf"
    conf.write_text(
        "\n".join(
            [
                f"user {getpass.getuser()}",  # stay this user (started as root, it would switch)
                f"listener {port} {HOST}",
                "allow_anonymous true",
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                *lines,
                "",
            ]
        )
    )
    log_path = directory / f"mosquitto-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    pid = proc.pid
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not listen within 10 s")
            time.sleep(0.02)
        yield port, log_path
    finally:
        if proc.poll() is None:
            os.kill(pid, signal.SIGTERM)  # the PID we started, nothing else
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                proc.wait(5)


@contextlib.asynccontextmanager
async def mqtt(
    port: int, name: str, *, nodelay: bool, persistent: bool = False
) -> AsyncIterator[Any]:
    """An aiomqtt client as the nodes' links make one (MQTT 5, QoS 1, 64 in flight, an
    unbounded incoming queue); `persistent`: a session the broker keeps while we are away;
    `nodelay`: TCP_NODELAY on its socket (neither paho nor the links set it)."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = None
    if persistent:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 300
    client = aiomqtt.Client(
        HOST,
        port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
        max_inflight_messages=64,
        max_queued_incoming_messages=0,
        timeout=10,
    )
    client.pending_calls_threshold = 1000
    async with client:
        sock = client._client.socket()
        if nodelay and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield client


async def _publish_all(client: Any, topic: str, first: int, count: int, window: int = 64) -> None:
    """QoS 1 with `window` awaiting their PUBACK at once, as the nodes' links publish."""
    seqs = iter(range(first, first + count))

    async def worker() -> None:
        for seq in seqs:
            await client.publish(topic, data_message(seq), qos=1)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(window):
            tasks.create_task(worker())


async def _count_messages(client: Any, total: int, idle_s: float) -> tuple[int, int]:
    """(messages received, monotonic ns of the last), until `total` or `idle_s` of silence."""
    got, last = 0, 0
    it = client.messages.__aiter__()
    while got < total:
        try:
            await asyncio.wait_for(it.__anext__(), idle_s)
        except TimeoutError:
            break
        got += 1
        last = time.monotonic_ns()
    return got, last


async def _mqtt_main(
    port: int, nodelay: bool, total: int, samples: int, delay_ms: float
) -> Results:
    out: Results = {}
    async with asyncio.timeout(90):
        # throughput: one publisher, one subscriber, QoS 1 both ways
        async with (
            mqtt(port, "sub", nodelay=nodelay) as sub,
            mqtt(port, "pub", nodelay=nodelay) as pub,
        ):
            await sub.subscribe("study/t", qos=1)
            t0 = time.monotonic_ns()
            counting = asyncio.create_task(_count_messages(sub, total, 5))
            await _publish_all(pub, "study/t", 0, total)
            publish_s = (time.monotonic_ns() - t0) / 1e9
            got, last = await counting
            s = (last - t0) / 1e9
            out["qos1_stream"] = {
                "messages": total,
                "received": got,
                "lost": total - got,
                "in_flight": 64,
                "all_acked_s": round(publish_s, 3),
                "all_received_s": round(s, 3),
                "rate_per_s": round(got / s) if s > 0 else None,
            }

        # round trip: ping on one topic, an echo client answers on another, both QoS 1
        async with (
            mqtt(port, "ping", nodelay=nodelay) as ping,
            mqtt(port, "echo", nodelay=nodelay) as echo,
        ):
            await echo.subscribe("study/ping", qos=1)
            await ping.subscribe("study/pong", qos=1)

            async def answer() -> None:
                async for m in echo.messages:
                    await echo.publish("study/pong", m.payload, qos=1)

            answering = asyncio.create_task(answer())
            it = ping.messages.__aiter__()
            rtts: list[int] = []
            for _ in range(samples):
                t = time.perf_counter_ns()
                await ping.publish("study/ping", data_message(0), qos=1)
                await asyncio.wait_for(it.__anext__(), 5)
                rtts.append(time.perf_counter_ns() - t)
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            out["round_trip_ms"] = summary_ms(rtts[10:])

        # connection setup through the delaying relay: CONNECT, SUBSCRIBE, one QoS 1 publish
        setup: Results = {}
        for delay in (0.0, delay_ms):
            with Relay((HOST, port), delay_s=delay / 1000, max_connections=1) as relay:
                start = time.monotonic()
                times: dict[str, float] = {}
                async with mqtt(relay.port, "setup", nodelay=nodelay) as c:
                    times["connect"] = time.monotonic() - start
                    await c.subscribe("study/s", qos=1)
                    times["subscribed"] = time.monotonic() - start
                    await c.publish("study/x", b"x", qos=1)
                    times["first_puback"] = time.monotonic() - start
            setup[f"{delay:g} ms"] = {k: round(v, 3) for k, v in times.items()}
        out["through_relay_s"] = setup
    return out


async def _mqtt_away(port: int, nodelay: bool, before: int, away: int, after: int) -> Results:
    """The reconnect test of ZeroMQ, against a broker: a persistent session that is away."""
    counts: Results = {}
    async with asyncio.timeout(60):
        async with mqtt(port, "away", nodelay=nodelay, persistent=True) as sub:
            await sub.subscribe("study/a", qos=1)
            async with mqtt(port, "pub-a", nodelay=nodelay) as pub:
                await _publish_all(pub, "study/a", 0, before)
            counts["before"] = (await _count_messages(sub, before, 2))[0]
        async with mqtt(port, "pub-b", nodelay=nodelay) as pub:  # while the subscriber is away
            await _publish_all(pub, "study/a", before, away)
        async with mqtt(port, "away", nodelay=nodelay, persistent=True) as sub:
            counts["away"] = (await _count_messages(sub, away, 2))[0]
            async with mqtt(port, "pub-c", nodelay=nodelay) as pub:
                await _publish_all(pub, "study/a", before + away, after)
            counts["after"] = (await _count_messages(sub, after, 2))[0]
    return {
        "sent": {"before": before, "away": away, "after": after},
        "received": counts,
        "lost_while_away": away - counts["away"],
    }


BROKERS = {
    "as_shipped": ([], False),  # mosquitto's defaults (max_queued_messages 1000), paho's sockets
    "tuned": (["set_tcp_nodelay true", "max_queued_messages 100000"], True),
}


def mqtt_study(
    config: str, total: int, samples: int, delay_ms: float, before: int, away: int
) -> Results:
    """One mosquitto configuration of BROKERS: throughput, round trip, setup, an absence."""
    if not Path(MOSQUITTO).exists():
        return {"error": f"no mosquitto at {MOSQUITTO}"}
    lines, nodelay = BROKERS[config]
    out: Results = {"broker_lines": lines, "client_tcp_nodelay": nodelay}
    with tempfile.TemporaryDirectory(prefix="p2p-study-") as tmp:
        with mosquitto(Path(tmp), lines) as (port, log):
            out.update(asyncio.run(_mqtt_main(port, nodelay, total, samples, delay_ms)))
            out["away"] = asyncio.run(_mqtt_away(port, nodelay, before, away, before))
        said = log.read_text(errors="replace").splitlines()
        out["broker_said_it_dropped"] = [line for line in said if "dropped" in line]
    return out


# -- the run -------------------------------------------------------------------------------------


def machine(label: str) -> Results:
    try:
        from bench.system import machine as bench_machine

        return bench_machine(label)
    except ImportError:  # psutil is the bench extra
        return {"label": label, "cores": os.cpu_count(), "python": platform.python_version()}


def versions() -> Results:
    out: Results = {p: version(p) for p in ("pyzmq", "libp2p", "trio", "aiomqtt", "paho-mqtt")}
    with contextlib.suppress(Exception):
        out["libzmq"] = _zmq().zmq_version()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        out["mosquitto"] = head.stdout.split("\n", 1)[0].removeprefix("mosquitto version ")
    return out


def part(results: Results, name: str, fn: Callable[[], Results]) -> None:
    """Run one part; a failure is a finding, recorded with its message, not the end of the run."""
    t = time.monotonic()
    print(f"-- {name} ...", flush=True)
    try:
        results[name] = fn()
    except Exception as exc:
        results[name] = {"error": error_text(exc)}
    results[name]["wall_s"] = round(time.monotonic() - t, 1)
    print(json.dumps(results[name], indent=1, ensure_ascii=False), flush=True)


def table(r: Results, delay_ms: float) -> list[tuple[str, str]]:
    """The figures the doc quotes, as (figure, value) rows; a part that failed, as its error."""
    rows: list[tuple[str, str]] = []

    def get(*path: str) -> Any:
        node: Any = r
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def rtt(label: str, s: Any) -> None:
        if s and s.get("p50") is not None:
            rows.append((label, f"p50 {s['p50']} ms, p99 {s['p99']} ms"))

    def got(sub: Any, sent: Any) -> str:
        return f"{sub.get('received', 0):,} of {sent or 0:,}"

    def setup(label: str, times: Any) -> None:
        """Seconds to each step without and with the relay's delay, and the round trips each
        step took at that delay: its own share of the time ÷ (2 × delay_ms). The relay does not
        delay the TCP handshake itself: add one round trip to each protocol over a network."""
        if not times or len(times) < 2:
            return
        t0, t1 = times["0 ms"], times[f"{delay_ms:g} ms"]
        steps, before = [], 0.0
        for k in t0:
            trips = (t1[k] - before) / (2 * delay_ms / 1000)
            steps.append(f"{k} {t0[k]} → {t1[k]} s (+{trips:.1f} RTT)")
            before = t1[k]
        rows.append((f"{label}, relay delay 0 → {delay_ms:g} ms each way", ", ".join(steps)))

    for name, part_results in r.items():
        if isinstance(part_results, dict) and "error" in part_results:
            rows.append((name, f"**did not run**: {part_results['error']}"))

    zt = get("zmq_throughput")
    if zt and "subscribers" in zt:
        sub = zt["subscribers"][0]
        rows.append(
            (
                f"ZeroMQ PUB/SUB, burst of {zt['sent']:,}, one subscriber",
                f"sent {zt['send_rate_per_s']:,}/s; received {got(sub, zt['sent'])}, "
                f"{sub['receive_rate_per_s'] or 0:,}/s; lost {sub['lost']:,}",
            )
        )
    zl = get("zmq_lossless")
    if zl and "subscribers" in zl:
        sub = zl["subscribers"][0]
        rows.append(
            (
                "ZeroMQ PUB/SUB with XPUB_NODROP (waits at the HWM), one subscriber",
                f"received {got(sub, zl['sent'])} in {zl['send_s']} s: {zl['send_rate_per_s']:,}/s",
            )
        )
    for key, what in (
        ("zmq_slow", f"default HWM (drops), paced at {PACE:,}/s"),
        ("zmq_nodrop", "XPUB_NODROP (waits)"),
    ):
        z = get(key)
        if not z or "subscribers" not in z:
            continue
        fast, slow = z["subscribers"]
        rows.append(
            (
                f"ZeroMQ {what}, a fast subscriber and a slow one "
                f"(sleeps {slow['delay_ms_per_message']:g} ms a message)",
                f"the publisher sent {z['sent']:,} of {z['messages']:,} in {z['send_s']} s; "
                f"received: fast {fast.get('received', 0):,}, slow {slow.get('received', 0):,}",
            )
        )
    for key in ("zmq_away_pub_listens", "zmq_away_sub_listens"):
        z = get(key)
        if z and "received" in z:
            rows.append(
                (
                    f"ZeroMQ, a subscriber away, the {z['listener']}",
                    f"sent while away: {z['sent']['away']:,}, received: {z['received']['away']:,}"
                    f" (before {z['received']['before']:,} of {z['sent']['before']:,}, "
                    f"after {z['received']['after']:,} of {z['sent']['after']:,})",
                )
            )
    req = get("zmq_socks", "socks_requests")
    if req:
        rows.append(
            (
                "ZeroMQ via ZMQ_SOCKS_PROXY: the SOCKS5 server was asked for",
                f"{req[0]['host']}:{req[0]['port']} ({req[0]['kind']}), "
                f"user {req[0].get('username')!r}",
            )
        )
    fm = get("zmq_socks", "first_message_s")
    if fm and len(fm) == 2:
        per_step = {k: {"first message": v} for k, v in fm.items()}
        setup("ZeroMQ SUB via SOCKS5: connect → first message", per_step)
    rtt("ZeroMQ REQ/REP round trip", get("zmq_echo", "round_trip_ms"))
    rtt("plain TCP round trip (asyncio streams)", get("tcp_echo", "round_trip_ms"))

    lp = get("libp2p")
    if lp and "connect_ms" in lp:
        rows.append(
            (
                "py-libp2p: connect, 5 fresh pairs (250 ms of it a fixed wait in swarm.py)",
                ", ".join(f"{c:g}" for c in lp["connect_ms"]) + " ms",
            )
        )
        rows.append(
            (
                "py-libp2p: open a stream after connecting",
                ", ".join(f"{c:g}" for c in lp["first_stream_ms"]) + " ms",
            )
        )
    rtt("py-libp2p stream echo round trip (trio.run)", get("libp2p", "round_trip_ms"))
    rtt(
        "py-libp2p stream echo round trip (trio as a guest of the asyncio loop)",
        get("libp2p", "guest_mode", "round_trip_ms"),
    )
    one = get("libp2p", "one_stream")
    if one:
        rows.append(("py-libp2p: one stream, awaited writes", f"{one['rate_per_s']:,} messages/s"))
    setup("py-libp2p: connect, stream, first echo", get("libp2p", "through_relay_s"))
    learned = get("libp2p", "what_the_listener_learned_of_the_dialer")
    if learned:
        rows.append(("py-libp2p: what identify told the listener", ", ".join(learned["addrs"])))

    for config in BROKERS:
        m = get(f"mqtt_{config}")
        if not m or "qos1_stream" not in m:
            continue
        tag = f"mosquitto {config.replace('_', ' ')}"
        st = m["qos1_stream"]
        rows.append(
            (
                f"{tag}: QoS 1, 64 in flight, one subscriber",
                f"received {st['received']:,} of {st['messages']:,}, {st['rate_per_s'] or 0:,}/s",
            )
        )
        if m.get("broker_said_it_dropped"):
            rows.append((f"{tag}: its log", "; ".join(m["broker_said_it_dropped"])))
        rtt(f"{tag}: QoS 1 round trip (ping → echo client → pong)", m.get("round_trip_ms"))
        setup(f"{tag}: connect, subscribe, first PUBACK", m.get("through_relay_s"))
        a = m.get("away")
        if a and "received" in a:
            rows.append(
                (
                    f"{tag}: a persistent session away",
                    f"sent while away: {a['sent']['away']:,}, received: {a['received']['away']:,}",
                )
            )
    return rows


def markdown(results: Results) -> str:
    m = results["machine"]
    lines = [
        f"Run of {results['date']} on {m.get('label')}: {m.get('cores')} cores "
        f"({m.get('cpu_model', '?')}), Python {m.get('python')}; "
        f"{', '.join(f'{k} {v}' for k, v in results['versions'].items() if v)}.",
        "",
        f"`{results['command']}` — every figure on 127.0.0.1, {PAYLOAD}-byte messages; "
        f"wall time {results['wall_s']} s. The study: [docs/p2p.md](../../../docs/p2p.md).",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    rows = table(results["results"], results["settings"]["relay_one_way_delay_ms"])
    lines += [f"| {a} | {b.replace('|', '/')} |" for a, b in rows]
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.p2p", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--label", default=socket.gethostname(), help="machine label for the results")
    p.add_argument("--out", type=Path, help="results directory (default bench/results/DATE-LABEL)")
    p.add_argument("--messages", type=int, default=100_000, help="ZeroMQ burst (default 100000)")
    p.add_argument("--slow-ms", type=float, default=0.5, help="slow subscriber's sleep a message")
    p.add_argument("--delay-ms", type=float, default=50, help="relay's one-way delay (default 50)")
    p.add_argument("--samples", type=int, default=1000, help="round trips measured (default 1000)")
    p.add_argument("--quick", action="store_true", help="a tenth of the counts, a smoke run")
    p.add_argument("--no-write", action="store_true", help="print only, write no files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    scale = 10 if args.quick else 1
    burst, samples, delay = args.messages // scale, args.samples // scale, args.delay_ms
    before, away = 1000 // scale, 5000 // scale
    date = datetime.date.today().isoformat()
    started = time.monotonic()
    r: Results = {}
    part(r, "zmq_throughput", lambda: zmq_pubsub(burst, [0.0]))
    part(r, "zmq_lossless", lambda: zmq_pubsub(burst, [0.0], nodrop=True))
    part(r, "zmq_slow", lambda: zmq_pubsub(burst, [0.0, args.slow_ms], rate_per_s=PACE))
    stalled = functools.partial(zmq_pubsub, burst // 2, [0.0, 50.0], nodrop=True)
    part(r, "zmq_nodrop", lambda: stalled(limit_s=9, send_limit_s=4))
    part(r, "zmq_away_pub_listens", lambda: zmq_reconnect(before, away, before, sub_binds=False))
    part(r, "zmq_away_sub_listens", lambda: zmq_reconnect(before, away, before, sub_binds=True))
    part(r, "zmq_socks", lambda: zmq_socks(delay))
    part(r, "zmq_echo", lambda: zmq_echo(samples))
    part(r, "tcp_echo", lambda: asyncio.run(_tcp_echo(samples)))
    part(r, "libp2p", lambda: libp2p_study(samples, burst // 10, delay))
    for config in BROKERS:
        study = functools.partial(
            mqtt_study, config, burst // 10, samples // 5, delay, before, away
        )
        part(r, f"mqtt_{config}", study)
    results: Results = {
        "date": date,
        "command": " ".join(["python -m bench.p2p", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(args.label),
        "versions": versions(),
        "settings": {
            "payload_bytes": PAYLOAD,
            "zmq_burst": burst,
            "slow_subscriber_sleep_ms": args.slow_ms,
            "relay_one_way_delay_ms": delay,
            "round_trip_samples": samples,
            "note": "every server on 127.0.0.1; ZeroMQ at its defaults (SNDHWM/RCVHWM 1000); "
            "mosquitto with persistence off, its own config, on a free port",
        },
        "wall_s": round(time.monotonic() - started, 1),
        "results": r,
    }
    print()
    for label, value in table(r, delay):
        print(f"{label}\n    {value}")
    if not args.no_write:
        out = args.out or HERE / "results" / f"{date}-{args.label}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "p2p.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        (out / "p2p.md").write_text(markdown(results))
        print(f"\nwrote {out / 'p2p.json'} and {out / 'p2p.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
