"""Files of other nodes' messages, fetched when a member here asks for one: this node asks
the writer's node (a `want` on that node's own topic), which sends the bytes as they were
uploaded (sealed by the client, in a key-protected room) in chunks, each signed like every
envelope, on this node's topic; once all have come they are kept like a file sent here.
Nothing is pushed: a file costs the brokers and the other nodes only when someone opens it.

Bounded: a fetch waits `FETCH_TIMEOUT` at most, `FETCHES` run at once, a peer's wants are
answered at `WANTS` a minute, a chunk that nobody asked for or does not fit is dropped, and a
file is no larger than this node's `files.max_bytes` (nor over its room's `files.room_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from onionchat import names
from onionchat.federation import envelope
from onionchat.federation.envelope import Broken, ChunkBody, WantBody
from onionchat.files import new_id
from onionchat.ratelimit import Buckets
from onionchat.store import OverQuota, Room, StoredFile

if TYPE_CHECKING:
    from onionchat.node import Node

log = logging.getLogger("onionchat.federation")
CHUNK = 96 * 1024  # bytes of a file in one chunk: its base64 and envelope fit a publish
FETCH_TIMEOUT = 60.0
FETCHES = 8
WANTS = 60  # a minute, per peer

Send = Callable[[str, bytes], Awaitable[None]]  # (node, payload) → published to it


@dataclasses.dataclass
class _Fetch:
    room: Room
    asked: str  # the room as the writer's node names it
    file: str
    message: str
    uploader: str
    size: int
    path: str
    done: asyncio.Future[bool]
    got: set[int] = dataclasses.field(default_factory=set)


class Fetcher:
    def __init__(self, node: Node, name: str, sign: Callable[[envelope.Body], bytes], send: Send):
        self.node = node
        self.name = name
        self._sign = sign
        self._send = send
        self._fetches: dict[str, _Fetch] = {}  # by file id
        self._wants = Buckets(WANTS / 60, WANTS, 1000)

    # -- asking ---------------------------------------------------------------------------

    async def fetch(self, room: Room, file_id: str) -> bool:
        """The file of a message another node wrote here, brought from that node; whether it
        is here now."""
        message = await self.node.store.message_of_file(room, file_id)
        if message is None or message.file is None or "@" not in message.sender:
            return False
        origin = message.sender.rpartition("@")[2]
        asked = room.name
        if room.name.startswith("@"):  # a conversation: as the writer's node names it
            there = names.direct_room_there(room.name, self.name)
            if there is None or there[0] != origin:
                return False
            asked = there[1]
        found = self._fetches.get(file_id)
        if found is None:
            if len(self._fetches) >= FETCHES:
                return False
            if message.file.size > self.node.files.settings.max_bytes:
                return False
            self.node.files.directory.mkdir(mode=0o700, exist_ok=True)
            path = str(self.node.files.directory / f"{new_id()}.part")
            loop = asyncio.get_running_loop()
            found = _Fetch(room, asked, file_id, message.id, names.key(message.sender),
                           message.file.size, path, loop.create_future())  # fmt: skip
            self._fetches[file_id] = found
            want = WantBody(origin=self.name, to=origin, room=asked, file=file_id,
                            ts=int(time.time() * 1000))  # fmt: skip
            await self._send(origin, self._sign(want))
        try:
            return await asyncio.wait_for(asyncio.shield(found.done), FETCH_TIMEOUT)
        except TimeoutError:
            self._end(found, False)
            return False

    async def chunk(self, body: ChunkBody) -> None:
        """A piece of a file asked for: written where it goes; the last one makes it a file."""
        fetch = self._fetches.get(body.file)
        if body.to != self.name or fetch is None or body.room != fetch.asked:
            raise Broken("a file chunk nobody here asked for")
        count = math.ceil(fetch.size / CHUNK)
        length = min(CHUNK, fetch.size - body.index * CHUNK)
        if body.size != fetch.size or body.count != count or not 0 <= body.index < count:
            raise Broken("a file chunk that does not fit its file")
        if len(body.data) != length:
            raise Broken("a file chunk that does not fit its file")
        if body.index in fetch.got:
            return
        fd = os.open(fetch.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, body.data, body.index * CHUNK)
        finally:
            os.close(fd)
        fetch.got.add(body.index)
        if len(fetch.got) < count:
            return
        files = self.node.files
        stored = StoredFile(fetch.file, fetch.room.id, fetch.uploader, fetch.size,
                            int(time.time()), fetch.message)  # fmt: skip
        try:
            await self.node.store.add_file(stored, None, files.settings.room_bytes)
        except OverQuota:
            self._end(fetch, False)
            return
        os.replace(fetch.path, files.path(fetch.file))
        self._end(fetch, True)

    def _end(self, fetch: _Fetch, done: bool) -> None:
        self._fetches.pop(fetch.file, None)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(fetch.path)
        if not fetch.done.done():
            fetch.done.set_result(done)

    # -- answering ------------------------------------------------------------------------

    async def wanted(self, body: WantBody, shares: Callable[[str], bool]) -> None:
        """Another node's member asks for a file of a message written here: sent, if it is
        one of a room shared with that node, in chunks on its topic."""
        if body.to != self.name:
            return
        direct = body.room.startswith("@")
        if not (direct or shares(body.room)) or not self._wants.allow(body.origin):
            raise Broken("a file wanted of a room not shared, or too often")
        room = await self.node.store.room(body.room)
        stored = await self.node.store.file(body.file)
        message = await self.node.store.message_of_file(room, body.file) if room else None
        if stored is None or message is None or "@" in message.sender:
            raise Broken("a file wanted that is not one written here")
        if direct and not (message.to or "").endswith(f"@{body.origin}"):
            raise Broken("a file wanted of a conversation the asker has no part in")
        path = self.node.files.path(body.file)
        data = await asyncio.to_thread(path.read_bytes)
        count = math.ceil(len(data) / CHUNK)
        for index in range(count):
            chunk = ChunkBody(origin=self.name, to=body.origin, room=body.room, file=body.file,
                              index=index, count=count, size=len(data),
                              data=data[index * CHUNK : (index + 1) * CHUNK])  # fmt: skip
            await self._send(body.origin, self._sign(chunk))
