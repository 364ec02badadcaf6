"""One chat session on an authenticated WebSocket: typed lines become frames, and frames from
the node are opened, checked, tracked and handed to a view.

Room keys never leave this process: in a key-protected room, messages, actions and the topic
are sealed here (signed, and bound to room, sender, kind and time: onionchat.sealed) before
they go, and opened and checked here when they come, so the node relays ciphertext only and
no member can pass a box off as another's. A box that opens but fails a check is shown as
rejected, never as a message. Room keys and the keys first seen for each peer live in the
account's keyring, sealed under the password-derived wrapping key and kept on the node, so a
fresh CLI home restores every room.

Who is who is the node's to say: names are compared by the node's rules, so this client never
derives a name's key or a room's name itself. It keeps a room key under the name the node
answers in `joined`, knows itself by the name and key of `ready`, and a direct conversation by
the room the node names (in `key.direct` and in every direct message).

What is shown goes out in the order the node sent it: frames are handed to one worker that may
wait for a sender's published key before it shows a box, while the reader goes on reading.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

import msgspec
import nacl.signing
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from onionchat import PROTOCOL_VERSION, crypto, sealed
from onionchat.addressing import Addressing
from onionchat.client.errors import ChatError
from onionchat.client.keys import KeyringSync, PeerKey, Replays, choose, fingerprint
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

NO_KEY = "cannot decrypt: the room is key-protected and you hold no key for it"
NO_IDENTITY = "cannot decrypt: this client has no identity key"
CANNOT_UNWRAP = (
    "cannot unwrap your identity key: invitations and sealed direct messages cannot be read here"
)
CANNOT_OPEN_KEYRING = (
    "cannot open your keyring (wrong password, or damaged): the room keys it holds cannot be "
    "used here, and it is left as it is on the node"
)
NO_SIGNER = "your identity key is not available here, so nothing can be signed"
SEEN_IDS = 10_000  # message ids remembered, so a message is shown once
PROBE = 50  # messages asked for to see whether an invitation's key opens the room
CLIENT_HELP = """Commands of this client:
/invite USER       seal this key-protected room's key to USER (a bot too), signed by you
/uninvite BOT      make a bot forget this key-protected room's key
/create ROOM       make a new key-protected room with a new key (never over an existing one)
/usekey ROOM USER  take the key USER's invitation to ROOM brought, as the room's newest key
/whois [NAME]      NAME's key fingerprint and whether it is the one first seen (yours alone)
/trust NAME        accept NAME's new key after it changed
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


