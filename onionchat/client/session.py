"""One chat session on an authenticated WebSocket: typed lines become frames, and frames from
the node are opened, tracked and handed to a view.

Room keys never leave this process: in a key-protected room, messages and the topic are sealed
here before they go and opened here when they come, so the node relays ciphertext only.

Who is who is the node's to say: names are compared by the node's rules, so this client never
derives a name's key or a room's name itself. It keeps a room key under the name the node
answers in `joined`, knows itself by the name and key of `ready`, and a direct conversation by
the room the node names (in `key.direct` and in every direct message).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from onionchat import PROTOCOL_VERSION, crypto
from onionchat.addressing import Addressing
from onionchat.client.errors import ChatError
from onionchat.client.options import Options
from onionchat.client.outbox import Outbox
from onionchat.protocol import (
    Ack,
    Clear,
    Code,
    Delta,
    Error,
    HistoryPage,
    IdentityFrame,
    Invited,
    Joined,
    Left,
    Mention,
    MessageFrame,
    Notice,
    Pong,
    Presence,
    PublicKey,
    Readers,
    Ready,
    RoomList,
    TopicChanged,
    WhoList,
)

Frame = (
    Ready
    | Ack
    | MessageFrame
    | Delta
    | Readers
    | Joined
    | Left
    | Presence
    | HistoryPage
    | TopicChanged
    | RoomList
    | WhoList
    | Notice
    | Mention
    | Clear
    | Pong
    | IdentityFrame
    | PublicKey
    | Invited
    | Error
)

NO_KEY = "cannot decrypt: the room is key-protected and no --key was given"
NO_IDENTITY = "cannot decrypt: this client has no identity key"
CANNOT_UNWRAP = (
    "cannot unwrap your identity key: invitations and sealed direct messages cannot be read here"
)
SEEN_IDS = 10_000  # message ids remembered, so a message is shown once
_CLOSE_REASONS = {
    1001: "(the node is going away)",
    1011: "(the node failed)",
    1012: "(the node is restarting)",
}

T = TypeVar("T")


@dataclasses.dataclass
class RoomState:
    protected: bool
    topic: str | None = None  # as shown: decrypted, or a note saying why it cannot be


@dataclasses.dataclass
class State:
    """Who we are and where we are, shared by the session and the terminal view."""

    user: str
    key: str = ""  # our name as the node compares it (ready.key)
    current: str | None = None
    rooms: dict[str, RoomState] = dataclasses.field(default_factory=dict)  # newest last
    growing: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # bot answers

    def protected(self, room: str | None) -> bool:
        state = self.rooms.get(room) if room is not None else None
        return state is not None and state.protected


@dataclasses.dataclass(frozen=True)
class Shown:
    """A message as shown: opened if it was sealed, or the reason it could not be."""

    frame: MessageFrame
    text: str | None
    error: str | None = None
    sealed: bool = False


class View(Protocol):
    """How the session is shown: a terminal for people, JSON lines for scripts. `data` is the
    frame as received, with sealed text replaced by what it opened to."""

    def message(self, shown: Shown) -> None: ...
    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def clear(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class JoinRequest:
    room: str
    protected: bool
    create: bool
    done: asyncio.Future[Joined] | None = None  # the first join is waited for
    key: bytes | None = None  # the room key (--key), kept under the name the node answers


class Chat:
    """One session on a node: lines out as frames, frames in as things to show."""

    def __init__(
        self,
        ws: ClientConnection,
        view: View,
        state: State,
        options: Options,
        *,
        wrapping: bytes | None = None,
    ) -> None:
        self._ws = ws
        self._view = view
        self.state = state
        self._options = options
        self._outbox = Outbox(ws)
        self._keys: dict[str, bytes] = {}
        self._bots = Addressing([])  # the node's bots, from `ready`
        self._readers: dict[str, set[str]] = {}  # key-protected room -> bots invited to read it
        self.failures = 0  # lines refused, here or by the node
        self._closed = asyncio.Event()
        self._close_message = "the connection to the node was lost"
        self._max_text = 0
        self._leaving = False
        self._ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self._joins: dict[str, JoinRequest] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        # The identity key pair: unwrapped from `ready` with the wrapping key (derived from
        # the password, kept in memory only), or made here and published wrapped.
        self._wrapping = wrapping
        self._identity: tuple[bytes, bytes] | None = None  # (secret, public)
        # Public keys asked of the node, by the name as asked (or as the node spells it), and
        # by the room of our direct conversation with that user (`key.direct`).
        self._publics: dict[str, asyncio.Future[bytes | None]] = {}
        self._direct_keys: dict[str, asyncio.Future[bytes | None]] = {}
        self._key_refs: dict[str, str] = {}  # ref of a `key` request -> the name asked
        self._plain_warned: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the session's course -----------------------------------------------------------------

    async def start(self, token: str) -> None:
        """Authenticate (the token goes in the first frame, never in the URL), then join the
        first room."""
        auth = {"v": PROTOCOL_VERSION, "type": "auth", "token": token}
        with contextlib.suppress(ConnectionClosed):  # the reader reports the close
            await self._ws.send(json.dumps(auth))
        ready = await self._wait(self._ready)
        self.state.user = ready.user
        self.state.key = ready.key
        limits = ready.limits
        self._max_text = int(limits.get("max_text_chars", 0))
        if "rate" in limits and "burst" in limits:
            self._outbox.pace(float(limits["rate"]), int(limits["burst"]))
        done: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        await self._join(self._options.room, done, self._options.key)
        await self._wait(done)

    async def guard(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end, unless the node hangs up first: then ChatError says how."""
        task = asyncio.create_task(work)
        closed = asyncio.create_task(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise ChatError(self._close_message)
        return task.result()

    async def settle(self) -> None:
        """Wait (at most --timeout) until the node has answered every line sent."""
        try:
            async with asyncio.timeout(self._options.timeout):
                await self._outbox.settle()
                if self._tasks:  # sealed direct messages still being opened
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            raise ChatError(
                f"the node did not acknowledge {self._outbox.unsettled} message(s) "
                f"within {self._options.timeout:g} s"
            ) from None

    async def close(self) -> None:
        """Close with 1000: we are leaving, nothing went wrong."""
        self._leaving = True
        self._outbox.close()
        with contextlib.suppress(Exception):
            await self._ws.close(1000, "bye")

    async def _wait(self, future: asyncio.Future[T]) -> T:
        try:
            async with asyncio.timeout(self._options.timeout):
                return await future
        except TimeoutError:
            raise ChatError(f"the node did not answer within {self._options.timeout:g} s") from None

    # -- lines out ----------------------------------------------------------------------------

    async def line(self, line: str) -> bool:
        """Act on one typed line; False when the user asked to quit."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return True
        if text.startswith("//"):  # "//etc" says "/etc"
            await self._say(text[1:])
            return True
        if not text.startswith("/"):
            await self._say(text)
            return True
        name, _, rest = text[1:].partition(" ")
        command, args = name.casefold(), rest.strip()
        room = self.state.current
        if command in ("quit", "exit"):
            return False
        if command == "clear":
            self._view.clear()
            return True
        if command == "join" and args and " " not in args:
            await self._join(args)
            return True
        if command == "msg" and self._identity is not None:
            to, _, message = args.partition(" ")
            if to and message.strip() and await self._direct(to, message.strip()):
                return True
        if command == "topic" and not args and room is not None:
            # The topic as we hold it (the node's notice would print someone's newlines).
            await self._topic(room, args)
            return True
        if room is not None and self.state.protected(room):
            # The node refuses to see these in a key-protected room: seal them here.
            if command == "me" and args:
                await self._say(args, me=True)
                return True
            if command == "topic":
                await self._topic(room, args)
                return True
        frame: dict[str, Any] = {"type": "command", "line": text}
        if room is not None:
            frame["room"] = room
        await self._outbox.send(frame)
        return True

    async def _say(self, text: str, *, me: bool = False) -> None:
        """A message to the current room, sealed with the room key when the room wants it."""
        room = self.state.current
        if room is None:
            self._refuse("you are in no room: /join ROOM first")
            return
        if self._max_text and len(text) > self._max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self._max_text})"
            )
            return
        frame: dict[str, Any] = {"type": "send", "room": room}
        if self.state.protected(room):
            key = self._keys.get(room)
            if key is None:
                self._refuse(f"#{room} is key-protected: you need its key (--key) to write here")
                return
            frame["box"] = crypto.seal(key, text)
            self._hint_unread(room, text, me)
        else:
            frame["text"] = text
        if me:
            frame["me"] = True
        await self._outbox.send(frame)

    def _hint_unread(self, room: str, text: str, me: bool) -> None:
        """A bot called in a key-protected room it was not invited to cannot even read the
        call: say so here, since the node cannot."""
        call = None if me else self._bots.call(text)
        if call is None or call.bot in self._readers.get(room, set()):
            return
        self._view.note(
            f"{call.bot} cannot read #{room}: the room is key-protected and its key was never "
            f"shared with {call.bot}. /invite {call.bot} seals the key to it (every member is "
            "told); then it can answer here"
        )

    async def _direct(self, to: str, text: str) -> bool:
        """Send a direct message sealed with the key we share with `to`; False when they have
        no identity key (the caller sends it as plain text, as the node's /msg does)."""
        if self._identity is None:
            return False
        if self._max_text and len(text) > self._max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self._max_text})"
            )
            return True
        try:
            public = await self._wait(asyncio.shield(self._public_key(to)))
        except ChatError:
            public = None
        if public is None:
            if to not in self._plain_warned:
                self._plain_warned.add(to)
                self._view.warn(
                    f"{to} has no identity key (or could not be asked): "
                    "direct messages to them go as plain text, readable by the node"
                )
            return False
        try:
            shared = crypto.shared_key(self._identity[0], public)
        except crypto.CryptoError as exc:
            self._refuse(f"cannot seal a direct message to {to}: {exc}")
            return True
        await self._outbox.send({"type": "send", "to": to, "box": crypto.seal(shared, text)})
        return True

    def _public_key(self, name: str) -> asyncio.Future[bytes | None]:
        """`name`'s public key (None if they have none), asked of the node once."""
        future = self._publics.get(name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._publics[name] = future
            ref = self._outbox.ref()
            self._key_refs[ref] = name
            self._spawn(self._outbox.send({"type": "key", "user": name, "ref": ref}))
        return future

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _topic(self, room: str, text: str) -> None:
        if not text:
            topic = self.state.rooms[room].topic
            self._view.note(f"topic of #{room}: {topic or '(none)'}")
            return
        key = self._keys.get(room)
        if key is None:
            self._refuse(f"#{room} is key-protected: you need its key (--key) to set its topic")
            return
        await self._outbox.send({"type": "topic", "room": room, "box": crypto.seal(key, text)})

    async def _join(
        self, room: str, done: asyncio.Future[Joined] | None = None, key: bytes | None = None
    ) -> None:
        """Join (creating it if missing); key-protected for the room our --key is for, or one
        whose key an invitation brought (by the name the node gave it: another spelling is
        joined all the same, once the node has said that it is key-protected)."""
        protected = key is not None or room.removeprefix("#") in self._keys
        request = JoinRequest(room, protected=protected, create=True, done=done, key=key)
        await self._request(request)

    async def _request(self, request: JoinRequest) -> None:
        ref = self._outbox.ref()
        self._joins[ref] = request
        frame = {
            "type": "join",
            "ref": ref,
            "room": request.room,
            "create": request.create,
            "protected": request.protected,
        }
        await self._outbox.send(frame)

    def _refuse(self, text: str) -> None:
        self.failures += 1
        self._view.error(text)

    # -- frames in ----------------------------------------------------------------------------

    async def read(self) -> None:
        """Handle frames until the connection ends, then note why it ended."""
        try:
            async for raw in self._ws:
                if isinstance(raw, str):
                    for line in raw.split("\n"):  # a message may carry several frames
                        await self._receive(line)
        except ConnectionClosed:
            pass
        finally:
            received = self._ws.protocol.close_rcvd
            if received is not None and not self._leaving:
                reason = received.reason or _CLOSE_REASONS.get(received.code, "")
                reason = f" {reason}" if reason else ""
                self._close_message = f"disconnected by the node: {received.code}{reason}"
            self._closed.set()

    async def _receive(self, raw: str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        frame: Frame | None
        try:
            frame = msgspec.convert(data, Frame)
        except msgspec.ValidationError:
            frame = None
        ref: str | None = getattr(frame, "ref", None)
        if ref is not None:
            rate_limited = isinstance(frame, Error) and frame.code == Code.RATE_LIMITED
            if rate_limited and self._outbox.dropped(ref):
                return  # it goes out again, in its turn
            self._outbox.answered(ref)
        match frame:
            case Ready():
                self._bots = Addressing(
                    (name, label)
                    for name, aliases in frame.bots.items()
                    for label in (name, *aliases)
                )
                self._view.frame(frame, data)
                await self._restore_identity(frame)
                if not self._ready.done():
                    self._ready.set_result(frame)
            case IdentityFrame():
                pass  # our own key, published: nothing to show
            case PublicKey():
                self._got_key(frame)
            case Invited():
                error = self._invitation(frame.room, frame.sender, frame.sealed)
                shown = {k: v for k, v in data.items() if k != "sealed"}
                shown["opened"] = error is None
                if error is not None:
                    shown["error"] = error
                self._view.frame(frame, shown)
            case Error():
                await self._error(frame, data)
            case MessageFrame():
                self._show(frame)
            case Joined():
                self._joined(frame, data)
            case HistoryPage():
                self._view.frame(frame, {k: v for k, v in data.items() if k != "messages"})
                for message in frame.messages:
                    self._show(message)
            case Left():
                self.state.rooms.pop(frame.room, None)
                if self.state.current == frame.room:
                    rooms = [r for r in self.state.rooms if not r.startswith("@")]
                    self.state.current = rooms[-1] if rooms else None
                self._view.frame(frame, data)
            case TopicChanged():
                shown = self._topic_data(frame.room, frame.text, frame.box)
                room = self.state.rooms.get(frame.room)
                if room is not None:
                    room.topic = shown["text"] or f"[{shown.get('error', '')}]"
                self._view.frame(frame, {**data, **shown})
            case Clear():
                self._view.clear()
                self._view.frame(frame, data)
            case Pong():
                pass  # our own, from settle(): nothing to show
            case Readers():
                self._readers[frame.room] = set(frame.bots)
            case Delta() if frame.box is not None:
                opened, error = self._open(frame.room, frame.box)
                text = opened if opened is not None else f"[{error}]"
                opened_delta = Delta(room=frame.room, id=frame.id, sender=frame.sender, text=text)
                self._view.frame(
                    opened_delta, {k: v for k, v in data.items() if k != "box"} | {"text": text}
                )
            case _:
                self._view.frame(frame, data)

    async def _restore_identity(self, ready: Ready) -> None:
        """Unwrap the account's identity key, or make and publish one; then open the
        invitations that waited for us."""
        if self._wrapping is None:
            return
        if ready.identity is not None:
            try:
                secret = crypto.unwrap_identity(self._wrapping, ready.identity.wrapped)
                public = base64.b64decode(ready.identity.public, validate=True)
                if crypto.public_of(secret) != public:
                    raise crypto.CryptoError("the identity key does not match its public key")
            except (crypto.CryptoError, binascii.Error, ValueError):
                # Never publish a new key over it: invitations sealed to it would be lost.
                self._view.warn(CANNOT_UNWRAP)
                return
            self._identity = (secret, public)
        else:
            secret, public = crypto.new_identity()
            self._identity = (secret, public)
            await self._outbox.send(
                {
                    "type": "identity",
                    "public": base64.b64encode(public).decode(),
                    "wrapped": crypto.wrap_identity(self._wrapping, secret),
                }
            )
        for invitation in ready.invitations:
            self._invitation(invitation.room, invitation.sender, invitation.sealed)

    def _invitation(self, room: str, sender: str, sealed: str) -> str | None:
        """Keep the room key an invitation brings; None, or why it cannot be opened."""
        if self._identity is None:
            error = f"cannot open {sender}'s invitation to #{room}: this client has no identity key"
            self._view.warn(error)
            return error
        try:
            key = crypto.open_room_key(sealed, self._identity[0])
        except crypto.CryptoError as exc:
            error = f"cannot open {sender}'s invitation to #{room}: {exc}"
            self._view.warn(error)
            return error
        self._keys[room] = key  # the node's name of the room
        self._view.note(f"{sender} invited you to #{room}")
        return None

    def _got_key(self, frame: PublicKey) -> None:
        asked = self._key_refs.pop(frame.ref, None) if frame.ref is not None else None
        future = self._publics.get(asked or frame.user)
        if future is None:
            return
        self._publics.setdefault(frame.user, future)
        self._direct_keys.setdefault(frame.direct, future)
        if future.done():
            return
        try:
            public = base64.b64decode(frame.public, validate=True)
        except (binascii.Error, ValueError):
            future.set_result(None)
            return
        future.set_result(public if len(public) == 32 else None)

    def _joined(self, frame: Joined, data: dict[str, Any]) -> None:
        info = frame.room
        request = self._joins.pop(frame.ref, None) if frame.ref is not None else None
        if request is not None and request.key is not None:
            self._keys[info.name] = request.key  # as the node names it, however it was typed
        topic = self._topic_data(info.name, info.topic, info.topic_box)
        shown = topic["text"] or (f"[{topic['error']}]" if "error" in topic else None)
        self.state.rooms.pop(info.name, None)  # re-insert: the newest room is the last one
        self.state.rooms[info.name] = RoomState(info.protected, shown)
        self._readers[info.name] = set(info.readers)
        self.state.current = info.name
        if request is not None and request.done is not None and not request.done.done():
            request.done.set_result(frame)
        room_data = dict(data.get("room", {}))
        if info.topic_box is not None:
            room_data["topic"] = topic["text"]
            room_data["topic_decrypted"] = topic.get("decrypted", False)
            if "error" in topic:
                room_data["topic_error"] = topic["error"]
        rest = {k: v for k, v in data.items() if k != "history"}  # shown one by one below
        self._view.frame(frame, {**rest, "room": room_data})
        if info.protected and info.name not in self._keys:
            self._view.warn(
                f"#{info.name} is key-protected: its messages cannot be read without --key"
            )
        for message in frame.history:
            self._show(message)

    async def _error(self, frame: Error, data: dict[str, Any]) -> None:
        if not self._ready.done():  # refused before `ready`: the session is unusable
            self._ready.set_exception(ChatError(frame.message))
            return
        asked = self._key_refs.pop(frame.ref, None) if frame.ref is not None else None
        if asked is not None:  # `key` for a user without one (no_key), or refused
            future = self._publics.get(asked)
            if future is not None and not future.done():
                future.set_result(None)
            return
        request = self._joins.pop(frame.ref, None) if frame.ref is not None else None
        if request is not None:
            if frame.code == Code.ROOM_MODE and request.create and not request.protected:
                # It exists and is key-protected: join it anyway (no key, so no reading).
                await self._request(dataclasses.replace(request, create=False))
                return
            if request.done is not None:
                hint = ""
                if frame.code == Code.ROOM_MODE and request.protected:
                    hint = " (a --key is only for key-protected rooms)"
                if not request.done.done():
                    request.done.set_exception(ChatError(frame.message + hint))
                return
        if frame.ref is not None:
            self.failures += 1
        self._view.frame(frame, data)

    def _show(self, message: MessageFrame) -> None:
        """Show a message once, however often it comes (history, live, a second join)."""
        if message.id in self._seen:
            return
        self._seen[message.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if message.box is None:
            self._view.message(Shown(message, message.text))
        elif message.to is not None:
            self._spawn(self._show_direct(message, message.box))
        else:
            text, error = self._open(message.room, message.box)
            self._view.message(Shown(message, text, error, sealed=True))

    async def _show_direct(self, message: MessageFrame, box: str) -> None:
        """A sealed direct message, opened with the key we share with the other user (whose
        public key is asked of the node once)."""
        if self._identity is None:
            self._view.message(Shown(message, None, NO_IDENTITY, sealed=True))
            return
        # The node spells both names as they were registered, ours as in `ready`.
        other = message.to if message.sender == self.state.user else message.sender
        assert other is not None
        future = self._direct_keys.get(message.room) or self._public_key(other)
        try:
            async with asyncio.timeout(self._options.timeout):
                public = await asyncio.shield(future)  # a timeout here leaves it to others
        except TimeoutError:
            public = None
        if public is None:
            error = f"cannot decrypt: no identity key of {other}"
            self._view.message(Shown(message, None, error, sealed=True))
            return
        try:
            text = crypto.open_box(crypto.shared_key(self._identity[0], public), box)
        except crypto.CryptoError as exc:
            self._view.message(Shown(message, None, str(exc), sealed=True))
            return
        self._view.message(Shown(message, text, sealed=True))

    def _topic_data(self, room: str, text: str | None, box: str | None) -> dict[str, Any]:
        """The topic as shown, with `decrypted` (or `error`) when it was sealed."""
        if box is None:
            return {"text": text}
        opened, error = self._open(room, box)
        if error is not None:
            return {"text": None, "decrypted": False, "error": error}
        return {"text": opened, "decrypted": True}

    def _open(self, room: str, box: str) -> tuple[str | None, str | None]:
        """(text, None) if the box opens with the room's key, else (None, why not)."""
        key = self._keys.get(room)
        if key is None:
            return None, NO_KEY
        try:
            return crypto.open_box(key, box), None
        except crypto.CryptoError as exc:
            return None, str(exc)
