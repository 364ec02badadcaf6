"""OnionChat under test: the node as a subprocess, accounts over HTTP, and its wire.

Wire (docs/protocol.md): `auth` → `ready`; `join` → `joined`; `send` → `ack` to the sender,
then a `message` frame to every member, the sender included. One WebSocket text message
from the node may carry several frames, one JSON object a line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.target import HOST, ChatClient, Server, TargetError, clean_env

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password"

#: What the bench changes in the node, and why: the bench measures chat, not account
#: creation nor the per-connection abuse limit.
NODE_ENV = {
    "ONIONCHAT_AUTH_ARGON2": "min",
    "ONIONCHAT_AUTH_PBKDF2_ITERATIONS": "1000",
    "ONIONCHAT_AUTH_REGISTRATIONS": "1000000",
    "ONIONCHAT_AUTH_HASH_RATE": "100000",
    "ONIONCHAT_LIMITS_CONNECTIONS": "100000",
    "ONIONCHAT_LIMITS_SOCKETS": "100000",
    "ONIONCHAT_LIMITS_ROOM_CREATIONS": "1000000",
    "ONIONCHAT_LIMITS_JOIN_RATE": "1000000",
    "ONIONCHAT_LIMITS_JOIN_WAVE": "0",  # hundreds of clients join #bench at once: no raid
    "ONIONCHAT_AUTH_NEWCOMER_MINUTES": "0",  # and write at once from new accounts
    "ONIONCHAT_TOR_MODE": "off",
    "ONIONCHAT_LIMITS_RATE": "1000000",
    "ONIONCHAT_LIMITS_BURST": "1000000",
    "ONIONCHAT_LIMITS_HISTORY_RATE": "1000000",
}


def node_settings(env: dict[str, str] | None = None) -> dict[str, Any]:
    """How the bench runs the node, for the report."""
    return {
        "command": "python -m onionchat serve --port 0 --data-dir TMP --log-format json",
        "environment": dict(NODE_ENV if env is None else env),
        "log_level": "info (the default)",
        "send_queue_bytes": "default (1 MiB)",
        "why": "account creation (argon2, PBKDF2) and the per-connection abuse limit are not "
        "what is measured; everything else is the node's default",
    }


class OnionChatServer(Server):
    """`python -m onionchat serve --port 0` in a fresh data directory."""

    name = "onionchat"
    wire = "onionchat"

    def __init__(self, python: Path | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.python = python or Path(sys.executable)
        self.env = dict(NODE_ENV) | (env or {})
        self.data_dir = Path(tempfile.mkdtemp(prefix="onionchat-bench-"))
        self._starts = 0

    @property
    def database(self) -> Path:
        return self.data_dir / "onionchat.sqlite3"

    def settings(self) -> dict[str, Any]:
        return node_settings(self.env)

    def start(self) -> None:
        self._starts += 1
        env = clean_env("ONIONCHAT_") | self.env
        argv = [str(self.python), "-m", "onionchat", "serve", "--port", "0"]
        argv += ["--data-dir", str(self.data_dir), "--log-format", "json"]
        self._spawn(argv, env, self.data_dir, self.data_dir / f"node-{self._starts}.log")

        def port(text: str) -> int | None:
            for line in text.splitlines():
                if '"start"' in line:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("event") == "start":
                        return int(entry["port"])
            return None

        self.port = self._wait_for(port, "its port")
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                r = httpx.get(f"http://{HOST}:{self.port}/api/health", timeout=2.0, trust_env=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise TargetError("the node exited:\n" + self.log_tail())
            time.sleep(0.05)
        raise TargetError("the node never answered /api/health:\n" + self.log_tail())

    def prepare(self, users: int) -> list[dict[str, Any]]:
        """Register `users` accounts (concurrently); returns their session tokens."""
        return asyncio.run(register(self.port, [f"bench_{i:05d}" for i in range(users)]))

    def disconnects(self, code: int) -> list[dict[str, Any]]:
        """The node's `disconnect` log events with this close code (in its current log)."""
        out = []
        assert self.log_path is not None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"disconnect"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "disconnect" and entry.get("code") == code:
                out.append(entry)
        return out

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def register(port: int, names: list[str], concurrency: int = 16) -> list[dict[str, Any]]:
    from onionchat.crypto import login_secret

    base = f"http://{HOST}:{port}"
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=60.0, trust_env=False
    ) as http:
        r = await http.post("/api/prelogin", json={"username": "nobody-" + secrets.token_hex(4)})
        r.raise_for_status()
        iterations = int(r.json()["iterations"])
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> dict[str, Any]:
            salt = os.urandom(16)
            secret = login_secret(PASSWORD, salt, iterations)
            body = {"username": name, "salt": b64(salt), "iterations": iterations}
            body["secret"] = b64(secret)
            async with gate:
                r = await http.post("/api/register", json=body)
            if r.status_code != 201:
                raise TargetError(f"register {name}: {r.status_code} {r.text}")
            return {"user": name, "token": r.json()["token"]}

        return list(await asyncio.gather(*(one(n) for n in names)))


