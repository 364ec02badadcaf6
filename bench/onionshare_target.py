"""OnionShare's chat (onionshare-cli 2.7) under test: its own venv, the process, its wire.

The wire, from onionshare_cli/web/chat_mode.py and its static chat.js: a client first gets
a Flask session cookie from `GET /` (the session holds the user name), then opens
Socket.IO on `/socket.io/?EIO=4&transport=websocket` with that cookie. Engine.IO v4: the
server opens with `0{...}` and pings with `2` (answered `3`). Socket.IO: the client connects
the `/chat` namespace with `40/chat,` (the server answers `40/chat,{"sid":...}`, or
`44/chat,...` when the name is taken, and broadcasts a `status` event with the full list of
connected users to everyone), emits `42/chat,["text",{"msg":...}]`, and every client (the
sender included) receives `42/chat,["chat_message",{"username":...,"msg":...}]`. There are
no rooms, no acknowledgements, no history and no persistence.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.target import HOST, ChatClient, Server, TargetError, clean_env

VERSION = "2.7"
VENV = Path(__file__).resolve().parent / ".onionshare-venv"
EIO_PATH = "/socket.io/?EIO=4&transport=websocket"


def ensure_installed(venv: Path = VENV) -> Path:
    """Create the venv with onionshare-cli from PyPI once; returns its `onionshare-cli`."""
    exe = venv / "bin" / "onionshare-cli"
    marker = venv / f".installed-{VERSION}"
    if not marker.exists():
        print(f"bench: installing onionshare-cli=={VERSION} into {venv}", file=sys.stderr)
        if not (venv / "bin" / "python").exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, f"onionshare-cli=={VERSION}"], check=True)
        marker.touch()
    if shutil.which("tor") is None:
        # onionshare-cli refuses to start without a tor binary, even with --local-only
        # (which never runs it); tor is a Debian package the project needs anyway
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print("bench: installing Debian's tor (onionshare-cli insists on it)", file=sys.stderr)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "tor"], check=True, env=env)
        else:
            raise TargetError("onionshare-cli needs a `tor` binary on PATH: install tor")
    return exe


def server_settings() -> dict[str, Any]:
    """How the bench runs OnionShare, for the report."""
    return {
        "command": "onionshare-cli --chat --local-only --public",
        "version": VERSION,
        "venv": "bench/.onionshare-venv",
        "server": "Flask-SocketIO on gevent, one process; no persistence, no acks",
    }


class OnionShareServer(Server):
    """`onionshare-cli --chat --local-only --public` (it picks its own port in 17600-17650)."""

    name = "onionshare"
    wire = "onionshare"

    def __init__(self) -> None:
        super().__init__()
        self.exe = ensure_installed()
        self.home = Path(tempfile.mkdtemp(prefix="onionshare-bench-"))

    def settings(self) -> dict[str, Any]:
        return server_settings()

    def start(self) -> None:
        env = clean_env() | {"HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        argv = [str(self.exe), "--chat", "--local-only", "--public"]
        self._spawn(argv, env, self.home, self.home / "onionshare.log")
        pattern = re.compile(r"http://127\.0\.0\.1:(\d+)")

        def port(text: str) -> int | None:
            m = pattern.search(text)
            return int(m.group(1)) if m else None

        self.port = self._wait_for(port, "its address")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if (
                    httpx.get(
                        f"http://{HOST}:{self.port}/", timeout=2.0, trust_env=False
                    ).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TargetError("onionshare never answered GET /:\n" + self.log_tail())

    def prepare(self, users: int) -> list[dict[str, Any]]:
        return [{"user": f"bench-{i:05d}"} for i in range(users)]

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


# -- the wire, in the load-generator workers ----------------------------------------------


class ChatPayload(msgspec.Struct):
    username: str = ""
    msg: str = ""


_decode_chat = msgspec.json.Decoder(tuple[str, ChatPayload]).decode
_quote = msgspec.json.encode
_CHAT = b'42/chat,["chat_message"'
_STATUS = b'42/chat,["status"'


async def _http(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange with `Connection: close`: status, headers (cookies joined)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    cookies = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "set-cookie":
            cookies.append(value.split(";", 1)[0])
        headers[name] = value
    headers["set-cookie"] = "; ".join(cookies)
    return status, headers, body


class OnionShareClient(ChatClient):
    kind = "onionshare"
    has_acks = False

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self._open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joined: asyncio.Future[None] | None = None
        self.cookie = ""

    async def login(
        self, host: str, port: int, creds: dict[str, Any], rcvbuf: int | None = None
    ) -> None:
        hostport = f"{host}:{port}"
        status, headers, _ = await _http(
            host, port, f"GET / HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode()
        )
        if status != 200 or not headers["set-cookie"]:
            raise TargetError(f"GET / answered {status} without a session cookie")
        cookie = headers["set-cookie"]
        body = _quote({"username": creds["user"]})
        status, headers, answer = await _http(
            host,
            port,
            (
                f"POST /update-session-username HTTP/1.1\r\nHost: {hostport}\r\n"
                f"Cookie: {cookie}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body,
        )
        if status != 200 or b'"success":true' not in answer.replace(b" ", b""):
            raise TargetError(f"update-session-username answered {status}: {answer[:200]!r}")
        self.cookie = headers["set-cookie"] or cookie
        await self.open(host, port, EIO_PATH, {"Cookie": self.cookie}, rcvbuf=rcvbuf)
        await self._open

    async def join(self, room: str, protected: bool = False) -> None:
        """OnionShare has one room: connecting the `/chat` namespace is joining it."""
        self._joined = asyncio.get_running_loop().create_future()
        self.send_text(b"40/chat,")
        await self._joined

    def send_message(self, room: str, text: str, ref: str | None = None) -> None:
        self.send_text(b'42/chat,["text",{"msg":' + _quote(text) + b"}]")

    def handle(self, payload: bytes, now: int) -> None:
        self.frames += 1
        if payload.startswith(_CHAT):
            sink = self.sink
            if sink is not None:
                sink.message(self, _decode_chat(payload[8:])[1].msg, now)
        elif payload.startswith(_STATUS):
            self.presence += 1
        elif payload == b"2":
            self.send_text(b"3")
        elif payload.startswith(b"0"):
            if not self._open.done():
                self._open.set_result(None)
        elif payload.startswith(b"40/chat"):
            if self._joined is not None and not self._joined.done():
                self._joined.set_result(None)
        elif payload.startswith(b"44/chat"):
            self.errors += 1
            self.last_error = payload[:200].decode(errors="replace")
            if self._joined is not None and not self._joined.done():
                self._joined.set_exception(TargetError(f"refused: {self.last_error}"))

    def on_close(self) -> None:
        error = ConnectionError(f"closed ({self.close_code})")
        for future in (self._open, self._joined):
            if future is not None and not future.done():
                future.set_exception(error)
