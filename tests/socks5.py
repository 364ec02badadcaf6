"""A small SOCKS5 proxy (RFC 1928: no authentication, CONNECT) for the client's tests.

Tor is the real proxy and comes with its own tests; this one exists to prove what Tor could not
show as plainly: that the client hands names to the proxy instead of resolving them. It knows
names no resolver knows (`names`), records every request, and relays bytes for real. Told to
(`replies`), it refuses a host with a given reply code, as tor does for an onion it cannot reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import socket
import struct


@dataclasses.dataclass
class Request:
    kind: str  # "domain", "ipv4" or "ipv6"
    host: str
    port: int


class Socks5Proxy:
    def __init__(self, names: dict[str, str], replies: dict[str, int] | None = None) -> None:
        self.names = names
        self.replies = replies or {}
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Socks5Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handshake(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 0 not in methods:
            writer.write(b"\x05\xff")
            writer.close()
            return
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
            name = "ipv4"
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
            name = "ipv6"
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
            name = "domain"
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.requests.append(Request(name, host, port))
        if host in self.replies:
            writer.write(bytes([5, self.replies[host], 0, 1]) + bytes(6))
            writer.close()
            return
        address = self.names.get(host, host if name != "domain" else None)
        if command != 1 or address is None:
            writer.write(b"\x05\x04\x00\x01" + bytes(6))  # host unreachable
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(address, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            writer.close()
            return
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", 0))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
