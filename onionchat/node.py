"""What each frame does: the chat node's core, free of any transport.

A message is checked here (sender, room, size, body), given its identity, stored, acknowledged
and fanned out. Transports (the WebSocket endpoint now; federation and bots later) call into
`Node`; nothing in here knows of HTTP, MQTT or Tor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from onionchat import __version__, i18n, names
from onionchat.auth import Accounts, Session
from onionchat.authority import (
    NODE_STAFF,
    NODE_WIDE,
    STAFF,
    VOICE,
    Authority,
    Order,
    remaining,
)
from onionchat.config import Settings
from onionchat.files import Files
from onionchat.hub import Budget, Connection, Hub
from onionchat.i18n import say
from onionchat.ids import IdGenerator, is_valid
from onionchat.protocol import (
    MAC_BYTES,
    NONCE_BYTES,
    REACTION_CHARS,
    REACTIONS,
    Ack,
    AnyClientFrame,
    Close,
    Code,
    Deleted,
    FileRef,
    HistoryPageOut,
    Join,
    JoinedOut,
    Language,
    LanguageSet,
    Leave,
    Left,
    Message,
    Notice,
    Ping,
    Pong,
    Presence,
    ProtocolError,
    Ready,
    RoomInfo,
    RoomList,
    Rooms,
    Send,
    Topic,
    TopicChanged,
    Who,
    WhoList,
    decode,
    encode,
    encode_bytes,
    error,
    max_box_length,
    message_frame,
    relation,
)
from onionchat.protocol import History as HistoryRequest
from onionchat.ratelimit import Buckets, TokenBucket, Windows
from onionchat.store import Conflict, Lookalike, Modes, Room, Sanction, Store

log = logging.getLogger("onionchat.node")

MAX_TOPIC_CHARS = 300
STRIKE_WINDOW = 10.0  # seconds over which refused frames add up to a flood
WATCH = 2.0  # seconds between looks at whether `onionchat admin` changed roles or sanctions
EXPIRY_EVERY = 60.0  # seconds between rounds of deleting expired messages
EXPIRED_BATCH = 1000  # messages one round deletes in one room, at most
SPOKEN = 10_000  # (room, user) pairs slow mode remembers, at most
LINK = re.compile(r"(?i)\b(?:https?://|www\.)|\b[a-z2-7]{56}\.onion\b|\.(?:com|net|org|ru)/")
WAITING = say("you are in the waiting room: node staff will let you in, and you will be told here")


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """A message the node has just stored for the first time, as its listeners hear of it."""

    room: Room
    message: Message
    conn: Connection | None = None  # the writer's connection, when a user wrote it here
    peer: str | None = None  # the node it came from, when it was written on another node


FrameHandler = Callable[[Connection, Any], Awaitable[None]]
ReadyHook = Callable[[Connection, Ready], Awaitable[None]]
Listener = Callable[[Arrival], None]
Outbox = Callable[[Room, Message], Sequence[str]]
Report = Callable[[], Awaitable[dict[str, Any]]]
InviteElsewhere = Callable[[Room, str, str, str], Awaitable[None]]  # room, from, to, sealed


def _no_outbox(room: Room, message: Message) -> Sequence[str]:
    return ()


def _nowhere(name: str) -> str | None:
    return None


def _nobody(room: str) -> list[str]:
    return []


class Bots(Protocol):
    """What the node asks of its bots, when it has some (onionchat.bots, set by the server)."""

    def names(self) -> dict[str, list[str]]: ...
    def readers(self, room: str) -> list[str]: ...
    def greet(self, conn: Connection, room: Room) -> None: ...


class Refused(Exception):
    """A connection the node will not take now (too many, a flooder's penalty, a ban): the
    transport says why; `retry_after` is the seconds of a penalty still to run."""

    def __init__(self, reason: str, retry_after: float = 0.0, banned: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.banned = banned  # not "try again later": the user is banned from the node


class Node:
    def __init__(self, settings: Settings, store: Store, accounts: Accounts) -> None:
        self.settings = settings
        self.store = store
        self.files = Files(settings.files, store, settings.server.data_dir / "files")
        self.accounts = accounts
        self.hub = Hub()
        self.authority = Authority(store)
        self.started = time.monotonic()
        self._ids = IdGenerator()
        self._rooms: dict[str, Room] = {}
        self.bots: Bots | None = None  # set by the application once it has its tor
        # Features that add frames (commands, identity keys) register here: the node imports
        # none of them.
        self.handlers: dict[type, FrameHandler] = {}
        self.ready_hooks: list[ReadyHook] = []
        # Whoever hears of each new message (mentions, bots, federation), after its fan-out;
        # and which brokers a message written here waits for (federation, if configured).
        self.listeners: list[Listener] = []
        self.outbox: Outbox = _no_outbox
        # Users of other nodes one may write to (`name@node`): their canonical name, or None
        # (set by the federation).
        self.elsewhere: Callable[[str], str | None] = _nowhere
        self.invite_elsewhere: InviteElsewhere | None = None
        # A file of a message from another node, brought here (the federation's).
        self.fetch_file: Callable[[Room, str], Awaitable[bool]] | None = None
        # Who is present in a room on other nodes, and who hears that this node's presence in
        # a room changed (both the federation's).
        self.remote_members: Callable[[str], list[str]] = _nobody
        self.presence_listeners: list[Callable[[str], None]] = []
        self.topic_listeners: list[Callable[[Room, TopicChanged], None]] = []
        # Who hears of what staff did in a room (the federation passes it on).
        self.order_listeners: list[Callable[[Order], None]] = []
        # What features tell of themselves (`/api/health`, commands): name -> a report.
        self.reports: dict[str, Report] = {}
        limits = settings.limits
        self._joins = Buckets(limits.join_rate, max(1, int(50 * limits.join_rate)))
        self._pages = Buckets(limits.history_rate, max(1, int(10 * limits.history_rate)))
        self._creations = Windows(limits.room_creations, 3600.0)
        self._penalties: dict[str, float] = {}  # user key -> when they may connect again
        self._waves = Windows(max(1, limits.join_wave), limits.join_wave_seconds)
        self._spoken: dict[tuple[int, str], float] = {}  # (room, user) -> last message, slow mode
        self.knocks = Buckets(1 / 60, 1)  # per user: a knock a minute
        self._staff_seen = time.monotonic()  # when node staff was last connected
        self._unscrubbed = False  # deleted words may still be in the write-ahead log
        newcomer_rate = settings.auth.newcomer_rate
        self._newcomers = Buckets(newcomer_rate, 5)  # per user: what a new account may write

    def new_id(self) -> tuple[str, int]:
        """A message id and timestamp, for messages written on the node by others (bots)."""
        return self._ids.next()

    # -- connections ----------------------------------------------------------------------

    async def connect(
        self, session: Session, pipeline: int = 0, accepted: str | None = None
    ) -> Connection:
        """A new connection of an authenticated user, or Refused when the node or the user
        already has as many as the limits allow. `pipeline`: how many of its messages may be
        committing while its next frames are read (0: each is waited for, as a page needs).
        `accepted`: the language its transport asked for, spoken unless the account chose."""
        limits = self.settings.limits
        key = names.key(session.user.name)
        self.authority.seen(key, session.user.role)
        if self.hub.connections >= limits.connections:
            log.warning(
                "connection refused: the node is full",
                extra={"event": "refused", "connections": self.hub.connections},
            )
            raise Refused(
                say(
                    "the node is full ({connections} connections): try again later",
                    connections=limits.connections,
                )
            )
        if any(c.close_code == Close.FLOODING for c in self.hub.user_connections(key)):
            self.penalize(key)  # its flood's teardown is under way: the penalty holds now
        wait = self._penalties.get(key, 0.0) - time.monotonic()
        if wait > 0:
            raise Refused(
                say(
                    "flooding: {user} may connect again in {wait} s",
                    user=session.user.name,
                    wait=math.ceil(wait),
                ),
                wait,
            )
        if session.user.role == "guest" and self.authority.guests == "out":
            raise Refused(say("guests are shut out of this node now: make an account"), banned=True)
        banned = self.authority.sanction(key, "ban")
        if banned is not None:
            reason = say(
                "{user} is banned from this node{why}", user=session.user.name, why=_why(banned)
            )
            raise Refused(reason, banned=True)
        if self.hub.user_count(key) >= limits.user_connections:
            raise Refused(
                say(
                    "{user} has {user_connections} connections open already (close a tab or "
                    "a page)",
                    user=session.user.name,
                    user_connections=limits.user_connections,
                )
            )
        conn = Connection(session, limits.send_queue_bytes, Budget(limits.user_queue_bytes))
        conn.accepted = accepted
        conn.lang = session.user.lang or accepted
        conn.pipeline = pipeline
        conn.bucket = TokenBucket(limits.rate, limits.burst)
        self.hub.attach(conn)
        try:
            rooms = await self.store.rooms_of(session.user.id)
            ready = Ready(
                user=conn.user,
                key=conn.user_key,
                version=__version__,
                rooms=[r for r in rooms if not r.startswith("@")],
                direct=[r for r in rooms if r.startswith("@")],
                limits={
                    "max_frame_bytes": limits.max_frame_bytes,
                    "max_text_chars": limits.max_text_chars,
                    "max_file_bytes": self.settings.files.max_bytes,
                    "history_page": limits.history_page,
                    "rate": limits.rate,
                    "burst": limits.burst,
                },
                bots=self.bots.names() if self.bots else {},
                role=self.authority.node_role(key),
                lang=conn.session.user.lang,
            )
            for hook in self.ready_hooks:
                await hook(conn, ready)
        except BaseException:
            self.hub.detach(conn)
            raise
        conn.send(encode(ready))
        log.info("connected", extra={"event": "connect", "user": conn.user})
        if self.authority.level(key) >= NODE_STAFF:
            self._staff_seen = time.monotonic()
        if session.user.role == "waiting" and self.authority.node_role(key) == "waiting":
            self.notice(conn, WAITING)
            for other in self.hub.all_connections():
                if self.authority.level(other.user_key) >= NODE_STAFF:
                    self.notice(
                        other, say("{user} waits to be admitted: /admit {user}", user=conn.user)
                    )
        return conn

    def staff_around(self) -> bool:
        """Whether node staff is connected, or was within `auth.waiting_fallback` minutes:
        a waiting room nobody watches lets newcomers straight in."""
        fallback = self.settings.auth.waiting_fallback
        if not fallback:
            return True
        if any(self.authority.level(c.user_key) >= NODE_STAFF for c in self.hub.all_connections()):
            self._staff_seen = time.monotonic()
            return True
        return time.monotonic() - self._staff_seen < fallback * 60

    def disconnect(self, conn: Connection) -> None:
        if self.authority.level(conn.user_key) >= NODE_STAFF:
            self._staff_seen = time.monotonic()
        if conn.close_code == Close.FLOODING:
            self.penalize(conn.user_key)
        for room in sorted(conn.rooms):
            self._part(conn, room)
        self.hub.detach(conn)
        log.info(
            "disconnected",
            extra={"event": "disconnect", "user": conn.user, "code": conn.close_code},
        )

    async def maintain(self) -> None:
        """What the node does by itself: takes in what `onionchat admin` changed (within
        WATCH seconds), and deletes what rooms keep no longer (every EXPIRY_EVERY)."""
        expired_at = time.monotonic()
        while True:
            await asyncio.sleep(WATCH)
            try:
                if await self.authority.changed():
                    await self._reload_order()
                if self._unscrubbed:
                    self._unscrubbed = not await self.store.scrub()
                if time.monotonic() - expired_at >= EXPIRY_EVERY:
                    expired_at = time.monotonic()
                    await self.expire()
                    await self.files.expire()
                    await self.store.delete_idle_guests()
            except Exception:
                log.exception("upkeep failed", extra={"event": "error"})

    async def expire(self) -> int:
        """Delete the messages of rooms with an expiry that are older than it; how many."""
        count = 0
        for listed in await self.store.rooms():
            room = self._rooms.get(listed.name, listed)
            if room.modes.expiry:
                before = int(time.time() * 1000) - room.modes.expiry * 3_600_000
                ids = await self.store.older(room.id, before, EXPIRED_BATCH)
                count += len(await self.erase(room, ids, "expiry")) if ids else 0
        return count

    async def _reload_order(self) -> None:
        """Carry out what `onionchat admin` changed: the banned are let go, the kicked leave."""
        await self.authority.load()
        log.info("roles and sanctions reloaded", extra={"event": "order_reloaded"})
        for conn in list(self.hub.all_connections()):
            banned = self.authority.sanction(conn.user_key, "ban")
            if banned is not None:
                conn.close(Close.BANNED, say("banned from this node by {user}", user=banned.by))
                continue
            for name in sorted(conn.rooms):
                room = self._rooms.get(name)
                barred = room and self.authority.barred(conn.user_key, room.id)
                if barred:
                    self.expel(
                        name,
                        conn.user_key,
                        say("{by} took you out of #{name}", by=barred.by, name=name),
                    )

    def flooded(self, conn: Connection) -> None:
        """Its socket was closed for a flood of pings: the penalty holds from now, before any
        reconnection can be read (the close reaches the connection's reader later)."""
        conn.close(Close.FLOODING, say("flooding: too many pings"))
        self.penalize(conn.user_key)

    def penalize(self, user_key: str) -> None:
        """A flooder's reconnections cost the node a refusal each, not a whole connection."""
        penalty = self.settings.limits.flood_penalty
        self._penalties[user_key] = time.monotonic() + penalty
        if len(self._penalties) > 10_000:
            now = time.monotonic()
            self._penalties = {k: t for k, t in self._penalties.items() if t > now}

    def revoke(self, session: Session) -> None:
        """Close every connection of a session that was logged out."""
        for conn in self.hub.session_connections(session.token_hash):
            conn.close(Close.SESSION_EXPIRED, say("logged out"))

    # -- frames ---------------------------------------------------------------------------

    def admit(self, conn: Connection, ref: str | None = None) -> None:
        """The rate limit of every transport: a frame over it is refused, and a connection that
        keeps going over it is closed as flooding (4008)."""
        if conn.bucket is None or conn.bucket.allow():
            return
        raise self._strike(
            conn,
            say(
                "at most {rate} frames a second; this one was dropped",
                rate=f"{self.settings.limits.rate:g}",
            ),
            ref,
        )

    def _strike(self, conn: Connection, limit: str, ref: str | None) -> ProtocolError:
        """A refusal for going over a rate, to raise. Every such refusal is a strike: a
        connection that goes on regardless (`flood_strikes` in ten seconds) is closed as
        flooding (4008), so that asking past a limit costs the node no more than a little."""
        now = time.monotonic()
        strike = STRIKE_WINDOW / self.settings.limits.flood_strikes
        conn.strikes = max(conn.strikes, now - STRIKE_WINDOW) + strike
        if conn.strikes > now:
            conn.close(Close.FLOODING, say("flooding: too many frames over the rate limits"))
        return ProtocolError(Code.RATE_LIMITED, say("slow down: {limit}", limit=limit), ref)

    async def receive(self, conn: Connection, text: str | None) -> None:
        """One frame as the client sent it: limits, then decoding, then `handle`. Whatever is
        wrong becomes an error frame for the sender; the connection lives on. A frame that
        cannot be read spends a token of the rate too."""
        ref = None
        try:
            try:
                frame = self._decode(text)
            except ProtocolError:
                self.admit(conn)
                raise
            ref = frame.ref
            self.admit(conn, ref)
            await self.handle(conn, frame)
        except ProtocolError as exc:
            conn.send(error(exc.code, i18n.said(conn.lang, exc.message), exc.ref or ref))
        except Exception:
            log.exception("frame failed", extra={"event": "error", "user": conn.user})
            self.failed(conn, ref)

    def _decode(self, text: str | None) -> AnyClientFrame:
        if text is None:
            raise ProtocolError(Code.BINARY_FRAME, say("send JSON in text frames, not binary"))
        limit = self.settings.limits.max_frame_bytes
        size = len(text.encode()) if len(text) * 4 > limit else len(text)
        if size > limit:
            raise ProtocolError(
                Code.TOO_LARGE,
                say(
                    "the frame is {size} bytes; at most {limit} are allowed", size=size, limit=limit
                ),
            )
        return decode(text)

    async def handle(self, conn: Connection, frame: AnyClientFrame) -> None:
        """Carry out one frame; a ProtocolError becomes an error frame for the sender. Only a
        message may be read while the messages before it commit: any other frame waits for
        them, so that its answer still comes after their acks (a pong answers everything
        sent before its ping)."""
        if conn.entering and not isinstance(frame, Send):
            await conn.settled()
        match frame:
            case Send():
                await self.send(conn, frame)
            case Join():
                await self.join(
                    conn,
                    frame.room,
                    create=frame.create or frame.new,
                    protected=frame.protected,
                    new=frame.new,
                    ref=frame.ref,
                )
            case Leave():
                await self.leave(conn, frame.room, ref=frame.ref)
            case HistoryRequest():
                await self.history(conn, frame)
            case Topic():
                await self.set_topic(conn, frame.room, frame.text, frame.box, ref=frame.ref)
            case Who() if frame.all:
                await self.all_members(conn, frame.room, ref=frame.ref)
            case Who():
                self.who(conn, frame.room, ref=frame.ref)
            case Rooms():
                await self.list_rooms(conn, ref=frame.ref)
            case Language():
                await self.store.set_lang(conn.session.user.id, frame.lang)
                for other in self.hub.user_connections(conn.user_key):
                    other.lang = frame.lang or other.accepted
                    told = LanguageSet(lang=frame.lang, ref=frame.ref if other is conn else None)
                    other.send(encode(told))
            case Ping():
                conn.send(encode(Pong(ref=frame.ref)))
            case _:
                handler = self.handlers.get(type(frame))
                if handler is None:
                    raise ProtocolError(
                        Code.BAD_FRAME, say("{name} is only valid first", name=type(frame).__name__)
                    )
                await handler(conn, frame)

    async def room(self, raw: str) -> Room:
        name = names.room(raw)
        room = self._rooms.get(name)
        if room is None:
            room = await self.store.room(name)
            if room is None:
                raise ProtocolError(Code.UNKNOWN_ROOM, say("there is no room #{name}", name=name))
            self._rooms[name] = room
        return room

    async def shared_room(self, raw: str, protected: bool) -> Room:
        """The room a message from another node belongs to, made here if it is new. One of
        the other mode here, or one whose name looks like another's, refuses it."""
        name = names.room(raw)
        try:
            room = await self.room(name)
        except ProtocolError:
            try:
                room = await self.store.create_room(name, protected)
            except Lookalike as exc:
                raise ProtocolError(
                    Code.NAME_TAKEN, say("looks like #{existing}", existing=exc.existing)
                ) from None
            except Conflict:
                room = await self.room(name)
            else:
                self._rooms[name] = room
        if room.protected != protected:
            raise ProtocolError(Code.ROOM_MODE, say("the room has the other mode here"))
        return room

    def _joined(self, conn: Connection, room: Room) -> None:
        if room.name not in conn.rooms:
            raise ProtocolError(Code.NOT_JOINED, say("join #{room} first", room=room.name))

    async def join(
        self,
        conn: Connection,
        raw: str,
        *,
        create: bool = False,
        protected: bool = False,
        new: bool = False,
        ref: str | None = None,
    ) -> None:
        """Join a room, creating it when `create` and it is missing. `new` asks for a new room
        only: a client about to make a room key must not make one for a room that exists."""
        name = names.room(raw)
        self._admitted(conn)
        if name not in conn.rooms and not self._joins.allow(conn.user_key):
            raise self._strike(
                conn,
                say("at most {rate} joins a second", rate=f"{self.settings.limits.join_rate:g}"),
                ref,
            )
        try:
            room = await self.room(name)
        except ProtocolError:
            if not create:
                raise
            room = None
        if room is not None and new:
            kind = say("key-protected") if room.protected else say("open")
            raise ProtocolError(
                Code.ROOM_EXISTS,
                say(
                    "#{name} already exists ({kind}): join it, or choose another name",
                    name=name,
                    kind=kind,
                ),
                ref,
            )
        if room is None:
            if not self.authority.may(conn.user_key, "create"):
                raise ProtocolError(
                    Code.FORBIDDEN,
                    say("guests cannot make rooms: join one, or make an account"),
                    ref,
                )
            wait = self._creations.retry_after(conn.user_key)
            if wait > 0:
                raise ProtocolError(
                    Code.RATE_LIMITED,
                    say(
                        "you have created {room_creations} rooms this hour: try again in "
                        "{wait} min",
                        room_creations=self.settings.limits.room_creations,
                        wait=math.ceil(wait / 60),
                    ),
                    ref,
                ) from None
            try:
                room = await self.store.create_room(name, protected, owner=conn.user_key)
            except Lookalike as exc:
                raise ProtocolError(
                    Code.NAME_TAKEN,
                    say(
                        "#{name} looks too much like #{existing}, which exists",
                        name=name,
                        existing=exc.existing,
                    ),
                    ref,
                ) from None
            except Conflict:
                if new:  # made by someone else a moment ago
                    raise ProtocolError(
                        Code.ROOM_EXISTS,
                        say("#{name} already exists: choose another name", name=name),
                        ref,
                    ) from None
                room = await self.room(name)
            else:
                self._creations.hit(conn.user_key)
                self._rooms[name] = room
                self.authority.owned(name, conn.user_key)
                log.info("room created", extra={"event": "room_created", "room": name})
        if (create or protected) and room.protected != protected:
            kind = say("key-protected") if room.protected else say("open")
            raise ProtocolError(
                Code.ROOM_MODE, say("#{name} already exists and is {kind}", name=name, kind=kind)
            )
        barred = self.authority.barred(conn.user_key, room.id)
        if barred is not None:
            verb = say("kicked from") if barred.kind == "kick" else say("banned from")
            where = say("this node") if barred.room_id == NODE_WIDE else f"#{name}"
            raise ProtocolError(
                Code.FORBIDDEN,
                say("you were {verb} {where}{why}", verb=verb, where=where, why=_why(barred)),
                ref,
            )
        if name not in conn.rooms:
            await self._may_enter(conn, room, ref)
        # Enter the room, list its members and tell them, all before the first await: the
        # member list and the presence frames that follow it then add up exactly. Live
        # frames wait behind `joined`; one stored meanwhile may come both in its history
        # and live (clients drop a repeated id), none can fall between the two.
        entering = name not in conn.rooms
        first = self.hub.join(conn, name)
        members = self.members(name)
        if entering:
            conn.hold(name)
        if first:
            self.hub.broadcast(
                name, encode(Presence(room=name, user=conn.user, state="join")), skip=conn
            )
            self._presence_changed(name)
        try:
            newcomer = await self.store.set_member(conn.session.user.id, room.id, True)
            if self._pages.allow(conn.user_key):
                history, more = await self._page(room, None, self.settings.limits.history_page)
            else:  # a join's page costs what any page does: past the rate, joined without it
                history, more = [], True
        except BaseException:
            if entering:
                conn.release(name, deliver=False)
                self._part(conn, name)
            raise
        conn.send(
            encode(
                JoinedOut(
                    ref=ref,
                    room=self._info(room),
                    members=members,
                    history=history,
                    more=more,
                )
            )
        )
        conn.release(name)
        if self.bots is not None and room.protected:
            self.bots.greet(conn, room)
        if newcomer and self.authority.level(conn.user_key, name) < STAFF:
            await self._count_newcomer(room)
        log.info("joined", extra={"event": "join", "user": conn.user, "room": name})

    async def _may_enter(self, conn: Connection, room: Room, ref: str | None) -> None:
        """Staff pass every mode; an invite-only room takes its members and those let in, a
        full one nobody more."""
        key = conn.user_key
        if self.authority.level(key, room.name) >= STAFF:
            return
        modes = room.modes
        if modes.invite or modes.lockdown:
            let_in = self.authority.room_role(key, room.name) is not None
            if not let_in and not await self.store.is_member(conn.session.user.id, room.id):
                state = say("locked down") if modes.lockdown else say("invite-only")
                raise ProtocolError(
                    Code.FORBIDDEN,
                    say(
                        "#{room} is {state}: /knock {room} asks its staff to let you in",
                        room=room.name,
                        state=state,
                    ),
                    ref,
                )
        present = any(room.name in c.rooms for c in self.hub.user_connections(key))
        if modes.limit and not present and self.hub.online(room.name) >= modes.limit:
            raise ProtocolError(
                Code.FORBIDDEN,
                say(
                    "#{room} is full ({limit} present): try later",
                    room=room.name,
                    limit=modes.limit,
                ),
                ref,
            )

    async def _count_newcomer(self, room: Room) -> None:
        """A wave of newcomers (a raid) makes an open room invite-only, and staff are told."""
        wave = self.settings.limits.join_wave
        if not wave or room.name.startswith("@"):
            return
        self._waves.hit(room.name)
        current = self._rooms.get(room.name, room)
        if self._waves.retry_after(room.name) > 0 and not current.modes.invite:
            await self.set_modes(current, dataclasses.replace(current.modes, invite=True))
            seconds = self.settings.limits.join_wave_seconds
            self.announce(
                room.name,
                say(
                    "#{room} is invite-only now: {wave} newcomers joined within {seconds} s. "
                    "Staff: /allow NAME lets someone in, /mode invite off opens it again",
                    room=room.name,
                    wave=wave,
                    seconds=f"{seconds:g}",
                ),
            )
            log.warning("join wave: a room made invite-only", extra={"event": "join_wave"})

    async def set_modes(self, room: Room, modes: Modes) -> Room:
        await self.store.set_modes(room.id, modes)
        changed = dataclasses.replace(room, modes=modes)
        self._rooms[room.name] = changed
        return changed

    def _part(self, conn: Connection, room: str) -> None:
        if self.hub.leave(conn, room):
            self.hub.broadcast(room, encode(Presence(room=room, user=conn.user, state="leave")))
            self._presence_changed(room)

    def _presence_changed(self, room: str) -> None:
        for listener in self.presence_listeners:
            listener(room)

    def members(self, room: str) -> list[str]:
        """Who is present in a room: here, then on other nodes (`name@node`)."""
        return self.hub.members(room) + self.remote_members(room)

    async def leave(self, conn: Connection, raw: str, ref: str | None = None) -> None:
        """Leaving is the user's act: every one of their connections leaves the room."""
        room = await self.room(raw)
        self._joined(conn, room)
        await self.store.set_member(conn.session.user.id, room.id, False)
        for other in self.hub.user_connections(conn.user_key):
            if room.name in other.rooms:
                other.release(room.name, deliver=False)
                self._part(other, room.name)
                other.send(encode(Left(room=room.name, ref=ref if other is conn else None)))
        log.info("left", extra={"event": "leave", "user": conn.user, "room": room.name})

    def _info(self, room: Room) -> RoomInfo:
        return RoomInfo(
            name=room.name,
            protected=room.protected,
            topic=room.topic,
            topic_box=room.topic_box,
            topic_by=room.topic_by,
            topic_ts=room.topic_ts,
            online=self.hub.online(room.name) + len(self.remote_members(room.name)),
            readers=self.bots.readers(room.name) if self.bots and room.protected else [],
        )

    async def list_rooms(self, conn: Connection, ref: str | None = None) -> None:
        rooms = await self.store.rooms()
        conn.send(encode(RoomList(rooms=[self._info(r) for r in rooms], ref=ref)))

    def who(self, conn: Connection, raw: str, ref: str | None = None) -> None:
        name = names.room(raw)
        if name not in conn.rooms:
            raise ProtocolError(Code.NOT_JOINED, say("join #{name} first", name=name))
        conn.send(encode(WhoList(room=name, members=self.members(name), ref=ref)))

    async def all_members(self, conn: Connection, raw: str, ref: str | None = None) -> None:
        """Every member of a room on this node, present or not, those of other nodes present
        now (`name@node`), and the bots that read it: whom a new room key goes to."""
        room = await self.room(raw)
        self._joined(conn, room)
        members = await self.store.room_members(room.id) + self.remote_members(room.name)
        if self.bots is not None and room.protected:
            members += self.bots.readers(room.name)
        conn.send(encode(WhoList(room=room.name, members=members, ref=ref)))

    # -- messages -------------------------------------------------------------------------

    def body_of(
        self,
        room: Room | None,
        text: str | None,
        box: str | None,
        related: tuple[str, str] | None,
    ) -> tuple[str | None, str | None]:
        """A message's body checked (`check_body`); a reaction's is one of `REACTIONS`, or a
        box no longer than one holding a reaction."""
        if related is None or related[0] != "react":
            return self.check_body(room, text, box, self.settings.limits.max_text_chars)
        text, box = self.check_body(room, text, box, REACTION_CHARS, say("reaction"))
        if text is not None and text not in REACTIONS:
            raise ProtocolError(
                Code.BAD_BODY,
                say(
                    "a reaction is one of {reactions}, not {text}",
                    reactions=" ".join(REACTIONS),
                    text=f"{text!r}",
                ),
            )
        return text, box

    async def check_relation(
        self,
        room: Room,
        sender: str,
        related: tuple[str, str] | None,
        text: str | None,
        me: bool,
        strict: bool = True,
    ) -> None:
        """A reply, an edit or a reaction is about a message of the same room (not an edit
        or a reaction itself); an edit is its writer's own. `strict` (a client's): the
        message must be here; another node's may come before the message it is about."""
        if related is None:
            return
        kind, id_ = related
        target = await self.store.target(room.id, id_)
        if target is None and not strict:
            return
        if target is None:
            where = say("this conversation") if room.name.startswith("@") else f"#{room.name}"
            raise ProtocolError(
                Code.UNKNOWN_MESSAGE, say("{where} has no message {id}", where=where, id=id_)
            )
        if target.deleted:
            raise ProtocolError(Code.UNKNOWN_MESSAGE, say("that message was deleted"))
        if target.rel in ("edit", "react"):
            noun = _NOUNS[kind]
            raise ProtocolError(
                Code.BAD_FRAME,
                say("a {noun} is about a message, not an edit or a reaction", noun=noun),
            )
        if kind == "edit" and names.key(target.sender) != names.key(sender):
            raise ProtocolError(Code.FORBIDDEN, say("you can edit your own messages only"))
        if kind == "edit" and me != target.me:
            raise ProtocolError(Code.BAD_FRAME, say("an edit keeps a message an action or not"))
        if (
            kind == "react"
            and text is not None
            and await self.store.reacted(room.id, id_, sender, text)
        ):
            raise ProtocolError(Code.CONFLICT, say("you reacted with {text} already", text=text))

    def check_body(
        self,
        room: Room | None,
        text: str | None,
        box: str | None,
        limit: int,
        what: str = say("message"),
    ) -> tuple[str | None, str | None]:
        """Check a body against the room's mode: text in open rooms, box in protected ones
        (also of messages from other nodes)."""
        if (text is None) == (box is None):
            raise ProtocolError(Code.BAD_BODY, say("give exactly one of text or box"))
        if room is not None and room.protected and text is not None:
            raise ProtocolError(
                Code.BAD_BODY,
                say(
                    "#{room} is key-protected: send a box sealed with the room key, not text",
                    room=room.name,
                ),
            )
        if room is not None and not room.protected and box is not None:
            raise ProtocolError(
                Code.BAD_BODY, say("#{room} is open: send text, not a box", room=room.name)
            )
        if text is not None:
            if not text.strip():
                raise ProtocolError(Code.BAD_BODY, say("the {what} is empty", what=what))
            if len(text) > limit:
                raise ProtocolError(
                    Code.BAD_BODY,
                    say(
                        "the {what} is too long ({n} characters, at most {limit})",
                        what=what,
                        n=len(text),
                        limit=limit,
                    ),
                )
            return text, None
        assert box is not None
        _check_box(box, max_box_length(limit))
        return None, box

    async def send(self, conn: Connection, frame: Send) -> None:
        if (frame.room is None) == (frame.to is None):
            raise ProtocolError(Code.BAD_FRAME, say("give exactly one of room or to"))
        related = relation(frame)
        if frame.to is not None:
            await self.direct(
                conn, frame.to, frame.text, frame.box, frame.me, frame.ref, related, frame.file
            )
            return
        assert frame.room is not None
        room = await self.room(frame.room)
        self._joined(conn, room)
        self._may_speak(conn, room.id)
        self._may_speak_here(conn, room)
        self._newcomer(conn, room.name, frame.text)
        text, box = self.body_of(room, frame.text, frame.box, related)
        await self.check_relation(room, conn.user, related, text, frame.me)
        id_, ts = self._ids.next()
        await self._attach(conn, room, frame.file, related, box, id_)
        message = Message(
            id=id_,
            room=room.name,
            ts=ts,
            sender=conn.user,
            text=text,
            box=box,
            me=frame.me,
            file=frame.file,
            **_as_fields(related),
        )
        await self._sent(conn, self.enter(room, message, conn=conn, ref=frame.ref), frame.ref)

    async def _attach(
        self,
        conn: Connection,
        room: Room,
        file: FileRef | None,
        related: tuple[str, str] | None,
        box: str | None,
        id_: str,
    ) -> None:
        """The upload a message carries (not an edit or a reaction): named and typed in the
        clear only in an open room, whose members' pages show it."""
        if file is None:
            return
        if related is not None and related[0] != "reply":
            raise ProtocolError(Code.BAD_FRAME, say("an edit or a reaction carries no file"))
        if box is not None and (file.name is not None or file.type is not None):
            raise ProtocolError(Code.BAD_FRAME, say("a sealed file's name and type go in the box"))
        if box is None and (file.name is None or file.type is None):
            raise ProtocolError(Code.BAD_FRAME, say("a file in the clear needs its name and type"))
        await self.files.attach(room, conn.user_key, file.id, file.size, id_)

    async def direct(
        self,
        conn: Connection,
        to: str,
        text: str | None,
        box: str | None,
        me: bool,
        ref: str | None,
        related: tuple[str, str] | None = None,
        file: FileRef | None = None,
    ) -> None:
        self._may_speak(conn, NODE_WIDE)
        self._newcomer(conn, None, text)
        remote = self.elsewhere(to) if "@" in to else None
        if remote is not None:
            to_name, members = remote, [conn.session.user.id]
        else:
            target = await self.store.user_by_key(names.key(to))
            if target is None:
                raise ProtocolError(Code.UNKNOWN_USER, say("there is no user {to}", to=f"{to!r}"))
            to_name, members = target.name, [conn.session.user.id, target.id]
        text, box = self.body_of(None, text, box, related)
        room = await self.conversation(conn.user, to_name, members)
        await self.check_relation(room, conn.user, related, text, me)
        id_, ts = self._ids.next()
        await self._attach(conn, room, file, related, box, id_)
        message = Message(
            id=id_,
            room=room.name,
            ts=ts,
            sender=conn.user,
            text=text,
            box=box,
            me=me,
            to=to_name,
            file=file,
            **_as_fields(related),
        )
        await self._sent(conn, self.enter(room, message, conn=conn, ref=ref), ref)

    def _admitted(self, conn: Connection) -> None:
        if self.authority.node_role(conn.user_key) == "waiting":
            raise ProtocolError(Code.FORBIDDEN, WAITING)

    def guests_welcome(self) -> bool:
        return self.authority.guests != "out"

    def _may_speak(self, conn: Connection, room_id: int) -> None:
        """A mute in the room, or node-wide, leaves the user reading, not writing."""
        self._admitted(conn)
        if self.authority.guests == "muted" and conn.session.user.role == "guest":
            raise ProtocolError(Code.FORBIDDEN, say("guests are muted on this node now"))
        muted = self.authority.sanction(conn.user_key, "mute")
        if muted is None and room_id != NODE_WIDE:
            muted = self.authority.sanction(conn.user_key, "mute", room_id)
        if muted is not None:
            where = say("on this node") if muted.room_id == NODE_WIDE else say("here")
            raise ProtocolError(
                Code.FORBIDDEN, say("you are muted {where}{why}", where=where, why=_why(muted))
            )

    def _may_speak_here(self, conn: Connection, room: Room) -> None:
        """A moderated room hears only its voiced members and staff; slow mode lets a member
        write once every so many seconds."""
        modes = room.modes
        if not (modes.moderated or modes.lockdown or modes.slow):
            return
        level = self.authority.level(conn.user_key, room.name)
        if (modes.moderated or modes.lockdown) and level < VOICE:
            state = say("locked down") if modes.lockdown else say("moderated")
            raise ProtocolError(
                Code.FORBIDDEN,
                say(
                    "#{room} is {state}: only voiced members and staff speak",
                    room=room.name,
                    state=state,
                ),
            )
        if modes.slow and level < STAFF:
            now = time.monotonic()
            last = self._spoken.get((room.id, conn.user_key), -math.inf)
            if now - last < modes.slow:
                raise ProtocolError(
                    Code.RATE_LIMITED,
                    say(
                        "slow mode in #{room}: one message every {slow} s; wait {wait} s",
                        room=room.name,
                        slow=modes.slow,
                        wait=math.ceil(modes.slow - (now - last)),
                    ),
                )
            self._spoken[(room.id, conn.user_key)] = now
            if len(self._spoken) > SPOKEN:
                self._spoken = {k: t for k, t in self._spoken.items() if now - t < 3600}

    def _newcomer(self, conn: Connection, room: str | None, text: str | None) -> None:
        """In its first minutes an account writes slowly and without links: what a spammer
        who registers for it needs at once."""
        minutes = self.settings.auth.newcomer_minutes
        left = conn.session.user.created + minutes * 60 - time.time()
        if left <= 0 or self.authority.level(conn.user_key, room) >= STAFF:
            return
        wait = say("your account is new: for {minutes} min more", minutes=math.ceil(left / 60))
        if text is not None and LINK.search(text):
            raise ProtocolError(Code.FORBIDDEN, say("{wait} you cannot write links", wait=wait))
        if not self._newcomers.allow(conn.user_key):
            raise ProtocolError(
                Code.RATE_LIMITED,
                say(
                    "{wait} you write at most {newcomer_rate} messages a second",
                    wait=wait,
                    newcomer_rate=f"{self.settings.auth.newcomer_rate:g}",
                ),
            )

    async def conversation(self, a: str, b: str, members: list[int]) -> Room:
        """The room of the direct messages between two users, made with its first message:
        `members` (the users of this node among the two) then find it in `ready`."""
        name = names.direct_room(a, b)
        room = self._rooms.get(name) or await self.store.room(name)
        if room is None:
            try:
                room = await self.store.create_room(name, False)
            except Conflict:
                room = await self.store.room(name)
                assert room is not None
            else:
                for user_id in members:
                    await self.store.set_member(user_id, room.id, True)
        self._rooms[name] = room
        return room

    async def accept(
        self,
        room: Room,
        message: Message,
        *,
        conn: Connection | None = None,
        ref: str | None = None,
        peer: str | None = None,
        signature: bytes | None = None,
    ) -> bool:
        """`enter`, awaited: whether the message was new."""
        return await self.enter(room, message, conn=conn, ref=ref, peer=peer, signature=signature)

    def enter(
        self,
        room: Room,
        message: Message,
        *,
        conn: Connection | None = None,
        ref: str | None = None,
        peer: str | None = None,
        signature: bytes | None = None,
    ) -> asyncio.Future[bool]:
        """The one way in for every message, written here or on another node: handed to the
        store at once (so messages are stored in the order they came), acknowledged to its
        writer once committed, fanned out once, then told to the listeners (a copy of one
        stored changes nothing and is shown to no one). The future says whether it was new."""
        outbox = self.outbox(room, message) if peer is None else ()
        stored = self.store.queue_message(room.id, message, outbox, peer, signature)
        entered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stored.add_done_callback(
            functools.partial(self._stored, entered, room, message, conn, ref, peer)
        )
        return entered

    def _stored(
        self,
        entered: asyncio.Future[bool],
        room: Room,
        message: Message,
        conn: Connection | None,
        ref: str | None,
        peer: str | None,
        stored: asyncio.Future[bool],
    ) -> None:
        """Once committed, whoever waits or not: a message stored is shown."""
        try:
            new = stored.result()
            if conn is not None:
                conn.send(encode(Ack(ref=ref, room=room.name, id=message.id, ts=message.ts)))
            if new:
                self._shown(room, message, conn, peer)
        except BaseException as exc:  # the store failed, or a listener: the caller hears it
            if not entered.done():
                entered.set_exception(exc)
            return
        if not entered.done():
            entered.set_result(new)

    def _shown(
        self, room: Room, message: Message, conn: Connection | None, peer: str | None
    ) -> None:
        if log.isEnabledFor(logging.DEBUG):  # a line a message costs a node 8 % of its CPU
            self._logged(room, message)
        frame = encode(message_frame(message))
        if message.to is None:
            self.hub.broadcast(room.name, frame)
        else:
            sender, to = names.key(message.sender), names.key(message.to)
            self.hub.to_user(sender, frame)
            if to != sender:
                self.hub.to_user(to, frame)
        arrival = Arrival(room, message, conn, peer)
        for listener in self.listeners:
            listener(arrival)

    async def _sent(self, conn: Connection, entered: asyncio.Future[bool], ref: str | None) -> None:
        """A client's message: on a pipelined connection the next frame is read while this one
        commits (at most `conn.pipeline` at once; past that, the reader waits), so that a
        client that writes fast does not wait for a commit a message."""
        if conn.entering >= conn.pipeline:
            await entered
            return
        conn.entering += 1
        entered.add_done_callback(functools.partial(self._sent_done, conn, ref))

    def _sent_done(self, conn: Connection, ref: str | None, entered: asyncio.Future[bool]) -> None:
        if not entered.cancelled() and (exc := entered.exception()) is not None:
            log.error("frame failed", exc_info=exc, extra={"event": "error", "user": conn.user})
            self.failed(conn, ref)
        conn.entered()

    def _logged(self, room: Room, message: Message) -> None:
        """At debug level only: which room is busy, and when, is for an operator who asks."""
        if message.to is not None:  # the event, never who writes to whom, nor how much
            log.debug("direct message accepted", extra={"event": "direct", "id": message.id})
            return
        size = len(message.text) if message.text is not None else len(message.box or "")
        log.debug(
            "message accepted",
            extra={"event": "message", "id": message.id, "room": room.name, "size": size},
        )

    def may_page(self, conn: Connection) -> bool:
        """Whether the user may have one more history page now (`limits.history_rate`): for
        a transport that reads pages itself (the no-JS pages)."""
        return self._pages.allow(conn.user_key)

    async def history(self, conn: Connection, frame: HistoryRequest) -> None:
        if frame.before is not None and not is_valid(frame.before):
            raise ProtocolError(Code.BAD_FRAME, say("before must be a message id"))
        if not self._pages.allow(conn.user_key):
            rate = self.settings.limits.history_rate
            raise self._strike(
                conn,
                say(
                    "at most {rate} history pages a second; this one was not sent",
                    rate=f"{rate:g}",
                ),
                frame.ref,
            )
        room = await self.readable_room(conn, frame.room)
        messages, more = await self._page(room, frame.before, frame.limit)
        page = HistoryPageOut(room=room.name, messages=messages, more=more, ref=frame.ref)
        conn.send(encode(page))

    async def _page(
        self, room: Room, before: str | None, limit: int
    ) -> tuple[list[msgspec.Raw], bool]:
        """Up to `limit` messages before `before`, newest last, cut to `limits.history_bytes`
        as encoded (the oldest go first; the page then says there are more). Each message is
        encoded once, here, newest first, and the store reads no further than the cut."""
        budget = self.settings.limits.history_bytes
        page: list[msgspec.Raw] = []
        more = False
        async with contextlib.aclosing(self.store.newest(room, before, limit + 1)) as found:
            async for message in found:
                if len(page) == limit:
                    more = True
                    break
                encoded = encode_bytes(message_frame(message))
                budget -= len(encoded) + 1
                if budget < 0 and page:
                    more = True
                    break
                page.append(msgspec.Raw(encoded))
        page.reverse()
        return page, more

    async def file_path(self, room: Room, id_: str) -> Path | None:
        """A file of the room's, here, or brought from the node its message came from."""
        path = await self.files.readable(room, id_)
        if path is None and self.fetch_file is not None and await self.fetch_file(room, id_):
            path = await self.files.readable(room, id_)
        return path

    async def readable_room(self, conn: Connection, raw: str) -> Room:
        """A room the connection has joined, or a conversation of its user (`@a+b`)."""
        if raw.startswith("@"):
            return await self._direct_room(conn, raw)
        room = await self.room(raw)
        self._joined(conn, room)
        return room

    async def _direct_room(self, conn: Connection, name: str) -> Room:
        parts = name[1:].split("+")
        if len(parts) != 2 or conn.user_key not in map(names.key, parts):
            raise ProtocolError(Code.FORBIDDEN, say("that conversation is not yours"))
        room = await self.store.room(names.direct_room(*parts))
        if room is None:
            raise ProtocolError(Code.UNKNOWN_ROOM, say("there are no messages with that user yet"))
        return room

    async def set_topic(
        self, conn: Connection, raw: str, text: str | None, box: str | None, ref: str | None = None
    ) -> None:
        """Set the topic; in an open room neither text nor box clears it, in a key-protected
        one a sealed empty topic does (so that no member without the key can clear it). The
        setter's copy carries its ref."""
        room = await self.room(raw)
        self._joined(conn, room)
        self.authority.require(conn.user_key, "topic", room.name)
        if room.protected and box is None:
            raise ProtocolError(
                Code.BAD_BODY,
                say(
                    "#{room} is key-protected: seal the topic (an empty one clears it)",
                    room=room.name,
                ),
            )
        if text is not None or box is not None:
            text, box = self.check_body(room, text, box, MAX_TOPIC_CHARS, say("topic"))
        ts = int(time.time() * 1000)
        changed = await self._topic(room, text, box, conn.user, ts, skip=conn)
        changed.ref = ref
        conn.send(encode(changed))
        for listener in self.topic_listeners:
            listener(room, changed)

    async def apply_topic(
        self, room: Room, text: str | None, box: str | None, by: str, ts: int
    ) -> bool:
        """A topic set on another node (checked there and by the federation): it replaces
        this one if it is newer. Whether it did."""
        if ts <= room.topic_ts:
            return False
        await self._topic(room, text, box, by, ts)
        return True

    async def _topic(
        self,
        room: Room,
        text: str | None,
        box: str | None,
        by: str,
        ts: int,
        skip: Connection | None = None,
    ) -> TopicChanged:
        kept = text is not None or box is not None
        setter, since = (by, ts) if kept else (None, 0)
        await self.store.set_topic(room.id, text, box, setter, since)
        self._rooms[room.name] = dataclasses.replace(
            room, topic=text, topic_box=box, topic_by=setter, topic_ts=since
        )
        changed = TopicChanged(room=room.name, by=by, ts=ts, text=text, box=box)
        self.hub.broadcast(room.name, encode(changed), skip=skip)
        return changed

    def notice(
        self, conn: Connection, text: str, room: str | None = None, ref: str | None = None
    ) -> None:
        conn.send(encode(Notice(text=i18n.said(conn.lang, text), room=room, ref=ref)))

    def failed(self, conn: Connection, ref: str | None) -> None:
        """A bug of the node's: the client hears only that its frame failed."""
        said = i18n.said(conn.lang, say("the node failed on this frame"))
        conn.send(error(Code.INTERNAL, said, ref))

    def tell(self, user_key: str, text: str, room: str | None = None) -> None:
        """A notice to every connection of a user, wherever they are."""
        for conn in self.hub.user_connections(user_key):
            self.notice(conn, text, room)

    def announce(
        self, room: str, text: str, conn: Connection | None = None, ref: str | None = None
    ) -> None:
        """A notice to everyone in the room now (what staff did, and who did it); the one who
        did it gets it with their ref, wherever they are."""
        frames: dict[str | None, str] = {}  # one encoding per language in the room
        for other in self.hub.room_connections(room):
            if other is not conn:
                frame = frames.get(other.lang)
                if frame is None:
                    said = i18n.said(other.lang, text)
                    frame = frames[other.lang] = encode(Notice(text=said, room=room))
                other.send(frame, room)
        if conn is not None:
            self.notice(conn, text, room, ref)

    def expel(self, room: str, user_key: str, why: str) -> int:
        """Take every connection of a user out of a room, each told why; how many there were."""
        count = 0
        for conn in self.hub.user_connections(user_key):
            if room in conn.rooms:
                conn.release(room, deliver=False)
                self._part(conn, room)
                conn.send(encode(Left(room=room, reason=i18n.said(conn.lang, why))))
                count += 1
        return count

    def ordered(self, order: Order) -> None:
        """Staff did something in a room: whoever listens (the federation) hears of it."""
        for listener in self.order_listeners:
            listener(order)

    async def erase(self, room: Room, ids: list[str], by: str) -> list[str]:
        """Delete messages from the database and from every screen that shows them; the ids
        there were. The log is scrubbed before anyone is told, so that their bytes are in no file
        by then."""
        gone = await self.store.delete_messages(room.id, ids)
        if gone:
            await self.files.forget(room, gone)
            # the words out of every file first (or, when a reader holds the log, soon after)
            self._unscrubbed = not await self.store.scrub()
            frame = Deleted(room=room.name, ids=gone, by=by)
            if room.name.startswith("@"):
                for user in room.name[1:].split("+"):
                    self.hub.to_user(names.key(user), encode(frame))
            else:
                self.hub.broadcast(room.name, encode(frame))
        return gone


_NOUNS = {"reply": say("reply"), "edit": say("edit"), "react": say("reaction")}


def _as_fields(related: tuple[str, str] | None) -> dict[str, Any]:
    return {} if related is None else {related[0]: related[1]}


def _why(sanction: Sanction) -> str:
    by = say(" by {user} ({remaining})", user=sanction.by, remaining=remaining(sanction.until))
    if sanction.reason:
        return say("{by}: {reason}", by=by, reason=sanction.reason)
    return by


def _check_box(box: str, max_length: int) -> None:
    if len(box) > max_length:
        raise ProtocolError(
            Code.BAD_CIPHERTEXT,
            say(
                "the box is too long ({n} base64 characters, at most {max_length})",
                n=len(box),
                max_length=max_length,
            ),
        )
    try:
        raw = base64.b64decode(box, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(Code.BAD_CIPHERTEXT, say("the box is not valid base64")) from None
    if len(raw) < NONCE_BYTES + MAC_BYTES + 1:
        raise ProtocolError(
            Code.BAD_CIPHERTEXT,
            say(
                "the box is too short to be a secretbox ({n} bytes: a 24-byte nonce, a "
                "16-byte tag and at least one byte of message)",
                n=len(raw),
            ),
        )
