"""A network of in-process nodes (tests/inproc.py) sharing rooms through real mosquitto brokers
(tests/brokers.py): keys made as an operator would, settings as environment variables."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from inproc import Member, running

from onionchat.federation.network import node_key
from onionchat.protocol import ProtocolError
from onionchat.server import Server, private_data_dir


class Network:
    def __init__(self, root: Path, names: list[str], brokers: list[str], **settings: str) -> None:
        self.root = root
        self.names = names
        self.brokers = brokers
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.settings = settings
        self.keys: dict[str, str] = {}
        for name in names:
            private_data_dir(self.data_dir(name))
            self.keys[name] = base64.b64encode(
                bytes(node_key(self.data_dir(name)).verify_key)
            ).decode()

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def env(self, name: str, **extra: str) -> dict[str, str]:
        peers = ",".join(f"{n}={k}" for n, k in self.keys.items() if n != name)
        env = {
            "ONIONCHAT_FEDERATION_NAME": name,
            "ONIONCHAT_FEDERATION_SECRET": self.secret,
            "ONIONCHAT_FEDERATION_PEERS": peers,
            "ONIONCHAT_FEDERATION_BROKERS": ",".join(self.brokers),
            "ONIONCHAT_LIMITS_RATE": "1000",
            "ONIONCHAT_LIMITS_BURST": "1000",
        }
        env.update({f"ONIONCHAT_FEDERATION_{k.upper()}": v for k, v in self.settings.items()})
        env.update(extra)
        return env

    @contextlib.asynccontextmanager
    async def node(self, name: str, **extra: str) -> AsyncIterator[Server]:
        async with running(self.data_dir(name), self.env(name, **extra)) as parts:
            yield parts

    @contextlib.asynccontextmanager
    async def all(self) -> AsyncIterator[list[Server]]:
        async with contextlib.AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(self.node(name)) for name in self.names]
            await linked(nodes)
            yield nodes


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    """Poll a condition (bounded): for states with no event to wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what or check}")


async def linked(nodes: list[Server], count: int | None = None) -> None:
    """Until every node's links (or `count` of them) are up and subscribed."""

    def up() -> bool:
        for parts in nodes:
            assert parts.federation is not None
            states = [link.status.state for link in parts.federation.links]
            if states.count("up") < (len(states) if count is None else count):
                return False
        return True

    await until(up, what="brokers connected")


async def messages(member: Member, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every message frame the member has had (those skipped while waiting for acks too),
    once `count` different ids have come, up to a barrier: a copy shown twice is among them."""

    def got() -> list[dict[str, Any]]:
        return [f for f in member.seen if f["type"] == "message"]

    async with asyncio.timeout(timeout):
        while len({m["id"] for m in got()}) < count:
            await member.recv(timeout)
    await member.barrier()
    return got()


async def history(parts: Server, room: str) -> list[tuple[str, str, str | None]]:
    """(id, sender, text) of a room's messages in the node's database (none: no room yet)."""
    try:
        found = await parts.node.room(room)
    except ProtocolError:
        return []
    stored, _ = await parts.store.history(found, None, 10_000)
    return [(m.id, m.sender, m.text) for m in stored]
