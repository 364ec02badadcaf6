"""Whom the CLI believes: other users' keys, asked of the node and pinned on first sight (trust
on first use), a changed key said in every room shared with its owner and not used until
/trust takes it, fingerprints for /whois; and every signed box opened and checked here, against
its envelope and the signing key its sender is known by.

Who is who is the node's to say (names compared by its rules), so keys are kept under the name
the node answers, and a direct conversation by the room the node names (`key.direct`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from onionchat import crypto, sealed
from onionchat.client.keys import OwnKeys, PeerKey, Replays, Spawn, fingerprint, lookup
from onionchat.client.outbox import Outbox
from onionchat.protocol import FileRef, MessageFrame, PublicKey

NO_KEY = "cannot decrypt: the room is key-protected and you hold no key for it"
NO_IDENTITY = "cannot decrypt: this client has no identity key"


class Teller(Protocol):
    """What the key modules say: the session's view, as far as keys need it."""

    def note(self, text: str) -> None: ...
    def tell(self, kind: str, text: str, fields: dict[str, Any], warn: bool = False) -> None:
        """Something about keys a script must see too: `kind` is its JSON line's type."""


class Who(Protocol):
    """Who we are, as the node named us in `ready`: never derived here."""

    @property
    def user(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Checked:
    """What a box came to: its text, or why it is locked, or why it is rejected."""

    text: str | None = None
    locked: str | None = None
    rejected: str | None = None
    file: dict[str, Any] | None = None  # the file it carries: id, name, type, size, key

    @property
    def error(self) -> str | None:
        return self.locked or (f"rejected: {self.rejected}" if self.rejected else None)


class Trust:
    """Other users' keys and what they vouch for: one place asks for them, pins them, holds a
    change back, and checks every box, so no member can pass a box off as another's."""

    def __init__(
        self,
        own: OwnKeys,
        outbox: Outbox,
        spawn: Spawn,
        view: Teller,
        refuse: Callable[[str], None],
        me: Who,
        rooms_with: Callable[[str], list[str]],
        timeout: float,
    ) -> None:
        self._own = own
        self._outbox = outbox
        self._spawn = spawn
        self._view = view
        self._refuse = refuse
        self._me = me
        self._rooms_with = rooms_with  # the rooms a user is in with us, to warn there
        self._timeout = timeout
        self._replays = Replays()
        # Keys asked of the node, by the name as asked (or as the node spells it), and by the
        # room of our direct conversation with that user (`key.direct`).
        self._peers: dict[str, asyncio.Future[PeerKey | None]] = {}
        self._direct_peers: dict[str, asyncio.Future[PeerKey | None]] = {}
        self._key_refs: dict[str, str] = {}  # ref of a `key` request -> the name asked
        self._key_errors: dict[str, str] = {}  # name asked -> why the node had no key
        self._changed: dict[str, tuple[bytes, bytes]] = {}  # user -> new keys, not trusted yet
        self._refreshed: set[str] = set()  # asked again after a signature failed

    # -- peers' keys, from the node -----------------------------------------------------------

    def peer(self, name: str, fresh: bool = False) -> asyncio.Future[PeerKey | None]:
        """`name`'s keys (None if they have none), asked of the node once (or again)."""
        future = None if fresh else self._peers.get(name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._peers[name] = future
            ref = self._outbox.ref()
            self._key_refs[ref] = name
            self._spawn(self._outbox.send({"type": "key", "user": name, "ref": ref}))
        return future

    async def await_peer(self, future: asyncio.Future[PeerKey | None]) -> PeerKey | None:
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(future)  # a timeout here leaves it to others
        except TimeoutError:
            return None

    def why_not(self, name: str) -> str:
        """Why the node gave no keys of `name`, as it said."""
        return self._key_errors.get(name, "the node did not answer")

    def prefetch(self, senders: Iterable[str]) -> None:
        """Ask at once for every key that boxes about to be shown will need, rather than one
        round trip (over Tor, half a second or more) after another."""
        for sender in set(senders):
            if sender != self._me.user and sender not in self._own.keyring.peers:
                self.peer(sender)

    def got_key(self, frame: PublicKey) -> None:
        """A `key` answer: the keys are noted (pinned, or a change said) and handed to whoever
        waits for them, under every name they may be looked up by."""
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

    def refused(self, ref: str, message: str) -> bool:
        """An error answering `ref`: True when it answered a `key` request (a user without a
        key, or refused), which then has no keys and keeps the node's reason."""
        asked = self._key_refs.pop(ref, None)
        if asked is None:
            return False
        self._key_errors[asked] = message
        future = self._peers.get(asked)
        if future is not None and not future.done():
            future.set_result(None)
        return True

    # -- pins and changes ---------------------------------------------------------------------

    def _note_keys(self, peer: PeerKey) -> None:
        """Trust on first use: the keys first seen are kept in the keyring; keys that differ
        later are said, in every room shared with that user, and not used until /trust."""
        pin = peer.pin
        if pin is None or peer.user == self._me.user:
            return
        known = self._own.keyring.peers.get(peer.user)
        if known is None:
            self._own.keyring.peers[peer.user] = pin
            self._own.save()
        elif known != pin:
            if self._changed.get(peer.user) != pin:
                self._changed[peer.user] = pin
                self._warn_changed(peer.user, known, pin)
        else:
            self._changed.pop(peer.user, None)

    def _warn_changed(self, user: str, old: tuple[bytes, bytes], new: tuple[bytes, bytes]) -> None:
        rooms = self._rooms_with(user)
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

    def new_key(self, user: str) -> tuple[bytes, bytes] | None:
        """`user`'s keys that differ from the ones first seen, not trusted yet."""
        return self._changed.get(user)

    def advice(self, user: str, what: str) -> str:
        """What to do before one may `what` after `user`'s key changed."""
        return (
            f"{user}'s key changed since you first saw it: /whois {user} to compare, then "
            f"/trust {user} to {what} with the new key"
        )

    def box_public(self, peer: PeerKey) -> bytes:
        """The X25519 key to seal to: the one first seen, whatever the node answers now."""
        pin = self._own.keyring.peers.get(peer.user)
        return pin[0] if pin is not None else peer.public

    async def refresh(self, sender: str) -> None:
        """Ask for `sender`'s keys again after a signature failed (once): a change comes out."""
        if sender not in self._refreshed:
            self._refreshed.add(sender)
            await self.await_peer(self.peer(sender, fresh=True))

    async def signing_of(self, sender: str) -> tuple[bytes | None, str | None]:
        """The key `sender`'s boxes must verify with: ours, the one first seen (kept), or the
        one the node answers now (then kept); or why there is none."""
        if sender == self._me.user and self._own.signer is not None:
            return bytes(self._own.signer.verify_key), None
        pin = self._own.keyring.peers.get(sender)
        if pin is not None:
            return pin[1], None
        peer = await self.await_peer(self.peer(sender))
        if peer is None:
            return None, f"{sender}'s signing key cannot be had ({self.why_not(sender)})"
        if peer.signing is None:
            return None, f"{sender} has published no signing key"
        pin = self._own.keyring.peers.get(sender)
        return (pin[1] if pin is not None else peer.signing), None

    # -- commands -----------------------------------------------------------------------------

    async def cmd_whois(self, args: str) -> bool:
        """/whois [NAME]: a fingerprint to compare out of band, and whether it is the pinned one."""
        name = args.removeprefix("@")
        if not name:
            own = self._own.pin
            if own is None:
                self._refuse("you have no identity key here: no fingerprint to show")
                return True
            mark = fingerprint(own)
            user = self._me.user
            self._view.tell(
                "whois",
                f"you ({user}): {mark}",
                {"user": user, "fingerprint": mark, "self": True},
            )
            return True
        before = dict(self._own.keyring.peers)
        peer = await self.await_peer(self.peer(name, fresh=True))
        if peer is None:
            self._refuse(f"no keys of {name}: {self.why_not(name)}")
            return True
        if peer.pin is None:
            self._refuse(f"{peer.user} has published no signing key yet: no fingerprint")
            return True
        mark = fingerprint(peer.pin)
        pinned = self._own.keyring.peers.get(peer.user)
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

    async def cmd_trust(self, args: str) -> bool:
        """/trust NAME: take NAME's changed key as the one they are known by from now on."""
        name = args.removeprefix("@")
        if not name:
            self._refuse("usage: /trust NAME")
            return True
        found = lookup(self._changed, name)
        if found is None:
            if lookup(self._own.keyring.peers, name) is not None:
                self._view.note(f"{name}'s key has not changed: nothing new to trust")
            else:
                self._refuse(f"you know no key of {name} yet: /whois {name} first")
            return True
        user, pin = found
        del self._changed[user]
        self._own.keyring.peers[user] = pin
        self._refreshed.discard(user)
        self._own.save()
        self._view.tell(
            "trust",
            f"you now trust {user}'s new key {fingerprint(pin)}",
            {"user": user, "fingerprint": fingerprint(pin)},
        )
        return True

    # -- boxes --------------------------------------------------------------------------------

    async def check(
        self,
        keys: list[bytes],
        box: str,
        *,
        room: str,
        sender: str,
        kind: str,
        ts: int,
        message_id: str | None,
        re: str | None = None,
        file: FileRef | None = None,
    ) -> Checked:
        """Open a box and check it against its envelope (`re`: the message it is about) and
        its sender's signing key."""
        if not keys:
            return Checked(locked=NO_KEY)
        try:
            body = sealed.open_body(keys, box)
            body.check(room, sender, kind, ts, re)
            body.check_file(file)
        except crypto.CryptoError as exc:
            return Checked(locked=str(exc))
        except sealed.Rejected as exc:
            return Checked(rejected=str(exc))
        signing, why = await self.signing_of(sender)
        if signing is None:
            return Checked(rejected=why)
        if not body.verify(signing):
            return Checked(rejected=await self._bad_signature(body, sender))
        if message_id is not None:
            if self._replays.replayed(room, body.id, message_id):
                return Checked(rejected="sent before: a replay")
            self._replays.remember(room, body.id, message_id)
        return Checked(text=body.text, file=body.file)

    async def _bad_signature(self, body: sealed.Body, sender: str) -> str:
        """Why a signature failed: another writer's, or `sender`'s new key (said once)."""
        if sender != self._me.user:
            await self.refresh(sender)
        new = self._changed.get(sender)
        if new is not None and body.verify(new[1]):
            return (
                f"it is signed with {sender}'s new key, not the one you know: /whois {sender}, "
                f"/trust {sender}"
            )
        return f"the signature is not {sender}'s"

    async def check_direct(
        self, message: MessageFrame, box: str, kind: str, re: str | None = None
    ) -> Checked:
        """A sealed direct message, opened with the key we share with the other user (whose
        keys are asked of the node once, and kept as first seen)."""
        if self._own.identity is None:
            return Checked(locked=NO_IDENTITY)
        # The node spells both names as they were registered, ours as in `ready`.
        other = message.to if message.sender == self._me.user else message.sender
        assert other is not None
        future = self._direct_peers.get(message.room) or self.peer(other)
        peer = await self.await_peer(future)
        if peer is None:
            return Checked(locked=f"cannot decrypt: no identity key of {other}")
        publics = [self.box_public(peer)]
        new = self._changed.get(peer.user)
        if new is not None:
            publics.append(new[0])
        try:
            keys = [crypto.shared_key(self._own.identity[0], public) for public in publics]
        except crypto.CryptoError as exc:
            return Checked(locked=str(exc))
        return await self.check(
            keys,
            box,
            room=message.room,
            sender=message.sender,
            kind=kind,
            ts=message.ts,
            message_id=message.id,
            re=re,
            file=message.file,
        )
