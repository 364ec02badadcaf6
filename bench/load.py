"""The load generator: worker processes that each drive a share of the clients.

Each worker is a separate process running one asyncio loop (uvloop when available) and the
light WebSocket client. The bench's main process drives the workers through pipes, one
command at a time (`open`, `join`, `run`, `drain`, `ingest`, `history`, `stall_check`,
`close`); client `i` lives in worker `i % workers`.

Every chat message carries `"STEP:SENDER:SEQ:SENT_NS:"` padded with dots to the payload
size; `time.monotonic_ns()` is system-wide on Linux, so a receiver in another process
subtracts the send time from its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

from bench.target import HOST, ChatClient, TargetError

Conn = multiprocessing.connection.Connection


def client_class(wire: str) -> type[ChatClient]:
    if wire == "onionchat":
        from bench.onionchat_target import OnionChatClient

        return OnionChatClient
    if wire == "onionshare":
        from bench.onionshare_target import OnionShareClient

        return OnionShareClient
    raise ValueError(f"unknown wire {wire!r}")


def message_text(step: int, sender: int, seq: int, sent_ns: int, payload: int) -> str:
    head = f"{step}:{sender}:{seq}:{sent_ns}:"
    return head + "." * (payload - len(head)) if len(head) < payload else head


async def _sleep_until(ns: int) -> None:
    delay = (ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


class Recorder:
    """Every chat message the clients of one worker receive during one step."""

    def __init__(self, step: int, senders: int) -> None:
        self.prefix = f"{step}:"
        self.senders = senders
        self.lat = array("q")
        self.sent = array("q")  # when each delivery was sent: a timeline of the slow moments
        self.distinct = [0] * senders
        self.dup = [0] * senders
        self.reorder = [0] * senders
        self.total = 0
        self.stale = 0
        self.bad = 0
        self.first_ns = 0
        self.last_ns = 0

    def attach(self, client: ChatClient) -> None:
        client.seen = [bytearray(64) for _ in range(self.senders)]
        client.top = [-1] * self.senders
        client.sink = self

    def message(self, client: ChatClient, text: str, now: int) -> None:
        if not text.startswith(self.prefix):
            self.stale += 1
            return
        parts = text.split(":", 4)
        try:
            s = int(parts[1])
            q = int(parts[2])
            sent = int(parts[3])
            bitmap = client.seen[s]
        except (ValueError, IndexError):
            self.bad += 1
            return
        i = q >> 3
        bit = 1 << (q & 7)
        if i >= len(bitmap):
            bitmap.extend(bytes(max(i + 1 - len(bitmap), len(bitmap))))
        if bitmap[i] & bit:
            self.dup[s] += 1
            return
        bitmap[i] |= bit
        self.distinct[s] += 1
        self.total += 1
        if q < client.top[s]:
            self.reorder[s] += 1
        else:
            client.top[s] = q
        self.lat.append(now - sent)
        self.sent.append(sent)
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now

    def ack(self, client: ChatClient, ref: str | None, id: str | None, now: int) -> None:
        pass


class Ingest:
    """Closed loop: each client keeps `window` sends waiting for their ack until the deadline."""

    def __init__(
        self, deadline_ns: int, window: int, payload: int, room: str, boxes: list[str] | None
    ) -> None:
        self.boxes = boxes  # key-protected rooms: signed boxes, sent in turn
        self.deadline_ns = deadline_ns
        self.window = window
        self.payload = payload
        self.room = room
        self.inflight: dict[str, int] = {}
        self.lat = array("q")
        self.ids: list[str] = []
        self.seq = 0
        self.first_ns = 0
        self.last_ns = 0
        self.unmatched = 0

    def start(self, client: ChatClient) -> None:
        client.sink = self
        for _ in range(self.window):
            self.send(client)

    def send(self, client: ChatClient) -> None:
        self.seq += 1
        ref = f"{client.index}.{self.seq}"
        now = time.monotonic_ns()
        if not self.first_ns:
            self.first_ns = now
        self.inflight[ref] = now
        room = f"{self.room}-{client.index}"
        if self.boxes:
            client.send_box(room, self.boxes[self.seq % len(self.boxes)], ref)
        else:
            client.send_message(
                room, message_text(0, client.index, self.seq, now, self.payload), ref
            )

    def message(self, client: ChatClient, text: str, now: int) -> None:
        pass

    def ack(self, client: ChatClient, ref: str | None, id: str | None, now: int) -> None:
        sent = self.inflight.pop(ref, None) if ref is not None else None
        if sent is None or id is None:
            self.unmatched += 1
            return
        self.lat.append(now - sent)
        self.ids.append(id)
        self.last_ns = now
        if now < self.deadline_ns:
            self.send(client)


class Worker:
    """One load-generator process: its clients and the commands the main process sends."""

    def __init__(self, conn: Conn, wire: str, port: int, index: int, count: int) -> None:
        self.conn = conn
        self.cls = client_class(wire)
        self.port = port
        self.index = index
        self.count = count
        self.clients: list[ChatClient] = []
        self.stallers: list[ChatClient] = []
        self.recorder: Recorder | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            future: asyncio.Future[Any] = loop.create_future()

            def readable(future: asyncio.Future[Any] = future) -> None:
                loop.remove_reader(self.conn.fileno())
                # the loop made the pipe non-blocking; big answers need it blocking again
                os.set_blocking(self.conn.fileno(), True)
                try:
                    future.set_result(self.conn.recv())
                except EOFError as exc:
                    future.set_exception(exc)

            loop.add_reader(self.conn.fileno(), readable)
            try:
                name, args = await future
            except EOFError:
                return
            command: Callable[..., Awaitable[Any]] = getattr(self, "cmd_" + name)
            try:
                result = await command(**args)
            except Exception:
                self.conn.send(("error", traceback.format_exc()))
            else:
                self.conn.send(("ok", result))
            if name == "close":
                return

    # -- commands -------------------------------------------------------------------------

    async def cmd_open(
        self,
        creds: list[tuple[int, dict[str, Any]]],
        concurrency: int = 50,
        stall: list[int] | None = None,
        rcvbuf: int = 4096,
    ) -> dict[str, Any]:
        """Connect and authenticate clients; `stall` ones get a small receive buffer."""
        gate = asyncio.Semaphore(concurrency)
        stalls = set(stall or ())
        failures: list[str] = []
        t0 = time.monotonic()

        async def one(index: int, cred: dict[str, Any]) -> None:
            client = self.cls(index)
            async with gate:
                try:
                    await client.login(HOST, self.port, cred, rcvbuf if index in stalls else None)
                except Exception as exc:
                    client.abort()
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
            (self.stallers if index in stalls else self.clients).append(client)

        await asyncio.gather(*(one(i, c) for i, c in creds))
        self.clients.sort(key=lambda c: c.index)
        return {
            "opened": len(self.clients) + len(self.stallers),
            "failed": len(failures),
            "errors": failures[:3],
            "seconds": time.monotonic() - t0,
        }

    async def cmd_join(
        self,
        room: str,
        indices: list[int] | None = None,
        at_ns: int = 0,
        quiet: float = 0.5,
        timeout: float = 120.0,
        per_client: bool = False,
        stallers: bool = True,
        concurrency: int = 0,
        protected: bool = False,
    ) -> dict[str, Any]:
        """Join clients to a room at `at_ns`; returns after every answer and `quiet` seconds
        of silence, with the bytes and frames all clients received meanwhile."""
        everyone = self.clients + (self.stallers if stallers else [])
        wanted = set(indices) if indices is not None else None
        targets = [c for c in everyone if wanted is None or c.index in wanted]
        bytes0 = sum(c.bytes_in for c in everyone)
        frames0 = sum(c.frames for c in everyone)
        presence0 = sum(c.presence for c in everyone)
        gate = asyncio.Semaphore(concurrency) if concurrency else None
        failures: list[str] = []

        async def one(client: ChatClient) -> None:
            name = f"{room}-{client.index}" if per_client else room
            try:
                if gate is None:
                    await client.join(name, protected)
                else:
                    async with gate:
                        await client.join(name, protected)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        await _sleep_until(at_ns)
        first = time.monotonic_ns()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(c) for c in targets))
        joined = time.monotonic_ns()
        end = time.monotonic_ns() + int(timeout * 1e9)
        while True:
            last = max((c.last_ns for c in everyone), default=0)
            now = time.monotonic_ns()
            if now - last > quiet * 1e9 or now > end:
                break
            await asyncio.sleep(0.05)
        return {
            "clients": len(targets),
            "failed": len(failures),
            "errors": failures[:3],
            "first_ns": first,
            "joined_ns": joined,
            "last_ns": max(last, joined),
            "bytes": sum(c.bytes_in for c in everyone) - bytes0,
            "frames": sum(c.frames for c in everyone) - frames0,
            "presence": sum(c.presence for c in everyone) - presence0,
        }

    async def cmd_run(
        self,
        step: int,
        senders: dict[int, int],
        n_senders: int,
        rate: float,
        start_ns: int,
        duration: float,
        payload: int,
        room: str,
    ) -> dict[str, Any]:
        """Open loop: each sender sends `rate` messages a second, evenly spaced, for
        `duration` seconds from `start_ns`; every other client records what it receives."""
        recorder = Recorder(step, n_senders)
        for client in self.clients:
            recorder.attach(client)
            client.sender = senders.get(client.index, -1)
        self.recorder = recorder
        mine = [c for c in self.clients if c.sender >= 0]
        sent = [0] * len(mine)
        end_ns = start_ns + int(duration * 1e9)
        if mine and rate > 0:
            interval = 1e9 / (rate * len(mine))
            # interleave the workers' schedules
            base = start_ns + interval * self.index / self.count
            j = 0
            k = len(mine)
            await _sleep_until(start_ns)
            while True:
                now = time.monotonic_ns()
                if now >= end_ns:
                    break
                due = int((now - base) / interval) + 1
                while j < due:
                    i = j % k
                    client = mine[i]
                    t = time.monotonic_ns()
                    client.send_message(
                        room, message_text(step, client.sender, sent[i], t, payload)
                    )
                    sent[i] += 1
                    j += 1
                delay = (base + j * interval - time.monotonic_ns()) / 1e9
                await asyncio.sleep(delay if delay > 0 else 0)
        else:
            await _sleep_until(end_ns)
        return {"sent": {c.sender: n for c, n in zip(mine, sent, strict=True)}}

    async def cmd_drain(
        self, expected: int, timeout: float = 30.0, idle: float = 3.0
    ) -> dict[str, Any]:
        """Wait until each recording client got `expected` messages (or nothing more comes
        for `idle` seconds, or `timeout`); returns what was recorded."""
        recorder = self.recorder
        assert recorder is not None
        want = expected * len(self.clients)
        end = time.monotonic() + timeout
        last_total, last_change = -1, time.monotonic()
        while recorder.total < want and time.monotonic() < end:
            if recorder.total != last_total:
                last_total, last_change = recorder.total, time.monotonic()
            elif time.monotonic() - last_change > idle:
                break
            await asyncio.sleep(0.01)
        for client in self.clients:
            client.sink = None
            client.seen = []
            client.top = []
        self.recorder = None
        return {
            "receivers": len(self.clients),
            "lat": recorder.lat.tobytes(),
            "sent": recorder.sent.tobytes(),
            "worker": self.index,
            "distinct": recorder.distinct,
            "dup": recorder.dup,
            "reorder": recorder.reorder,
            "total": recorder.total,
            "stale": recorder.stale,
            "bad": recorder.bad,
            "first_ns": recorder.first_ns,
            "last_ns": recorder.last_ns,
            "errors": sum(c.errors for c in self.clients),
            "last_error": next((c.last_error for c in self.clients if c.last_error), ""),
            "closed": sum(1 for c in self.clients if c.closed.done()),
        }

    async def cmd_stall(self, room: str, fill: int = 0) -> int:
        """The stalled clients stop reading; each then asks for `fill` answers meant for it
        alone (history pages), so that its buffers are full before the step starts."""
        for client in self.stallers:
            if client.transport is not None:
                client.transport.pause_reading()
            client.fill(room, fill)
        return len(self.stallers)

    async def cmd_stall_check(self, wait: float = 8.0) -> list[dict[str, Any]]:
        """Read again on the stalled clients; were they closed by the server, and how?"""
        out = []
        for client in self.stallers:
            if client.transport is not None and not client.transport.is_closing():
                client.transport.resume_reading()
        end = time.monotonic() + wait
        while time.monotonic() < end and not all(c.closed.done() for c in self.stallers):
            await asyncio.sleep(0.05)
        for client in self.stallers:
            out.append(
                {
                    "index": client.index,
                    "closed": client.closed.done(),
                    "close_code": client.closed.result() if client.closed.done() else None,
                    "bytes_in": client.bytes_in,
                }
            )
        return out

    async def cmd_ingest(
        self,
        start_ns: int,
        duration: float,
        window: int,
        payload: int,
        room: str,
        boxes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Every client of this worker sends into its own room `ROOM-INDEX`, keeping `window`
        sends waiting for their ack, for `duration` seconds; sealed `boxes`, when given."""
        if self.clients and not self.clients[0].has_acks:
            raise TargetError("this server does not acknowledge messages")
        ingest = Ingest(start_ns + int(duration * 1e9), window, payload, room, boxes)
        await _sleep_until(start_ns)
        for client in self.clients:
            ingest.start(client)
        await _sleep_until(ingest.deadline_ns)
        end = time.monotonic() + 30
        while ingest.inflight and time.monotonic() < end:
            await asyncio.sleep(0.01)
        for client in self.clients:
            client.sink = None
        return {
            "acked": len(ingest.ids),
            "ids": ingest.ids,
            "lat": ingest.lat.tobytes(),
            "unacked": len(ingest.inflight),
            "unmatched": ingest.unmatched,
            "first_ns": ingest.first_ns,
            "last_ns": ingest.last_ns,
            "errors": sum(c.errors for c in self.clients),
            "last_error": next((c.last_error for c in self.clients if c.last_error), ""),
        }

    async def cmd_history(self, room: str, before: list[str], rounds: int) -> dict[str, Any]:
        """On one connection, `rounds` times: ping, join (→ `joined` with the newest page),
        history before an id, history of the newest page; the durations in ns."""
        from bench.onionchat_target import OnionChatClient

        if rounds <= 0 or not self.clients:
            return {"times": {}, "bytes": {}}
        client = self.clients[0]
        assert isinstance(client, OnionChatClient)
        times: dict[str, list[int]] = {"ping": [], "join": [], "history": [], "newest": []}
        sizes: dict[str, int] = {}

        async def timed(key: str, frame: dict[str, Any]) -> None:
            t0 = time.monotonic_ns()
            _, line, now = await client.request(frame)
            times[key].append(now - t0)
            sizes[key] = len(line)

        for i in range(rounds):
            await timed("ping", {"type": "ping"})
            await timed("join", {"type": "join", "room": room})
            await timed("ping", {"type": "ping"})
            await timed(
                "history",
                {"type": "history", "room": room, "before": before[i % len(before)], "limit": 50},
            )
            await timed("newest", {"type": "history", "room": room, "limit": 50})
        return {"times": times, "bytes": sizes}

    async def cmd_leave_all(self, indices: list[int], wait: float = 5.0) -> int:
        """Close these clients' connections (a way out of servers without rooms)."""
        wanted = set(indices)
        going = [c for c in self.clients if c.index in wanted]
        self.clients = [c for c in self.clients if c.index not in wanted]
        for client in going:
            client.close()
        end = time.monotonic() + wait
        while time.monotonic() < end and not all(c.closed.done() for c in going):
            await asyncio.sleep(0.05)
        for client in going:
            client.abort()
        return len(going)

    async def cmd_counts(self) -> dict[str, Any]:
        everyone = self.clients + self.stallers
        return {
            "clients": len(everyone),
            "closed": sum(1 for c in everyone if c.closed.done()),
            "bytes_in": sum(c.bytes_in for c in everyone),
            "errors": sum(c.errors for c in everyone),
            "last_error": next((c.last_error for c in everyone if c.last_error), ""),
        }

    async def cmd_close(self) -> None:
        everyone = self.clients + self.stallers
        for client in everyone:
            client.close()
        end = time.monotonic() + 2
        while time.monotonic() < end and not all(c.closed.done() for c in everyone):
            await asyncio.sleep(0.05)
        for client in everyone:
            client.abort()


