"""Who is where on the other nodes: each node tells, per shared room, which of its users are
present, and keeps what its peers told.

A node publishes a room's list of its present users when it changes (gathered over
`DEBOUNCE`), again every `HEARTBEAT` while it is not empty, and an empty one when the last
leaves or the node stops. Lists are retained on every broker, so a node that connects learns
its peers' at once; one not refreshed within `STALE` (a node gone without a word) is forgotten.
A list is a signed envelope like a message; a later list replaces an earlier one from the same
node, and the difference is shown to this node's members as presence frames of `name@node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from onionchat import names
from onionchat.federation import envelope
from onionchat.federation.envelope import Broken, PresenceBody
from onionchat.protocol import Presence, encode

if TYPE_CHECKING:
    from onionchat.federation.context import Context

log = logging.getLogger("onionchat.federation")

DEBOUNCE = 0.5  # seconds of joins and leaves told in one list
HEARTBEAT = 60.0  # seconds between two lists of a room that has not changed
STALE = 3 * HEARTBEAT + 30  # a list older than this is forgotten
LISTED = 1000  # names in one list at most (a bigger room is shown in part)


@dataclasses.dataclass
class Told:
    ts: int  # the list's time on its node
    heard: float  # when it came (monotonic)
    members: frozenset[str]


class Rosters:
    def __init__(self, federation: Context) -> None:
        self.fed = federation
        self.remote: dict[str, dict[str, Told]] = {}  # room -> peer -> its list
        self._dirty: set[str] = set()
        self._announced: set[str] = set()  # rooms whose last list from here was not empty
        self._tasks: list[asyncio.Task[None]] = []
        self._flush: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._heartbeats(), name="federation presence")]

    async def close(self) -> None:
        for task in [*self._tasks, *([self._flush] if self._flush else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # best effort: peers forget us at once
            for room in sorted(self._announced):
                await self._publish(room, [])

    # -- this node's lists ----------------------------------------------------------------

    def changed(self, room: str) -> None:
        """A user of this node came into a room or left it."""
        if not self.fed.shares(room):
            return
        self._dirty.add(room)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(DEBOUNCE)
        rooms, self._dirty = self._dirty, set()
        for room in sorted(rooms):
            await self._tell(room)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            for room in sorted(self._announced):
                await self._tell(room)
            self._forget_stale()

    async def _tell(self, room: str) -> None:
        members = self.fed.node.hub.members(room)
        if members or room in self._announced:
            await self._publish(room, members[:LISTED])
        if members:
            self._announced.add(room)
        else:
            self._announced.discard(room)

    async def _publish(self, room: str, members: list[str]) -> None:
        body = PresenceBody(
            origin=self.fed.name, room=room, members=tuple(members), ts=int(time.time() * 1000)
        )
        tag = envelope.room_tag(self.fed.network_key, room)
        topic = envelope.topic(self.fed.settings.network, self.fed.name, "p", tag)
        payload = envelope.seal([envelope.signed(body, self.fed.key)], self.fed.network_key)
        await asyncio.gather(*(link.send(topic, payload, retain=True) for link in self.fed.senders))

    # -- the peers' lists -----------------------------------------------------------------

    def heard(self, body: PresenceBody) -> None:
        if body.origin == self.fed.name:
            return
        if not self.fed.shares(body.room) or len(body.members) > LISTED:
            raise Broken("a presence list of a room not shared, or too long")
        if not self.fed.canonical(body.room, names.room) or not all(
            self.fed.canonical(m, names.username) for m in body.members
        ):
            raise Broken("a presence list with names not in their canonical form")
        rooms = self.remote.setdefault(body.room, {})
        before = rooms.get(body.origin)
        if before is not None and before.ts >= body.ts:
            return  # an older list, from another broker or a redelivery
        rooms[body.origin] = Told(body.ts, time.monotonic(), frozenset(body.members))
        old = before.members if before is not None else frozenset()
        self._show(body.room, body.origin, frozenset(body.members) - old, "join")
        self._show(body.room, body.origin, old - frozenset(body.members), "leave")

    def _show(self, room: str, origin: str, users: frozenset[str], state: str) -> None:
        for user in sorted(users):
            frame = Presence(room=room, user=f"{user}@{origin}", state=state)
            self.fed.node.hub.broadcast(room, encode(frame))

    def _forget_stale(self) -> None:
        now = time.monotonic()
        for room, peers in list(self.remote.items()):
            for origin, told in list(peers.items()):
                if now - told.heard > STALE:
                    del peers[origin]
                    self._show(room, origin, told.members, "leave")
            if not peers:
                del self.remote[room]

    def members(self, room: str) -> list[str]:
        """Who is present in a room on the other nodes, `name@node`, by node then name."""
        now = time.monotonic()
        return [
            f"{user}@{origin}"
            for origin, told in sorted(self.remote.get(room, {}).items())
            if now - told.heard <= STALE
            for user in sorted(told.members)
        ]
