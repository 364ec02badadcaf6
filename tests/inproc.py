"""The in-process test tier: a whole node (store, accounts, node, features) built by the
composition root (`onionchat.server`) in the test's own event loop, without HTTP, and members
that speak to it through the node's own connections.

Real SQLite files, the real node and its features; only the WebSocket is left out, so that the
many cases where several nodes meet (federation) run in milliseconds. What the transport adds
(sockets, heads, the WebSocket's own limits) is tested against real processes elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from onionchat import config, crypto, server
from onionchat.hub import Connection
from onionchat.server import Server

from conftest import FAST_AUTH, PASSWORD, Frames


@contextlib.asynccontextmanager
async def running(data_dir: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[Server]:
    """A node in this process with the tests' fast settings (and `env` over them)."""
    settings = config.load(
        env={**FAST_AUTH, "ONIONCHAT_SERVER_DATA_DIR": str(data_dir), **(env or {})}
    )
    async with server.running(settings) as parts:
        yield parts


class Member(Frames):
    """One user's connection to an in-process node: frames go in as a transport hands them
    over (`Node.receive`), and come out of the connection's queue."""

    def __init__(self, parts: Server, conn: Connection, token: str) -> None:
        self.parts = parts
        self.conn = conn
        self.token = token
        self.user = conn.user
        self.seen: list[dict[str, Any]] = []
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._pings = 0

    async def send(self, **frame: Any) -> None:
        await self.parts.node.receive(self.conn, json.dumps({"v": 1, **frame}))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if not self._pending:
            async with asyncio.timeout(timeout):
                frames = await self.conn.drain()
            self.conn.written()
            self._pending.extend(json.loads(f) for f in frames)
        frame = self._pending.popleft()
        self.seen.append(frame)
        return frame


async def member(parts: Server, name: str) -> Member:
    """A new account on the node, connected (the password derived as clients do)."""
    salt = secrets.token_bytes(16)
    iterations = int(FAST_AUTH["ONIONCHAT_AUTH_PBKDF2_ITERATIONS"])
    secret = crypto.login_secret(PASSWORD, salt, iterations)
    _, token, _ = await parts.accounts.register(name, salt, iterations, secret)
    return await connection(parts, token)


async def connection(parts: Server, token: str) -> Member:
    """A connection of the session `token` (`Member.token`: one more of the same user)."""
    conn = await parts.node.connect(await parts.accounts.session(token))
    joined = Member(parts, conn, token)
    await joined.expect("ready")
    return joined