@dataclasses.dataclass(frozen=True)
class Checked:
    """What a box came to: its text, or why it is locked, or why it is rejected."""

    text: str | None = None
    locked: str | None = None
    rejected: str | None = None

    @property
    def error(self) -> str | None:
        return self.locked or (f"rejected: {self.rejected}" if self.rejected else None)


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
        self._leaving = False
        self._ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self._joins: dict[str, JoinRequest] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        # The identity key pair: unwrapped from `ready` with the wrapping key (derived from
        # the password, kept in memory only), or made here and published wrapped; the signing
        # key derived from it.
        self._wrapping = wrapping
        self._identity: tuple[bytes, bytes] | None = None  # (secret, public)
        self._signer: nacl.signing.SigningKey | None = None
        # Room keys (newest first) and the keys first seen of each peer: the keyring.
        self._sync = KeyringSync(wrapping)
        self._replays = Replays()
        # Keys asked of the node, by the name as asked (or as the node spells it), and by the
        # room of our direct conversation with that user (`key.direct`).
        self._peers: dict[str, asyncio.Future[PeerKey | None]] = {}
        self._direct_peers: dict[str, asyncio.Future[PeerKey | None]] = {}
        self._key_refs: dict[str, str] = {}  # ref of a `key` request -> the name asked
        self._key_errors: dict[str, str] = {}  # name asked -> why the node had no key
        self._changed: dict[str, tuple[bytes, bytes]] = {}  # user -> new keys, not trusted yet
        self._refreshed: set[str] = set()  # asked again after a signature failed
        # Invitations whose signature held: waiting for a look at the room's boxes, and the
        # ones not taken, which /usekey can take.
        self._candidates: dict[str, dict[str, bytes]] = {}
        self._offers: dict[tuple[str, str], bytes] = {}
        self._probes: dict[str, str] = {}  # ref of a `history` asked for that look -> room
        self._help_refs: set[str] = set()
        self._plain_warned: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
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
            "invite": self._cmd_invite,
            "usekey": self._cmd_usekey,
            "whois": self._cmd_whois,
            "trust": self._cmd_trust,
        }

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
            box = self._seal(room, "action" if me else "message", text, "write here")
            if box is None:
                return
            frame["box"] = box
            self._hint_unread(room, text, me)
        else:
            frame["text"] = text
        if me:
            frame["me"] = True
        await self._outbox.send(frame)

    def _seal(self, room: str, kind: str, text: str, what: str) -> str | None:
        """A signed box for `room` under its newest key; None (and said) when it cannot be."""
        keys = self._room_keys(room)
        if not keys:
            self._refuse(f"#{room} is key-protected: you need its key (--key) to {what}")
            return None
        if self._signer is None:
            self._refuse(f"cannot {what}: {NO_SIGNER}")
            return None
        return sealed.seal_body(
            keys[0], self._signer, room=room, sender=self.state.user, kind=kind, text=text
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

    async def _direct(self, to: str, text: str) -> bool:
        """Send a direct message sealed with the key we share with `to`; False when they have
        no identity key (the caller sends it as plain text, as the node's /msg does)."""
        if self._identity is None or self._signer is None:
            return False
        if self._max_text and len(text) > self._max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self._max_text})"
            )
            return True
        peer = await self._await_peer(self._peer(to))
        if peer is None:
            if to not in self._plain_warned:
                self._plain_warned.add(to)
                self._view.warn(
                    f"{to} has no identity key (or could not be asked): "
                    "direct messages to them go as plain text, readable by the node"
                )
            return False
        if peer.user in self._changed:
            self._refuse(self._changed_advice(peer.user, "write to them"))
            return True
        try:
            shared = crypto.shared_key(self._identity[0], self._box_public(peer))
        except crypto.CryptoError as exc:
            self._refuse(f"cannot seal a direct message to {to}: {exc}")
            return True
        box = sealed.seal_body(
            shared,
            self._signer,
            room=peer.direct,
            sender=self.state.user,
            kind="message",
            text=text,
        )
        await self._outbox.send({"type": "send", "to": to, "box": box})
        return True

    async def _cmd_invite(self, args: str) -> bool:
        """Seal the current room's newest key to a user (or a bot), signed by us."""
        room = self.state.current
        if not args or " " in args:
            self._refuse("usage: /invite USER")
            return True
        if room is None or not self.state.protected(room):
            self._refuse("/invite is for key-protected rooms: anyone may join an open one")
            return True
        keys = self._room_keys(room)
        if not keys:
            self._refuse(f"you hold no key for #{room}: there is none to share")
            return True
        if self._signer is None:
            self._refuse(f"cannot invite: {NO_SIGNER}")
            return True
        name = args.removeprefix("@")
        peer = await self._await_peer(self._peer(name))
        if peer is None:
            why = self._key_errors.get(name, "the node did not answer")
            self._refuse(f"cannot invite {name}: {why}")
            return True
        if peer.user in self._changed:
            self._refuse(self._changed_advice(peer.user, "invite them"))
            return True
        invitation = sealed.seal_invitation(
            keys[0],
            self._box_public(peer),
            self._signer,
            room=room,
            sender=self.state.user,
            to=peer.user,
        )
        frame = {"type": "invite", "room": room, "to": peer.user, "sealed": invitation}
        await self._outbox.send(frame)
        return True

    async def _cmd_usekey(self, args: str) -> bool:
        room, _, inviter = args.partition(" ")
        room, inviter = room.removeprefix("#"), inviter.strip()
        if not room or not inviter:
            self._refuse("usage: /usekey ROOM USER")
            return True
        found = _lookup(self._offers, (room, inviter))
        if found is None:
            self._refuse(f"no invitation of {inviter} to #{room} with a key you do not hold")
            return True
        (room, inviter), key = found
        del self._offers[(room, inviter)]
        older = len(self._room_keys(room))
        self._keyring().add(room, key)
        self._keyring_changed()
        kept = f" (the {older} older key(s) stay, for older messages)" if older else ""
        self._view.tell(
            "key",
            f"#{room} now uses the key of {inviter}'s invitation{kept}",
            {"room": room, "from": inviter, "outcome": "used"},
        )
        return True

    async def _cmd_whois(self, args: str) -> bool:
        name = args.removeprefix("@")
        if not name:
            if self._identity is None or self._signer is None:
                self._refuse("you have no identity key here: no fingerprint to show")
                return True
            own = (self._identity[1], bytes(self._signer.verify_key))
            mark = fingerprint(own)
            self._view.tell(
                "whois",
                f"you ({self.state.user}): {mark}",
                {"user": self.state.user, "fingerprint": mark, "self": True},
            )
            return True
        before = dict(self._keyring().peers)
        peer = await self._await_peer(self._peer(name, fresh=True))
        if peer is None:
            why = self._key_errors.get(name, "the node did not answer")
            self._refuse(f"no keys of {name}: {why}")
            return True
        if peer.pin is None:
            self._refuse(f"{peer.user} has published no signing key yet: no fingerprint")
            return True
        mark = fingerprint(peer.pin)
        pinned = self._keyring().peers.get(peer.user)
        fields: dict[str, Any] = {"user": peer.user, "fingerprint": mark}
        if peer.user in self._changed and pinned is not None:
            fields |= {"pinned": False, "known": fingerprint(pinned)}
            text = (
                f"{peer.user}: {mark} — CHANGED: the key first seen was {fingerprint(pinned)}; "
                f"/trust {peer.user} takes the new one"
            )
            self._view.tell("whois", text, fields, warn=True)
            return True
        first = peer.user not in before
        fields |= {"pinned": True, "first_seen": first}
        seen = "first seen now, kept" if first else "the key first seen"
        self._view.tell("whois", f"{peer.user}: {mark} ({seen})", fields)
        return True

    async def _cmd_trust(self, args: str) -> bool:
        name = args.removeprefix("@")
        if not name:
            self._refuse("usage: /trust NAME")
            return True
        found = _lookup(self._changed, name)
        if found is None:
            if _lookup(self._keyring().peers, name) is not None:
                self._view.note(f"{name}'s key has not changed: nothing new to trust")
            else:
                self._refuse(f"you know no key of {name} yet: /whois {name} first")
            return True
        user, pin = found
        del self._changed[user]
        self._keyring().peers[user] = pin
        self._refreshed.discard(user)
        self._keyring_changed()
        self._view.tell(
            "trust",
            f"you now trust {user}'s new key {fingerprint(pin)}",
            {"user": user, "fingerprint": fingerprint(pin)},
        )
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
        protected = key is not None or bool(self._room_keys(name)) or name in self._candidates
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

    # -- keys: ours, the keyring, other users' -----------------------------------------------

    def _keyring(self) -> sealed.Keyring:
        return self._sync.keyring

    def _room_keys(self, room: str) -> list[bytes]:
        return self._sync.keyring.rooms.get(room, [])

    def _keyring_changed(self) -> None:
        """Store the keyring on the node (one update at a time; a later change follows)."""
        self._sync.dirty = True
        self._spawn(self._push_keyring())

    async def _push_keyring(self) -> None:
        frame = self._sync.update(self._outbox.ref())
        if frame is not None:
            await self._outbox.send(frame)

    def _box_public(self, peer: PeerKey) -> bytes:
        """The X25519 key to seal to: the one first seen, whatever the node answers now."""
        pin = self._keyring().peers.get(peer.user)
        return pin[0] if pin is not None else peer.public

    def _changed_advice(self, user: str, what: str) -> str:
        return (
            f"{user}'s key changed since you first saw it: /whois {user} to compare, then "
            f"/trust {user} to {what} with the new key"
        )

    def _prefetch(self, senders: Iterable[str]) -> None:
        """Ask at once for every key that boxes about to be shown will need, rather than one
        round trip (over Tor, half a second or more) after another."""
        for sender in set(senders):
            if sender != self.state.user and sender not in self._keyring().peers:
                self._peer(sender)

    def _peer(self, name: str, fresh: bool = False) -> asyncio.Future[PeerKey | None]:
        """`name`'s keys (None if they have none), asked of the node once (or again)."""
        future = None if fresh else self._peers.get(name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._peers[name] = future
            ref = self._outbox.ref()
            self._key_refs[ref] = name
            self._spawn(self._outbox.send({"type": "key", "user": name, "ref": ref}))
        return future

    async def _await_peer(self, future: asyncio.Future[PeerKey | None]) -> PeerKey | None:
        try:
            async with asyncio.timeout(self._options.timeout):
                return await asyncio.shield(future)  # a timeout here leaves it to others
        except TimeoutError:
            return None

    def _got_key(self, frame: PublicKey) -> None:
        asked = self._key_refs.pop(frame.ref, None) if frame.ref is not None else None
        future = self._peers.get(asked) if asked is not None else None
        try:
            public = base64.b64decode(frame.public, validate=True)
            signing = (
                base64.b64decode(frame.signing, validate=True)
                if frame.signing is not None
                else None
            )
        except (binascii.Error, ValueError):
            public, signing = b"", None
        peer = None
        if len(public) == 32:
            peer = PeerKey(
                frame.user,
                frame.direct,
                public,
                signing if signing and len(signing) == 32 else None,
            )
            self._note_keys(peer)
        if future is None:
            future = asyncio.get_running_loop().create_future()
        if not future.done():
            future.set_result(peer)
        self._peers[frame.user] = future
        self._direct_peers[frame.direct] = future

    def _note_keys(self, peer: PeerKey) -> None:
        """Trust on first use: the keys first seen are kept in the keyring; keys that differ
        later are said, in every room shared with that user, and not used until /trust."""
        pin = peer.pin
        if pin is None or peer.user == self.state.user:
            return
        known = self._keyring().peers.get(peer.user)
        if known is None:
            self._keyring().peers[peer.user] = pin
            self._keyring_changed()
        elif known != pin:
            if self._changed.get(peer.user) != pin:
                self._changed[peer.user] = pin
                self._warn_changed(peer.user, known, pin)
        else:
            self._changed.pop(peer.user, None)

    def _warn_changed(self, user: str, old: tuple[bytes, bytes], new: tuple[bytes, bytes]) -> None:
        rooms = [room for room, members in self._members.items() if user in members]
        text = f"{user}'s key changed: {fingerprint(old)} → {fingerprint(new)}; /whois {user}"
        fields = {
            "user": user,
            "old": fingerprint(old),
            "new": fingerprint(new),
            "rooms": rooms,
        }
        if not rooms:
            self._view.tell("key_changed", text, fields, warn=True)
        for room in rooms:
            self._view.tell("key_changed", f"#{room}: {text}", fields | {"room": room}, warn=True)

    async def _signing_of(self, sender: str) -> tuple[bytes | None, str | None]:
        """The key `sender`'s boxes must verify with: ours, the one first seen (kept), or the
        one the node answers now (then kept); or why there is none."""
        if sender == self.state.user and self._signer is not None:
            return bytes(self._signer.verify_key), None
        pin = self._keyring().peers.get(sender)
        if pin is not None:
            return pin[1], None
        peer = await self._await_peer(self._peer(sender))
        if peer is None:
            why = self._key_errors.get(sender, "the node did not answer")
            return None, f"{sender}'s signing key cannot be had ({why})"
        if peer.signing is None:
            return None, f"{sender} has published no signing key"
        pin = self._keyring().peers.get(sender)
        return (pin[1] if pin is not None else peer.signing), None

    async def _check(
        self,
        keys: list[bytes],
        box: str,
        *,
        room: str,
        sender: str,
        kind: str,
        ts: int,
        message_id: str | None,
    ) -> Checked:
        """Open a box and check it against its envelope and its sender's signing key."""
        if not keys:
            return Checked(locked=NO_KEY)
        try:
            body = sealed.open_body(keys, box)
            body.check(room, sender, kind, ts)
        except crypto.CryptoError as exc:
            return Checked(locked=str(exc))
        except sealed.Rejected as exc:
            return Checked(rejected=str(exc))
        signing, why = await self._signing_of(sender)
        if signing is None:
            return Checked(rejected=why)
        if not body.verify(signing):
            return Checked(rejected=await self._bad_signature(body, sender))
        if message_id is not None:
            if self._replays.replayed(room, body.id, message_id):
                return Checked(rejected="sent before: a replay")
            self._replays.remember(room, body.id, message_id)
        return Checked(text=body.text)

    async def _bad_signature(self, body: sealed.Body, sender: str) -> str:
        """Why a signature failed: another writer's, or `sender`'s new key (said once)."""
        if sender != self.state.user and sender not in self._refreshed:
            self._refreshed.add(sender)
            await self._await_peer(self._peer(sender, fresh=True))
        new = self._changed.get(sender)
        if new is not None and body.verify(new[1]):
            return (
                f"it is signed with {sender}'s new key, not the one you know: /whois {sender}, "
                f"/trust {sender}"
            )
        return f"the signature is not {sender}'s"

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
                await self._restore_identity(frame)
                if not self._ready.done():
                    self._ready.set_result(frame)
            case IdentityFrame():
                pass  # our own key, published: nothing to show
            case KeyringFrame():
                self._got_keyring(frame)
            case PublicKey():
                self._got_key(frame)
            case Invited():
                self._later(self._invitation(frame.room, frame.sender, frame.sealed, data))
            case Error():
                await self._error(frame, data)
            case MessageFrame():
                self._later(self._show(frame))
            case Joined():
                self._joined(frame, data)
            case HistoryPage() if frame.ref is not None and frame.ref in self._probes:
                room = self._probes.pop(frame.ref)
                boxes = [m.box for m in frame.messages if m.box is not None and m.to is None]
                self._later(self._decide(room, boxes, complete=not frame.more))
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

    async def _restore_identity(self, ready: Ready) -> None:
        """Open the account's keyring; unwrap its identity key, or make and publish one, and
        publish its signing key if the node lacks it; then open the invitations that waited."""
        if self._wrapping is None:
            return
        stored = ready.keyring
        if stored is not None and not self._sync.restore(stored.sealed, stored.version):
            self._view.warn(CANNOT_OPEN_KEYRING)
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
            self._signer = sealed.signing_key(secret)
            signing = base64.b64encode(bytes(self._signer.verify_key)).decode()
            if ready.identity.signing != signing:
                await self._publish(public, ready.identity.wrapped, signing)
        else:
            secret, public = crypto.new_identity()
            self._identity = (secret, public)
            self._signer = sealed.signing_key(secret)
            signing = base64.b64encode(bytes(self._signer.verify_key)).decode()
            await self._publish(public, crypto.wrap_identity(self._wrapping, secret), signing)
        self._prefetch(invitation.sender for invitation in ready.invitations)
        for invitation in ready.invitations:
            self._later(self._invitation(invitation.room, invitation.sender, invitation.sealed))

    async def _publish(self, public: bytes, wrapped: str, signing: str) -> None:
        frame = {
            "type": "identity",
            "public": base64.b64encode(public).decode(),
            "wrapped": wrapped,
            "signing": signing,
        }
        await self._outbox.send(frame)

    def _got_keyring(self, frame: KeyringFrame) -> None:
        if frame.ref is not None and frame.ref == self._sync.sending:
            self._sync.stored(frame.version)
        else:
            self._sync.pushed(frame.sealed, frame.version)
        if self._sync.dirty and self._sync.sending is None:
            self._spawn(self._push_keyring())

    async def _invitation(
        self, room: str, sender: str, sealed_key: str, data: dict[str, Any] | None = None
    ) -> None:
        """Open and check an invitation; take its key only as the rules say (never over a key
        held, and only if it opens the room's messages). `data`: the live `invited` frame."""
        outcome, why = await self._open_invitation(room, sender, sealed_key)
        if data is not None:
            shown = {k: v for k, v in data.items() if k != "sealed"}
            shown["opened"] = why is None
            if why is not None:
                shown["error"] = why
            self._view.frame(None, shown)
        if outcome is None:
            return
        held = self._room_keys(room)
        fields = {"room": room, "from": sender}
        if outcome in held:
            if data is not None:
                self._view.tell(
                    "invitation",
                    f"{sender} invited you to #{room} (with the key you hold)",
                    fields | {"outcome": "held"},
                )
            return
        if held:
            self._offer_kept(room, sender, outcome)
            return
        self._candidates.setdefault(room, {})[sender] = outcome
        if room in self.state.rooms:
            ref = self._outbox.ref()
            self._probes[ref] = room
            frame = {"type": "history", "room": room, "limit": PROBE, "ref": ref}
            self._spawn(self._outbox.send(frame))
        else:
            self._view.tell(
                "invitation",
                f"{sender} invited you to #{room}: /join {room} (its key is taken if it opens "
                "the room's messages)",
                fields | {"outcome": "waiting"},
            )

    async def _open_invitation(
        self, room: str, sender: str, sealed_key: str
    ) -> tuple[bytes | None, str | None]:
        """(the room key, None) for an invitation that holds, else (None, why not; said)."""
        fields = {"room": room, "from": sender}
        if self._identity is None:
            why = f"cannot open {sender}'s invitation to #{room}: this client has no identity key"
            self._view.tell("invitation", why, fields | {"outcome": "locked"}, warn=True)
            return None, why
        try:
            invitation = sealed.open_invitation(sealed_key, self._identity[0])
            invitation.check(room, sender, self.state.user)
        except crypto.CryptoError as exc:
            why = f"cannot open {sender}'s invitation to #{room}: {exc}"
            self._view.tell("invitation", why, fields | {"outcome": "locked"}, warn=True)
            return None, why
        except sealed.Rejected as exc:
            return None, self._rejected_invitation(room, sender, str(exc))
        signing, reason = await self._signing_of(sender)
        if signing is None:
            return None, self._rejected_invitation(room, sender, reason or "no signing key")
        if not invitation.verify(signing):
            if sender not in self._refreshed:  # the one first seen may have changed
                self._refreshed.add(sender)
                await self._await_peer(self._peer(sender, fresh=True))
            new = self._changed.get(sender)
            reason = f"the signature is not {sender}'s"
            if new is not None and invitation.verify(new[1]):
                reason = f"it is signed with {sender}'s new key, not the one you know"
            return None, self._rejected_invitation(room, sender, reason)
        return invitation.key, None

    def _rejected_invitation(self, room: str, sender: str, reason: str) -> str:
        why = f"{sender}'s invitation to #{room} is rejected: {reason}; nothing of it is used"
        fields = {"room": room, "from": sender, "outcome": "rejected", "reason": reason}
        self._view.tell("invitation", why, fields, warn=True)
        return why

    def _offer_kept(self, room: str, sender: str, key: bytes) -> None:
        self._offers[(room, sender)] = key
        self._view.tell(
            "invitation",
            f"{sender} invited you to #{room} with a different key: you keep yours "
            f"(/usekey {room} {sender} adds theirs as the newest key)",
            {"room": room, "from": sender, "outcome": "kept"},
            warn=True,
        )

    async def _decide(self, room: str, boxes: list[str], complete: bool) -> None:
        """The invitations for a room we hold no key for, against its message boxes (oldest
        first; never the topic's, which any member may set): the key that opens them is
        taken (keys.choose); the others are said and left for /usekey."""
        candidates = self._candidates.pop(room, {})
        if not candidates:
            return
        held = self._room_keys(room)
        if held:  # a key came meanwhile (--key, another invitation, another device)
            for sender, key in candidates.items():
                if key not in held:
                    self._offer_kept(room, sender, key)
            return
        winner, reasons = choose(candidates, boxes, complete)
        if winner is not None:
            self._keyring().add(room, candidates[winner])
            self._keyring_changed()
            how = "its key opens the room's messages" if boxes else "the room has no messages yet"
            self._view.tell(
                "invitation",
                f"{winner} invited you to #{room}: {how}; you hold its key now",
                {"room": room, "from": winner, "outcome": "accepted"},
            )
        for sender, reason in reasons.items():
            self._offers[(room, sender)] = candidates[sender]
            if reason.startswith("it does not open"):
                text = f"{sender}'s key for #{room} does not open its messages: not used"
            else:
                text = f"{sender}'s key for #{room} is not used: {reason}"
            self._view.tell(
                "invitation",
                f"{text} (/usekey {room} {sender} takes it all the same)",
                {"room": room, "from": sender, "outcome": "not_used", "reason": reason},
                warn=True,
            )

    def _joined(self, frame: Joined, data: dict[str, Any]) -> None:
        info = frame.room
        request = self._joins.pop(frame.ref, None) if frame.ref is not None else None
        given = self._given_key(info.name, request) if request is not None else None
        self.state.rooms.pop(info.name, None)  # re-insert: the newest room is the last one
        self.state.rooms[info.name] = RoomState(info.protected, None)
        self._readers[info.name] = set(info.readers)
        self._members[info.name] = set(frame.members)
        self.state.current = info.name
        if request is not None and request.done is not None and not request.done.done():
            request.done.set_result(frame)
        self._prefetch(m.sender for m in frame.history if m.box is not None and m.to is None)
        self._later(self._show_joined(frame, data, given))

    def _given_key(self, room: str, request: JoinRequest) -> str | None:
        """Keep a key given with --key (or made by /create) under the node's name of the room:
        the user's explicit choice, so it becomes the newest; what to say of it, if anything."""
        key = request.key
        if key is None:
            return None
        keys = self._room_keys(room)
        if request.new:
            self._keyring().add(room, key)
            self._keyring_changed()
            return f"you made #{room}: key-protected, its key kept in your keyring; /invite NAME"
        if keys and keys[0] == key:
            return None
        others = [k for k in keys if k != key]
        self._keyring().rooms[room] = [key, *others]
        self._keyring_changed()
        if not others:
            return None
        return (
            f"#{room} now uses the key given with --key; the {len(others)} other key(s) you "
            "hold for it stay, for older messages"
        )

    async def _show_joined(self, frame: Joined, data: dict[str, Any], given: str | None) -> None:
        info = frame.room
        if info.protected and info.name in self._candidates:
            boxes = [m.box for m in frame.history if m.box is not None and m.to is None]
            await self._decide(info.name, boxes, complete=not frame.more)
        room_data = dict(data.get("room", {}))
        shown: str | None = info.topic
        if info.topic_box is not None:
            checked = await self._check(
                self._room_keys(info.name),
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
        if info.protected and not self._room_keys(info.name):
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
        asked = self._key_refs.pop(frame.ref, None) if frame.ref is not None else None
        if asked is not None:  # `key` for a user without one (no_key), or refused
            self._key_errors[asked] = frame.message
            future = self._peers.get(asked)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if frame.ref is not None and frame.ref == self._sync.sending:
            if frame.code == Code.CONFLICT:
                self._sync.conflict()  # the latest came just before, merged: ours again
                self._spawn(self._push_keyring())
                return
            self._sync.stored(self._sync.version)
        if frame.ref is not None and frame.ref in self._probes:
            self._probes.pop(frame.ref)
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

    async def _show(self, message: MessageFrame) -> None:
        """Show a message once, however often it comes (history, live, a second join)."""
        if message.id in self._seen:
            return
        self._seen[message.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if message.box is None:
            unsealed = message.to is not None or self.state.protected(message.room)
            self._view.message(Shown(message, message.text, unsealed=unsealed))
            return
        kind = "action" if message.me else "message"
        if message.to is not None:
            checked = await self._check_direct(message, message.box, kind)
        else:
            checked = await self._check(
                self._room_keys(message.room),
                message.box,
                room=message.room,
                sender=message.sender,
                kind=kind,
                ts=message.ts,
                message_id=message.id,
            )
        self._view.message(
            Shown(message, checked.text, checked.error, sealed=True, rejected=checked.rejected)
        )

    async def _check_direct(self, message: MessageFrame, box: str, kind: str) -> Checked:
        """A sealed direct message, opened with the key we share with the other user (whose
        keys are asked of the node once, and kept as first seen)."""
        if self._identity is None:
            return Checked(locked=NO_IDENTITY)
        # The node spells both names as they were registered, ours as in `ready`.
        other = message.to if message.sender == self.state.user else message.sender
        assert other is not None
        future = self._direct_peers.get(message.room) or self._peer(other)
        peer = await self._await_peer(future)
        if peer is None:
            return Checked(locked=f"cannot decrypt: no identity key of {other}")
        publics = [self._box_public(peer)]
        new = self._changed.get(peer.user)
        if new is not None:
            publics.append(new[0])
        try:
            keys = [crypto.shared_key(self._identity[0], public) for public in publics]
        except crypto.CryptoError as exc:
            return Checked(locked=str(exc))
        return await self._check(
            keys,
            box,
            room=message.room,
            sender=message.sender,
            kind=kind,
            ts=message.ts,
            message_id=message.id,
        )

    async def _topic_changed(self, frame: TopicChanged, data: dict[str, Any]) -> None:
        shown: dict[str, Any] = {"text": frame.text}
        if frame.box is not None:
            checked = await self._check(
                self._room_keys(frame.room),
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
        checked = await self._check(
            self._room_keys(frame.room),
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


K = TypeVar("K", str, tuple[str, str])
V = TypeVar("V")


def _lookup(table: dict[K, V], wanted: K) -> tuple[K, V] | None:
    """An entry by a name as typed: exactly, else the one entry equal but for case (the
    node's spelling of a name need not be the user's)."""
    if wanted in table:
        return wanted, table[wanted]

    def fold(key: str | tuple[str, str]) -> str | tuple[str, ...]:
        return key.casefold() if isinstance(key, str) else tuple(k.casefold() for k in key)

    found = [(key, value) for key, value in table.items() if fold(key) == fold(wanted)]
    return found[0] if len(found) == 1 else None
