"""One chat session on an authenticated WebSocket: typed lines become frames, and frames from
the node are opened, checked, tracked and handed to a view.

Room keys never leave this process: in a key-protected room, messages, actions and the topic
are sealed here (signed, and bound to room, sender, kind and time: onionchat.sealed) before
they go, and opened and checked when they come (trust.py), so the node relays ciphertext only
and no member can pass a box off as another's. A box that opens but fails a check is shown as
rejected, never as a message. Room keys and the keys first seen for each peer live in the
account's keyring, sealed under the password-derived wrapping key and kept on the node
(keys.py), so a fresh CLI home restores every room; invitations.py decides which invitation's
key is taken. This module is the session itself: the frames in, the commands, the frames out.

Who is who is the node's to say: names are compared by the node's rules, so this client never
derives a name's key or a room's name itself. It keeps a room key under the name the node
answers in `joined`, knows itself by the name and key of `ready`, and a direct conversation by
the room the node names (in `key.direct` and in every direct message).

What is shown goes out in the order the node sent it: frames are handed to one worker that may
wait for a sender's published key before it shows a box, while the reader goes on reading.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from onionchat import PROTOCOL_VERSION, crypto, sealed
from onionchat.addressing import Addressing
from onionchat.client.attachments import download, read, save, upload
from onionchat.client.errors import ChatError
from onionchat.client.invitations import Invitations, room_boxes
from onionchat.client.keys import NO_SIGNER, OwnKeys
from onionchat.client.numbers import Numbered, Numbers
from onionchat.client.options import Options
from onionchat.client.outbox import Outbox
from onionchat.client.trust import Trust
from onionchat.protocol import (
    REACTIONS,
    Ack,
    Clear,
    Code,
    Deleted,
    Delta,
    Error,
    HistoryPage,
    IdentityFrame,
    Invited,
    Joined,
    KeyringFrame,
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
    | Deleted
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
    | KeyringFrame
    | PublicKey
    | Invited
    | Error
)

SEEN_IDS = 10_000  # message ids remembered, so a message is shown once
CLIENT_HELP = """Commands of this client:
/invite USER       seal this key-protected room's key to USER (a bot too), signed by you
/uninvite BOT      make a bot forget this key-protected room's key
/create ROOM       make a new key-protected room with a new key (never over an existing one)
/usekey ROOM USER  take the key USER's invitation to ROOM brought, as the room's newest key
/rotate            a new key for this room, sealed to its members (after a kick or a ban)
/whois [NAME]      NAME's key fingerprint and whether it is the one first seen (yours alone)
/trust NAME        accept NAME's new key after it changed
/reply N TEXT      answer message [N] (the number before each message)
/edit N TEXT       a new text for your message [N]
/react N EMOJI     react to [N] with one of 👍 👎 ❤️ 😂 😮 😢 🎉
/delete N          delete your message [N] (staff: anyone's in a room)
/file PATH         send a file here (sealed here in a key-protected room)
/save N            save the file of message [N] in the current directory
/quit              leave (Ctrl-D too)"""
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
    numbers: Numbers = dataclasses.field(default_factory=Numbers)  # the lines shown, numbered

    def protected(self, room: str | None) -> bool:
        state = self.rooms.get(room) if room is not None else None
        return state is not None and state.protected


@dataclasses.dataclass(frozen=True)
class Shown:
    """A message as shown: opened if it was sealed, or the reason it could not be; rejected
    when it opened but is not what its envelope says; unsealed when plain text came where a
    box belongs (a direct message from the no-JS pages)."""

    frame: MessageFrame
    text: str | None
    error: str | None = None
    sealed: bool = False
    rejected: str | None = None
    unsealed: bool = False
    number: int = 0  # a line's short number (`[3]`); 0 for an edit or a reaction
    about: Numbered | None = None  # what a reply, an edit or a reaction is about, if shown
    file: dict[str, Any] | None = None  # its file: id, name, type, size (and key, if sealed)
    live: bool = False  # come as it was sent, not in a page of history


class View(Protocol):
    """How the session is shown: a terminal for people, JSON lines for scripts. `data` is the
    frame as received, with sealed text replaced by what it opened to."""

    def message(self, shown: Shown) -> None: ...
    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def clear(self) -> None: ...
    def tell(self, kind: str, text: str, fields: dict[str, Any], warn: bool = False) -> None:
        """Something about keys a script must see too: `kind` is its JSON line's type."""


@dataclasses.dataclass(frozen=True)
class JoinRequest:
    room: str
    protected: bool
    create: bool
    done: asyncio.Future[Joined] | None = None  # the first join is waited for
    key: bytes | None = None  # the room key (--key, /create), kept under the name the node answers
    new: bool = False  # /create: a new room only, never one that exists


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
        self._bots = Addressing([])  # the node's bots, from `ready`
        self._readers: dict[str, set[str]] = {}  # key-protected room -> bots invited to read it
        self._members: dict[str, set[str]] = {}  # room -> who is in it, as the node spells them
        self.failures = 0  # lines refused, here or by the node
        self._closed = asyncio.Event()
        self._close_message = "the connection to the node was lost"
        self._max_text = 0
        self._max_file = 0
        self._token = ""
        self._leaving = False
        self._ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self._joins: dict[str, JoinRequest] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._help_refs: set[str] = set()
        self._plain_warned: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The keys: ours (identity, keyring), other users' (trust), and invitations.
        self._own = OwnKeys(wrapping, self._outbox, self._spawn, view.warn)
        self._trust = Trust(
            self._own,
            self._outbox,
            self._spawn,
            view,
            self._refuse,
            state,
            self._rooms_with,
            options.timeout,
        )
        self._invitations = Invitations(
            self._own, self._trust, self._outbox, self._spawn, view, self._refuse, state
        )
        self._shows: asyncio.Queue[Coroutine[Any, Any, None]] = asyncio.Queue()
        self._shower = asyncio.create_task(self._show_in_order())

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
        self._max_file = int(limits.get("max_file_bytes", 0))
        self._token = token
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
        """Wait (at most --timeout) until the node has answered every line sent, and all it
        sent meanwhile is shown (keys asked for it included)."""
        try:
            async with asyncio.timeout(self._options.timeout):
                while True:
                    await self._outbox.settle()
                    if self._tasks:
                        await asyncio.wait(set(self._tasks))
                    await self._shows.join()
                    if not self._tasks and not self._outbox.unsettled:
                        return
        except TimeoutError:
            raise ChatError(
                f"the node did not acknowledge {self._outbox.unsettled} message(s) "
                f"within {self._options.timeout:g} s"
            ) from None

    async def close(self) -> None:
        """Close with 1000: we are leaving, nothing went wrong."""
        self._leaving = True
        self._outbox.close()
        self._shower.cancel()
        while not self._shows.empty():
            self._shows.get_nowait().close()
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
        local = self._commands().get(command)
        if local is not None and await local(args):
            return True
        if command == "msg" and self._own.identity is not None:
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
        if command == "help":
            frame["ref"] = self._outbox.ref()
            self._help_refs.add(frame["ref"])
        await self._outbox.send(frame)
        return True

    def _commands(self) -> dict[str, Callable[[str], Awaitable[bool]]]:
        """The client's own commands: each answers whether it handled the line."""
        return {
            "clear": self._cmd_clear,
            "join": self._cmd_join,
            "create": self._cmd_create,
            "invite": self._invitations.cmd_invite,
            "usekey": self._invitations.cmd_usekey,
            "rotate": self._invitations.cmd_rotate,
            "whois": self._trust.cmd_whois,
            "trust": self._trust.cmd_trust,
            "reply": lambda args: self._cmd_about("reply", args),
            "edit": lambda args: self._cmd_about("edit", args),
            "react": lambda args: self._cmd_about("react", args),
            "delete": self._cmd_delete,
            "file": self._cmd_file,
            "save": self._cmd_save,
        }

    async def _cmd_file(self, args: str) -> bool:
        """/file PATH: a file to the room in view, sealed here in a key-protected room."""
        found = await asyncio.to_thread(read, args)
        room = self.state.current
        if found is None:
            self._refuse("usage: /file PATH (a file to send to this room)")
            return True
        if room is None:
            self._refuse("you are in no room: /join ROOM first")
            return True
        name, kind, data = found
        hidden = self.state.protected(room)
        limit = self._max_file - (40 if hidden else 0)
        if len(data) > limit:
            self._refuse(f"the file is too large ({len(data):,} bytes, at most {max(limit, 0):,})")
            return True
        key = crypto.new_room_key() if hidden else None
        try:
            sent = await upload(
                self._options, self._token, room, crypto.seal_file(key, data) if key else data
            )
        except ChatError as exc:
            self._refuse(f"{name}: {exc}")
            return True
        if key is None:
            file = {"id": sent["id"], "size": sent["size"], "name": name, "type": kind}
            await self._outbox.send({"type": "send", "room": room, "text": name, "file": file})
            return True
        descriptor = {"id": sent["id"], "name": name, "type": kind, "size": sent["size"],
                      "key": crypto.encode_key(key)}  # fmt: skip
        box = self._seal(room, "message", name, "send a file", file=descriptor)
        if box is not None:
            frame = {"type": "send", "room": room, "box": box,
                     "file": {"id": sent["id"], "size": sent["size"]}}  # fmt: skip
            await self._outbox.send(frame)
        return True

    async def _cmd_save(self, args: str) -> bool:
        """/save N: the file of message [N], opened here, into the current directory."""
        target = self.state.numbers.get(args)
        if target is None or target.file is None:
            self._refuse("usage: /save N (N: the number in [ ] before a message with a file)")
            return True
        file = target.file
        try:
            data = await download(self._options, self._token, target.room, file["id"])
        except ChatError as exc:
            self._refuse(str(exc))
            return True
        if data is None:
            self._refuse(f"{file.get('name', 'the file')} is gone (deleted, or expired)")
            return True
        if file.get("key"):
            try:
                data = crypto.open_file(crypto.decode_key(file["key"]), data)
            except crypto.CryptoError as exc:
                self._refuse(str(exc))
                return True
        name = str(file.get("name") or "file")
        saved = await asyncio.to_thread(save, Path.cwd(), name, data)
        self._view.note(f"saved {saved}")
        return True

    async def _cmd_about(self, kind: str, args: str) -> bool:
        """/reply N TEXT, /edit N TEXT, /react N EMOJI: N is the number before a message."""
        number, _, text = args.partition(" ")
        target, text = self.state.numbers.get(number), text.strip()
        if target is None or not text:
            what = "EMOJI" if kind == "react" else "TEXT"
            self._refuse(f"usage: /{kind} N {what} (N: the number in [ ] before a message)")
            return True
        if kind == "edit" and target.sender != self.state.user:
            self._refuse("you can edit your own messages only")
            return True
        about = {kind: target.id}
        me = target.me if kind == "edit" else False
        if target.to is None:
            await self._say(text, me=me, room=target.room, about=about)
            return True
        other = target.to if target.sender == self.state.user else target.sender
        if not await self._direct(other, text, about=about, me=me):
            frame = {"type": "send", "to": other, "text": text, **about}
            await self._outbox.send(frame | ({"me": True} if me else {}))
        return True

    async def _cmd_delete(self, args: str) -> bool:
        """/delete N: one's own message (or, for staff, anyone's); an id goes to the node."""
        target = self.state.numbers.get(args)
        if target is None:
            if len(args) == 26:
                return False  # `/delete ID`: the node's own command
            self._refuse("usage: /delete N (N: the number in [ ] before a message)")
            return True
        await self._outbox.send({"type": "delete", "room": target.room, "id": target.id})
        return True

    async def _cmd_clear(self, args: str) -> bool:
        self._view.clear()
        return True

    async def _cmd_join(self, args: str) -> bool:
        if not args or " " in args:
            return False  # the node says how
        await self._join(args)
        return True

    async def _cmd_create(self, args: str) -> bool:
        room = args.removeprefix("#").strip()
        if not room or " " in room:
            self._refuse("usage: /create ROOM")
            return True
        key = crypto.new_room_key()
        request = JoinRequest(room, protected=True, create=True, key=key, new=True)
        await self._request(request)
        return True

    async def _say(
        self,
        text: str,
        *,
        me: bool = False,
        room: str | None = None,
        about: dict[str, str] | None = None,
    ) -> None:
        """A message to the current room (or `room`), sealed with the room key when the room
        wants it; `about`: the message it answers, edits or reacts to."""
        room = room or self.state.current
        if room is None:
            self._refuse("you are in no room: /join ROOM first")
            return
        if self._max_text and len(text) > self._max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self._max_text})"
            )
            return
        frame: dict[str, Any] = {"type": "send", "room": room, **(about or {})}
        if self.state.protected(room):
            kind, re = _kind(me, about)
            box = self._seal(room, kind, text, "write here", re)
            if box is None:
                return
            frame["box"] = box
            if about is None:
                self._hint_unread(room, text, me)
        else:
            frame["text"] = text
        if me:
            frame["me"] = True
        await self._outbox.send(frame)

    def _seal(
        self,
        room: str,
        kind: str,
        text: str,
        what: str,
        re: str | None = None,
        file: dict[str, Any] | None = None,
    ) -> str | None:
        """A signed box for `room` under its newest key; None (and said) when it cannot be."""
        keys = self._own.room_keys(room)
        if not keys:
            self._refuse(f"#{room} is key-protected: you need its key (--key) to {what}")
            return None
        if self._own.signer is None:
            self._refuse(f"cannot {what}: {NO_SIGNER}")
            return None
        return sealed.seal_body(
            keys[0],
            self._own.signer,
            room=room,
            sender=self.state.user,
            kind=kind,
            text=text,
            re=re,
            file=file,
        )

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

    async def _direct(
        self, to: str, text: str, about: dict[str, str] | None = None, me: bool = False
    ) -> bool:
        """Send a direct message sealed with the key we share with `to`; False when they have
        no identity key (the caller sends it as plain text, as the node's /msg does)."""
        identity, signer = self._own.identity, self._own.signer
        if identity is None or signer is None:
            return False
        if self._max_text and len(text) > self._max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self._max_text})"
            )
            return True
        peer = await self._trust.await_peer(self._trust.peer(to))
        if peer is None:
            if to not in self._plain_warned:
                self._plain_warned.add(to)
                self._view.warn(
                    f"{to} has no identity key (or could not be asked): "
                    "direct messages to them go as plain text, readable by the node"
                )
            return False
        if self._trust.new_key(peer.user) is not None:
            self._refuse(self._trust.advice(peer.user, "write to them"))
            return True
        try:
            shared = crypto.shared_key(identity[0], self._trust.box_public(peer))
        except crypto.CryptoError as exc:
            self._refuse(f"cannot seal a direct message to {to}: {exc}")
            return True
        kind, re = _kind(me, about)
        box = sealed.seal_body(
            shared, signer, room=peer.direct, sender=self.state.user, kind=kind, text=text, re=re
        )
        frame = {"type": "send", "to": to, "box": box, **(about or {})}
        await self._outbox.send(frame | ({"me": True} if me else {}))
        return True

    async def _topic(self, room: str, text: str) -> None:
        if not text:
            topic = self.state.rooms[room].topic
            self._view.note(f"topic of #{room}: {topic or '(none)'}")
            return
        box = self._seal(room, "topic", text, "set its topic")
        if box is not None:
            await self._outbox.send({"type": "topic", "room": room, "box": box})

    async def _join(
        self, room: str, done: asyncio.Future[Joined] | None = None, key: bytes | None = None
    ) -> None:
        """Join (creating it if missing); key-protected for the room our --key is for, or one
        whose key the keyring or an invitation holds (by the name the node gave it: another
        spelling is joined all the same, once the node has said that it is key-protected)."""
        name = room.removeprefix("#")
        protected = (
            key is not None or bool(self._own.room_keys(name)) or self._invitations.pending(name)
        )
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
        if request.new:
            frame["new"] = True
        await self._outbox.send(frame)

    def _refuse(self, text: str) -> None:
        self.failures += 1
        self._view.error(text)

    def _rooms_with(self, user: str) -> list[str]:
        """The rooms `user` is in with us, as far as the node has told."""
        return [room for room, members in self._members.items() if user in members]

    # -- frames in ----------------------------------------------------------------------------

    async def read(self) -> None:
        """Handle frames until the connection ends, then note why it ended."""
        try:
            async for raw in self._ws:
                if isinstance(raw, str):
                    for line in raw.split("\n"):  # a message may carry several frames
                        try:
                            await self._receive(line)
                        except Exception as exc:  # one frame's failure must not end the session
                            self._view.warn(f"a frame from the node could not be handled: {exc!r}")
        except ConnectionClosed:
            pass
        finally:
            received = self._ws.protocol.close_rcvd
            if received is not None and not self._leaving:
                reason = received.reason or _CLOSE_REASONS.get(received.code, "")
                reason = f" {reason}" if reason else ""
                self._close_message = f"disconnected by the node: {received.code}{reason}"
            self._closed.set()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Show in the order the node sent, after what came before."""
        self._shows.put_nowait(work)

    def _show_frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        async def show() -> None:
            self._view.frame(frame, data)

        self._later(show())

    async def _show_in_order(self) -> None:
        while True:
            work = await self._shows.get()
            try:
                await work
            except Exception as exc:  # one frame's failure must not stop the others
                self._view.warn(f"could not show a frame: {exc!r}")
            finally:
                self._shows.task_done()

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
                self._show_frame(frame, data)
                if await self._own.restore(frame):  # the invitations that waited, opened
                    self._trust.prefetch(invitation.sender for invitation in frame.invitations)
                    for invitation in frame.invitations:
                        self._later(
                            self._invitations.invitation(
                                invitation.room,
                                invitation.sender,
                                invitation.sealed,
                                staff=invitation.staff,
                            )
                        )
                if not self._ready.done():
                    self._ready.set_result(frame)
            case IdentityFrame():
                pass  # our own key, published: nothing to show
            case KeyringFrame():
                self._own.got_keyring(frame)
            case PublicKey():
                self._trust.got_key(frame)
            case Invited():
                self._later(
                    self._invitations.invitation(
                        frame.room, frame.sender, frame.sealed, data, frame.staff
                    )
                )
            case Error():
                await self._error(frame, data)
            case MessageFrame():
                self._later(self._show(frame, live=True))
            case Joined():
                self._joined(frame, data)
            case HistoryPage() if frame.ref is not None and self._invitations.probing(frame.ref):
                self._later(self._invitations.probed(frame.ref, frame))
            case HistoryPage():
                self._show_frame(frame, {k: v for k, v in data.items() if k != "messages"})
                for message in frame.messages:
                    self._later(self._show(message))
            case Left():
                self.state.rooms.pop(frame.room, None)
                self._members.pop(frame.room, None)
                if self.state.current == frame.room:
                    rooms = [r for r in self.state.rooms if not r.startswith("@")]
                    self.state.current = rooms[-1] if rooms else None
                self._show_frame(frame, data)
            case Presence():
                members = self._members.setdefault(frame.room, set())
                if frame.state == "join":
                    members.add(frame.user)
                elif frame.state == "leave":
                    members.discard(frame.user)
                self._show_frame(frame, data)
            case TopicChanged():
                self._later(self._topic_changed(frame, data))
            case Clear():

                async def clear() -> None:
                    self._view.clear()
                    self._view.frame(frame, data)

                self._later(clear())
            case Pong():
                pass  # our own, from settle(): nothing to show
            case WhoList() if frame.ref is not None and self._invitations.rotating(frame.ref):
                self._later(self._invitations.rotated(frame.ref, frame.members))
            case Readers():
                self._readers[frame.room] = set(frame.bots)
            case Delta() if frame.box is not None:
                self._later(self._delta(frame, data))
            case Notice() if frame.ref is not None and frame.ref in self._help_refs:
                self._help_refs.discard(frame.ref)
                self._show_frame(frame, data)
                mine = Notice(text=CLIENT_HELP, room=frame.room)
                self._show_frame(mine, {"type": "notice", "text": CLIENT_HELP})
            case _:
                self._show_frame(frame, data)

    def _joined(self, frame: Joined, data: dict[str, Any]) -> None:
        info = frame.room
        request = self._joins.pop(frame.ref, None) if frame.ref is not None else None
        given = None
        if request is not None and request.key is not None:
            given = self._own.given(info.name, request.key, request.new)
        self.state.rooms.pop(info.name, None)  # re-insert: the newest room is the last one
        self.state.rooms[info.name] = RoomState(info.protected, None)
        self._readers[info.name] = set(info.readers)
        self._members[info.name] = set(frame.members)
        self.state.current = info.name
        if request is not None and request.done is not None and not request.done.done():
            request.done.set_result(frame)
        self._trust.prefetch(m.sender for m in frame.history if m.box is not None and m.to is None)
        self._later(self._show_joined(frame, data, given))

    async def _show_joined(self, frame: Joined, data: dict[str, Any], given: str | None) -> None:
        info = frame.room
        if info.protected and self._invitations.pending(info.name):
            boxes = room_boxes(frame.history)
            await self._invitations.decide(info.name, boxes, complete=not frame.more)
        room_data = dict(data.get("room", {}))
        shown: str | None = info.topic
        if info.topic_box is not None:
            checked = await self._trust.check(
                self._own.room_keys(info.name),
                info.topic_box,
                room=info.name,
                sender=info.topic_by or "",
                kind="topic",
                ts=info.topic_ts,
                message_id=None,
            )
            shown = checked.text or (f"[{checked.error}]" if checked.error else None)
            room_data["topic"] = checked.text or None
            room_data["topic_decrypted"] = checked.text is not None
            if checked.error is not None:
                room_data["topic_error"] = checked.error
            if checked.rejected is not None:
                room_data["topic_rejected"] = checked.rejected
        state = self.state.rooms.get(info.name)
        if state is not None:
            state.topic = shown
        rest = {k: v for k, v in data.items() if k != "history"}  # shown one by one below
        self._view.frame(frame, {**rest, "room": room_data})
        if given is not None:
            self._view.tell("key", given, {"room": info.name, "outcome": "given"})
        if info.protected and not self._own.room_keys(info.name):
            self._view.warn(
                f"#{info.name} is key-protected: its messages cannot be read without its key "
                "(--key, or an invitation)"
            )
        for message in frame.history:
            await self._show(message)

    async def _error(self, frame: Error, data: dict[str, Any]) -> None:
        if not self._ready.done():  # refused before `ready`: the session is unusable
            self._ready.set_exception(ChatError(frame.message))
            return
        if frame.ref is not None:
            if self._trust.refused(frame.ref, frame.message):  # `key`: no_key, or refused
                return
            if self._own.refused(frame.ref, frame.code):  # a keyring conflict: ours again
                return
            self._invitations.forget(frame.ref)
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
            if request.new:
                self.failures += 1
                message = f"{frame.message}: the new key was thrown away"
                self._show_frame(frame, {**data, "message": message})
                return
        if frame.ref is not None:
            self.failures += 1
        self._show_frame(frame, data)

    async def _show(self, message: MessageFrame, live: bool = False) -> None:
        """Show a message once, however often it comes (history, live, a second join)."""
        if message.id in self._seen:
            return
        self._seen[message.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        kind, re = sealed.kind_of(message)
        if message.box is None:
            unsealed = message.to is not None or self.state.protected(message.room)
            file = None if message.file is None else msgspec.to_builtins(message.file)
            shown = Shown(message, message.text, unsealed=unsealed, file=file, live=live)
        else:
            if message.to is not None:
                checked = await self._trust.check_direct(message, message.box, kind, re)
            else:
                checked = await self._trust.check(
                    self._own.room_keys(message.room),
                    message.box,
                    room=message.room,
                    sender=message.sender,
                    kind=kind,
                    ts=message.ts,
                    message_id=message.id,
                    re=re,
                    file=message.file,
                )
            shown = Shown(
                message,
                checked.text,
                checked.error,
                sealed=True,
                rejected=checked.rejected,
                file=checked.file,
                live=live,
            )
        self._view.message(self._numbered(shown, re))

    def _numbered(self, shown: Shown, re: str | None) -> Shown:
        """A line gets its number; an edit or a reaction what it is about, and is rejected
        when it cannot be what it says (an edit of another's words, a reaction of none of the
        seven): the node is not trusted with who may edit what."""
        m = shown.frame
        about = self.state.numbers.of(re) if re is not None else None
        if not (m.edit or m.react):
            number = self.state.numbers.add(m.room, m.id, m.sender, m.me, m.to, shown.file)
            return dataclasses.replace(shown, number=number, about=about)
        self.state.numbers.relate(m.id, "edit" if m.edit else "react")
        rejected = shown.rejected
        if rejected is None and m.edit and about is not None and about.sender != m.sender:
            rejected = f"an edit by {m.sender} of a message {about.sender} wrote"
        if rejected is None and m.react and shown.text is not None and shown.text not in REACTIONS:
            rejected = "a reaction that is none of the seven"
        return dataclasses.replace(shown, about=about, rejected=rejected)

    async def _topic_changed(self, frame: TopicChanged, data: dict[str, Any]) -> None:
        shown: dict[str, Any] = {"text": frame.text}
        if frame.box is not None:
            checked = await self._trust.check(
                self._own.room_keys(frame.room),
                frame.box,
                room=frame.room,
                sender=frame.by,
                kind="topic",
                ts=frame.ts,
                message_id=None,
            )
            shown = {"text": checked.text or None, "decrypted": checked.text is not None}
            if checked.text == "":
                shown |= {"decrypted": True, "cleared": True}
            if checked.error is not None:
                shown["error"] = checked.error
            if checked.rejected is not None:
                shown["rejected"] = checked.rejected
        room = self.state.rooms.get(frame.room)
        if room is not None:
            error = shown.get("error")
            room.topic = shown["text"] or (f"[{error}]" if error else None)
        self._view.frame(frame, {**data, **shown})

    async def _delta(self, frame: Delta, data: dict[str, Any]) -> None:
        """A bot's sealed answer so far: checked like its message will be (no time of the
        node's on a delta: our clock stands in)."""
        assert frame.box is not None
        checked = await self._trust.check(
            self._own.room_keys(frame.room),
            frame.box,
            room=frame.room,
            sender=frame.sender,
            kind="message",
            ts=int(time.time() * 1000),
            message_id=None,
        )
        text = checked.text if checked.text is not None else f"[{checked.error}]"
        opened = Delta(room=frame.room, id=frame.id, sender=frame.sender, text=text)
        self._view.frame(opened, {k: v for k, v in data.items() if k != "box"} | {"text": text})

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _kind(me: bool, about: dict[str, str] | None) -> tuple[str, str | None]:
    """The kind a box says it is, and what it is about (sealed.kind_of, before sending)."""
    relation = next(iter((about or {}).items()), None)
    if relation is not None and relation[0] == "edit":
        return "edit", relation[1]
    if relation is not None and relation[0] == "react":
        return "reaction", relation[1]
    return ("action" if me else "message"), relation[1] if relation else None