def worker_main(conn: Conn, wire: str, port: int, index: int, count: int) -> None:
    """Entry point of a worker process."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    runner(Worker(conn, wire, port, index, count).serve())


class WorkerError(Exception):
    """A command failed in a worker; the message holds its traceback."""


class Pool:
    """The worker processes of one run against one server."""

    def __init__(self, wire: str, port: int, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Conn] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, wire, port, i, workers), daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def size(self) -> int:
        return len(self.conns)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(
        self, name: str, args: dict[str, Any] | list[dict[str, Any]], timeout: float = 900.0
    ) -> list[Any]:
        """Send a command to every worker (the same args, or one dict each); their results."""
        each = args if isinstance(args, list) else [args] * self.size
        for conn, a in zip(self.conns, each, strict=True):
            conn.send((name, a))
        results = []
        for i, conn in enumerate(self.conns):
            if not conn.poll(timeout):
                raise WorkerError(f"worker {i} did not answer {name!r} in {timeout:.0f} s")
            status, value = conn.recv()
            if status != "ok":
                raise WorkerError(f"worker {i} failed in {name!r}:\n{value}")
            results.append(value)
        return results

    def split(self, items: list[Any]) -> list[list[Any]]:
        """Item `i` goes to worker `i % size`."""
        return [items[w :: self.size] for w in range(self.size)]

    def close(self) -> None:
        with contextlib.suppress(WorkerError, OSError, EOFError):
            self.call("close", {}, timeout=10)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()  # only the processes this pool started
                proc.join(5)
        for conn in self.conns:
            conn.close()
