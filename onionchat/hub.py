"""Live connections: who is connected, who is in which room, and fan-out to them.

Every connection has its own bounded queue of encoded frames. Fan-out only appends the same
string to each member's queue, so a room never waits on any one client: one that stops
reading fills its queue and is closed as too slow (4009) while the others go on.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from collections.abc import Iterable

from onionchat import i18n, names
from onionchat.auth import Session
from onionchat.i18n import say
from onionchat.protocol import Close
from onionchat.ratelimit import TokenBucket


class Budget:
    """Bytes waiting for one user's connections together, so that opening more connections
    does not multiply what one user may make the node hold."""

    __slots__ = ("limit", "queued")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0


class Connection:
    """One authenticated client connection, seen from the core (no transport in here).

    What waits for the client is bounded in bytes (the memory each frame really takes), for
    the connection and for its user across connections, from the moment a frame is queued
    until the transport has written it. Thousands may sit idle, so it keeps to a list and two
    futures (an asyncio.Event costs a deque of its own)."""

    __slots__ = (
        "_bytes",
        "_ended",
        "_ending",
        "_flight",
        "_frames",
        "_held",
        "_limit",
        "_settled",
        "_waiter",
        "accepted",
        "bucket",
        "budget",
        "close_code",
        "close_reason",
        "entering",
        "lang",
        "pipeline",
        "rooms",
        "session",
        "strikes",
        "user",
        "user_key",
    )

    def __init__(self, session: Session, limit: int, budget: Budget | None = None) -> None:
        self.session = session
        self.user = session.user.name
        self.user_key = names.key(session.user.name)
        self.lang = session.user.lang  # what the node says is read out in it (i18n.said)
        self.accepted: str | None = None  # the language its transport asked for, if any
        self.rooms: set[str] = set()
        self.budget = budget or Budget(limit)
        self.bucket: TokenBucket | None = None  # the node's rate limit for this connection
        self.strikes = 0.0
        self.pipeline = 0  # messages that may be committing while the next frames are read
        self.entering = 0  # and those that are
        self._frames: list[str] = []
        self._held: dict[str, list[str]] | None = None
        self._limit = limit
        self._bytes = 0  # queued, held back and being written
        self._flight = 0  # of which the transport took, and is writing
        self._waiter: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ending = False
        self._settled: asyncio.Future[None] | None = None  # for `settled`, while it waits
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def pending(self) -> int:
        """Bytes waiting for this client, until the transport has written them."""
        return self._bytes

    def send(self, frame: str, room: str | None = None) -> None:
        """Queue a frame; never blocks. One that would put the connection or its user over
        their bound in bytes closes the connection as too slow instead."""
        if self.close_code is not None and (not self.entering or self.close_code == Close.TOO_SLOW):
            return  # closed; but the acks of what it sent before still go out, before the close
        cost = sys.getsizeof(frame)
        if self._bytes + cost > self._limit or self.budget.queued + cost > self.budget.limit:
            mine = self._bytes + cost > self._limit
            limit = self._limit if mine else self.budget.limit
            whose = say("this client") if mine else say("this user")
            self.close(
                Close.TOO_SLOW,
                say(
                    "too slow: over {size} KiB were waiting for {whose}",
                    size=limit // 1024,
                    whose=whose,
                ),
            )
            return
        self._add(cost)
        if self._held is not None and room in self._held:
            self._held[room].append(frame)
            return
        self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _add(self, cost: int) -> None:
        self._bytes += cost
        self.budget.queued += cost

    def _release(self, cost: int) -> None:
        self._bytes -= cost
        self.budget.queued -= cost

    async def drain(self) -> list[str]:
        """Wait for frames, then take every frame waiting; they count until `written`."""
        if not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames, self._frames = self._frames, []
        self._flight += sum(map(sys.getsizeof, frames))
        return frames

    def written(self) -> None:
        """The transport has written what `drain` gave it."""
        self._release(self._flight)
        self._flight = 0

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
        self._release(sum(map(sys.getsizeof, frames)))
        for frame in frames if deliver else ():
            self.send(frame)

    def take(self) -> list[str]:
        """Every frame queued, for a transport that renders them itself (or drops them)."""
        frames, self._frames = self._frames, []
        self._release(sum(map(sys.getsizeof, frames)))
        return frames

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (a client too slow for them gets none)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = i18n.said(self.lang, reason)
            if code == Close.TOO_SLOW:
                self.take()
                self._held = None
                self._release(self._bytes - self._flight)
            self.end()

    def end(self) -> None:
        """The connection is over, closed by the node or by the client: once the messages it
        sent that are still committing are acknowledged."""
        if self.entering:
            self._ending = True
            return
        if not self._ended.done():
            self._ended.set_result(None)

    def entered(self) -> None:
        """One of the messages it sent was committed and acknowledged."""
        self.entering -= 1
        if self.entering:
            return
        if self._settled is not None:
            self._settled.set_result(None)
            self._settled = None
        if self._ending:
            self.end()

    async def settled(self) -> None:
        """Once every message it sent is committed and acknowledged."""
        while self.entering:
            if self._settled is None:
                self._settled = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._settled)

    async def wait_ended(self) -> None:
        await self._ended

    def forget(self) -> None:
        """Gone: nothing it held counts against its user any more."""
        self._frames.clear()
        self._held = None
        self._release(self._bytes)
        self._flight = 0


class Hub:
    def __init__(self) -> None:
        self._rooms: dict[str, set[Connection]] = {}
        self._present: dict[str, collections.Counter[str]] = {}
        self._names: dict[str, str] = {}
        self._users: dict[str, set[Connection]] = {}
        self._budgets: dict[str, Budget] = {}

    @property
    def connections(self) -> int:
        return sum(len(conns) for conns in self._users.values())

    def attach(self, conn: Connection) -> None:
        """Count a connection in; its queue shares its user's budget from now on."""
        budget = self._budgets.get(conn.user_key)
        if budget is None:
            budget = self._budgets[conn.user_key] = Budget(conn.budget.limit)
        budget.queued += conn.pending
        conn.budget = budget
        self._users.setdefault(conn.user_key, set()).add(conn)
        self._names[conn.user_key] = conn.user

    def user_count(self, user_key: str) -> int:
        return len(self._users.get(user_key, ()))

    def detach(self, conn: Connection) -> None:
        """Forget a connection (leave its rooms first to tell the others)."""
        for room in tuple(conn.rooms):
            self.leave(conn, room)
        conn.forget()
        conns = self._users.get(conn.user_key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._users[conn.user_key]
                self._budgets.pop(conn.user_key, None)

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

    def to_user(self, user_key: str, frame: str, skip: Connection | None = None) -> None:
        for conn in tuple(self._users.get(user_key, ())):
            if conn is not skip:
                conn.send(frame)

    def room_connections(self, room: str) -> list[Connection]:
        return list(self._rooms.get(room, ()))

    def all_connections(self) -> list[Connection]:
        return [conn for conns in self._users.values() for conn in conns]

    def session_connections(self, token_hash: bytes) -> list[Connection]:
        return [
            conn
            for conns in self._users.values()
            for conn in conns
            if conn.session.token_hash == token_hash
        ]
