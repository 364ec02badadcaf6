"""A light WebSocket client (RFC 6455) over a plain asyncio Protocol.

Just enough for a load generator: the opening handshake, masked client text frames, and a
parser for server frames (fragmented messages, ping → pong, close). Whole text messages go
to `on_text` as bytes together with the time they arrived (`time.monotonic_ns()`, taken once
per read), so a subclass can decode them however it likes. No per-message-deflate, no
extensions, no subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, cast

_apply_mask: Callable[[bytes, bytes], bytes] | None
try:  # the C mask of `websockets`, when it is installed
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover
    _apply_mask = None

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PACK_2 = struct.Struct("!BBH").pack
_PACK_8 = struct.Struct("!BBQ").pack
_UNPACK_2 = struct.Struct("!H").unpack_from
_UNPACK_8 = struct.Struct("!Q").unpack_from

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR a payload with a 4-byte masking key."""
    if _apply_mask is not None:
        return bytes(_apply_mask(payload, key))
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = _PACK_2(0x80 | opcode, 0x80 | 126, n)
    else:
        head = _PACK_8(0x80 | opcode, 0x80 | 127, n)
    return head + key + mask(payload, key)


class HandshakeError(Exception):
    """The server did not switch protocols."""


class WSClient(asyncio.Protocol):
    """One WebSocket connection. Subclasses override `on_text` (and maybe `on_close`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._key = ""
        self._head = b""
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._handshaking = True
        self.headers: dict[str, str] = {}
        self._writable: asyncio.Future[None] | None = None  # set while the transport is full

    # -- connecting -----------------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Open a TCP connection with TCP_NODELAY and complete the opening handshake."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if rcvbuf is not None:  # before connecting, so the window stays small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                await loop.create_connection(lambda: self, sock=sock)
                self.handshake(host, port, path, headers or {})
                await self.opened
        except BaseException:
            if self.transport is not None:
                self.transport.abort()
            sock.close()
            raise

    def handshake(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self._key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode())

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def writable(self, timeout: float = 0.5) -> None:
        """Until the transport takes more (its buffer under the high-water mark), closes, or
        `timeout` passes."""
        if self._writable is not None:
            waits: list[asyncio.Future[Any]] = [self._writable, self.closed]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)
        self.on_close()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.bytes_in += len(data)
        if self._handshaking:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._handshaking = False
            self._check_handshake(head)
            if not data:
                return
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        pos = self._parse(buf, now)
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < len(buf):
            self._buf = bytearray(buf[pos:])

    def _check_handshake(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(
            hashlib.sha1(self._key.encode() + _GUID, usedforsecurity=False).digest()
        ).decode()
        if len(status) < 2 or status[1] != "101":
            error = HandshakeError(f"handshake refused: {lines[0]}")
        elif self.headers.get("sec-websocket-accept") != accept:
            error = HandshakeError("bad Sec-WebSocket-Accept")
        else:
            self.opened.set_result(None)
            return
        self.opened.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def _parse(self, buf: bytes | bytearray, now: int) -> int:
        """Handle every complete frame in `buf`; returns how many bytes were used."""
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = _UNPACK_2(buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = _UNPACK_8(buf, pos + 2)[0]
                head = 10
            key = b""
            if b1 & 0x80:  # servers must not mask, but tolerate it
                if n - pos < head + 4:
                    break
                key = bytes(buf[pos + head : pos + head + 4])
                head += 4
            end = pos + head + length
            if end > n:
                break
            payload = bytes(buf[pos + head : end])
            if key:
                payload = mask(payload, key)
            pos = end
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY):
                if b0 & 0x80:
                    self.on_text(payload, now)
                else:
                    self._fragments = [payload]
            elif opcode == OP_CONT:
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole = b"".join(self._fragments)
                    self._fragments = []
                    self.on_text(whole, now)
            elif opcode == OP_PING:
                self._write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
        return pos

    def _on_close_frame(self, payload: bytes) -> None:
        code = _UNPACK_2(payload, 0)[0] if len(payload) >= 2 else 1005
        if self.close_code is None:
            self.close_code = code
            self._write(client_frame(OP_CLOSE, payload[:2]))
        if not self.closed.done():
            self.closed.set_result(code)
        if self.transport is not None:
            self.transport.close()

    # -- sending --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.bytes_out += len(data)
            self.transport.write(data)

    def send_text(self, payload: bytes) -> None:
        """Send one text message (the payload must be UTF-8)."""
        self._write(client_frame(OP_TEXT, payload))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the transport is dropped when the server answers."""
        if self.close_code is None:
            self.close_code = code
            self._write(client_frame(OP_CLOSE, struct.pack("!H", code)))
        loop = asyncio.get_running_loop()
        if self.transport is not None:
            loop.call_later(2.0, self.transport.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- for subclasses -------------------------------------------------------------------

    def on_text(self, payload: bytes, now: int) -> None:
        """A whole text (or binary) message, and when its last bytes arrived."""

    def on_close(self) -> None:
        """The TCP connection is gone."""