# -- the wire, in the load-generator workers ----------------------------------------------


class Frame(msgspec.Struct):
    """The fields of a node frame the bench looks at; the others are skipped unread."""

    type: str = ""
    text: str | None = None
    ref: str | None = None
    id: str | None = None
    code: str | None = None
    message: str | None = None


_decoder = msgspec.json.Decoder(Frame)
_decode_lines = _decoder.decode_lines
_quote = msgspec.json.encode


class RequestError(Exception):
    """The node answered a request with an `error` frame."""


class OnionChatClient(ChatClient):
    kind = "onionchat"
    has_acks = True

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.pending: dict[str, asyncio.Future[tuple[Frame, bytes, int]]] = {}
        self._refs = 0
        self.acks = 0
        self._send_prefix: dict[str, bytes] = {}

    async def login(
        self, host: str, port: int, creds: dict[str, Any], rcvbuf: int | None = None
    ) -> None:
        await self.open(host, port, "/ws", rcvbuf=rcvbuf)
        waiter = self._expect("ready")
        self.send_text(b'{"v":1,"type":"auth","token":' + _quote(creds["token"]) + b"}")
        await waiter

    def _expect(self, key: str) -> asyncio.Future[tuple[Frame, bytes, int]]:
        future: asyncio.Future[tuple[Frame, bytes, int]]
        future = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        return future

    def _ref(self) -> str:
        self._refs += 1
        return f"r{self._refs}"

    async def request(self, frame: dict[str, Any]) -> tuple[Frame, bytes, int]:
        """Send a frame with a fresh `ref`; returns the answer (frame, raw line, arrival)."""
        ref = self._ref()
        waiter = self._expect(ref)
        self.send_text(msgspec.json.encode(frame | {"v": 1, "ref": ref}))
        return await waiter

    async def join(self, room: str, protected: bool = False) -> None:
        await self.request({"type": "join", "room": room, "create": True, "protected": protected})

    def send_box(self, room: str, box: str, ref: str | None = None) -> None:
        frame = b'{"v":1,"type":"send","room":' + _quote(room) + b',"box":' + _quote(box)
        self.send_text(frame + (b"}" if ref is None else b',"ref":' + _quote(ref) + b"}"))

    def send_message(self, room: str, text: str, ref: str | None = None) -> None:
        prefix = self._send_prefix.get(room)
        if prefix is None:
            prefix = b'{"v":1,"type":"send","room":' + _quote(room) + b',"text":'
            self._send_prefix[room] = prefix
        if ref is None:
            self.send_text(prefix + _quote(text) + b"}")
        else:
            self.send_text(prefix + _quote(text) + b',"ref":' + _quote(ref) + b"}")

    def fill(self, room: str, requests: int) -> None:
        """History pages of 200 messages: each a large frame for this client alone."""
        frame = b'{"v":1,"type":"history","limit":200,"room":' + _quote(room) + b"}"
        for _ in range(requests):
            self.send_text(frame)

    def handle(self, payload: bytes, now: int) -> None:
        sink = self.sink
        frames = _decode_lines(payload)
        self.frames += len(frames)
        for f in frames:
            kind = f.type
            if kind == "message":
                if sink is not None and f.text is not None:
                    sink.message(self, f.text, now)
            elif kind == "ack":
                self.acks += 1
                if sink is not None:
                    sink.ack(self, f.ref, f.id, now)
            elif kind == "presence":
                self.presence += 1
            else:
                self._control(kind, f, payload, now)

    def _control(self, kind: str, f: Frame, line: bytes, now: int) -> None:
        """Answers to requests; `line` is the whole message it came in (for sizes and for
        decoding it in full)."""
        key = "ready" if kind == "ready" else f.ref
        if kind == "error":
            self.errors += 1
            self.last_error = f"{f.code}: {f.message}"
        if key is None:
            return
        waiter = self.pending.pop(key, None)
        if waiter is None or waiter.done():
            return
        if kind == "error":
            waiter.set_exception(RequestError(self.last_error))
        else:
            waiter.set_result((f, line, now))

    def on_close(self) -> None:
        error = ConnectionError(f"closed ({self.close_code})")
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(error)
        self.pending.clear()
