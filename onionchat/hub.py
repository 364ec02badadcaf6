"""Live connections: who is connected, who is in which room, and fan-out to them.

Every connection has its own bounded queue of encoded frames. Fan-out only appends the same
string to each member's queue, so a room never waits on any one client: one that stops
reading fills its queue and is closed as too slow (4009) while the others go on.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from onionchat import names
from onionchat.auth import Session
from onionchat.protocol import Close


class Connection:
    """One authenticated client connection, seen from the core (no transport in here).

    Thousands may sit idle, so it keeps to a list and two futures (an asyncio.Event costs a
    deque of its own)."""

    __slots__ = (
        "_ended",
        "_frames",
        "_held",
        "_limit",
        "_waiter",
        "close_code",
        "close_reason",
        "rooms",
        "sending",
        "session",
        "user",
        "user_key",
    )

    def __init__(self, session: Session, limit: int) -> None:
        self.session = session
        self.user = session.user.name
        self.user_key = names.key(session.user.name)
        self.rooms: set[str] = set()
        self._frames: list[str] = []
        self._held: dict[str, list[str]] | None = None
        self._limit = limit
        self.sending = False  # the transport is writing: a client that stops reading shows here
        self._waiter: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""

    def send(self, frame: str, room: str | None = None) -> None:
        """Queue a frame; never blocks. A queue that fills while the transport is stuck
        writing closes the connection as too slow; a burst the writer has not yet had a turn
        for (a join storm) does not."""
        if self.close_code is not None:
            return
        if self._held is not None and room in self._held:
            self._held[room].append(frame)
            return
        if self.sending and len(self._frames) >= self._limit:
            self.close(
                Close.TOO_SLOW,
                f"too slow: {self._limit} frames were waiting for this client",
            )
            return
        self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def drain(self) -> list[str]:
        """Wait for frames, then take every frame waiting."""
        if not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    def hold(self, room: str) -> None:
        """Keep the room's frames back until `release`: `joined` goes first."""
        if self._held is None:
            self._held = {}
        self._held[room] = []

    def release(self, room: str, deliver: bool = True) -> None:
        if self._held is None:
            return
        frames = self._held.pop(room, [])
        if not self._held:
            self._held = None
        for frame in frames if deliver else ():
            self.send(frame)

    def take(self) -> list[str]:
        frames, self._frames = self._frames, []
        return frames

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a client too slow for them gets none)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            if code == Close.TOO_SLOW:
                self._frames.clear()
            self.end()

    def end(self) -> None:
        """The connection is over, closed by the node or by the client."""
        if not self._ended.done():
            self._ended.set_result(None)

    async def wait_ended(self) -> None:
        await self._ended


class Hub:
    def __init__(self) -> None:
        self._rooms: dict[str, set[Connection]] = {}
        self._present: dict[str, collections.Counter[str]] = {}
        self._names: dict[str, str] = {}
        self._users: dict[str, set[Connection]] = {}

    @property
    def connections(self) -> int:
        return sum(len(conns) for conns in self._users.values())

    def attach(self, conn: Connection) -> None:
        self._users.setdefault(conn.user_key, set()).add(conn)
        self._names[conn.user_key] = conn.user

    def detach(self, conn: Connection) -> None:
        """Forget a connection (leave its rooms first to tell the others)."""
        for room in tuple(conn.rooms):
            self.leave(conn, room)
        conns = self._users.get(conn.user_key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._users[conn.user_key]

    def join(self, conn: Connection, room: str) -> bool:
        """Add a connection to a room; True when its user was not present there before."""
        if room in conn.rooms:
            return False
        conn.rooms.add(room)
        self._rooms.setdefault(room, set()).add(conn)
        present = self._present.setdefault(room, collections.Counter())
        present[conn.user_key] += 1
        return present[conn.user_key] == 1

    def leave(self, conn: Connection, room: str) -> bool:
        """Remove a connection from a room; True when its user is no longer present there."""
        if room not in conn.rooms:
            return False
        conn.rooms.discard(room)
        members = self._rooms[room]
        members.discard(conn)
        present = self._present[room]
        present[conn.user_key] -= 1
        last = present[conn.user_key] == 0
        if last:
            del present[conn.user_key]
        if not members:
            del self._rooms[room]
            del self._present[room]
        return last

    def members(self, room: str) -> list[str]:
        """Names of the users present in a room."""
        return [self._names[key] for key in sorted(self._present.get(room, ()))]

    def online(self, room: str) -> int:
        return len(self._present.get(room, ()))

    def user_connections(self, user_key: str) -> Iterable[Connection]:
        return tuple(self._users.get(user_key, ()))

    def broadcast(self, room: str, frame: str, skip: Connection | None = None) -> None:
        for conn in tuple(self._rooms.get(room, ())):
            if conn is not skip:
                conn.send(frame, room)

    def to_user(self, user_key: str, frame: str) -> None:
        for conn in tuple(self._users.get(user_key, ())):
            conn.send(frame)

    def session_connections(self, token_hash: bytes) -> list[Connection]:
        return [
            conn
            for conns in self._users.values()
            for conn in conns
            if conn.session.token_hash == token_hash
        ]
