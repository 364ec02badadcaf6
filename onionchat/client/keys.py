"""What the CLI knows of keys, below whom to trust: our own identity key (unwrapped from
`ready`, or made and published), the account's keyring and keeping it on the node (versions,
conflicts, merging, one update in flight), the keys other users published, the body ids
already shown, and which invitation's key to take for a room one holds no key for.

The formats are onionchat.sealed's (byte for byte the browser's); nothing here seals or opens
a box of its own making. Whom to trust and every box's check are trust.py's; what an
invitation brings, invitations.py's. Both build on this module, never the other way round.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import nacl.signing

from onionchat import crypto, sealed
from onionchat.client.outbox import Outbox
from onionchat.protocol import Code, KeyringFrame, Ready

REPLAY_IDS = 10_000  # body ids remembered per room
CANNOT_UNWRAP = (
    "cannot unwrap your identity key: invitations and sealed direct messages cannot be read here"
)
CANNOT_OPEN_KEYRING = (
    "cannot open your keyring (wrong password, or damaged): the room keys it holds cannot be "
    "used here, and it is left as it is on the node"
)
NO_SIGNER = "your identity key is not available here, so nothing can be signed"

Spawn = Callable[[Coroutine[Any, Any, Any]], None]
"""Runs work in the background, where the session's settle() waits for it."""


@dataclasses.dataclass(frozen=True)
class PeerKey:
    """A user's keys as the node answered them (`key`)."""

    user: str  # as the node spells the name
    direct: str  # our direct room with them, as the node names it
    public: bytes
    signing: bytes | None

    @property
    def pin(self) -> tuple[bytes, bytes] | None:
        return None if self.signing is None else (self.public, self.signing)


def fingerprint(pin: tuple[bytes, bytes]) -> str:
    return sealed.fingerprint(pin[0], pin[1])


class KeyringSync:
    """The keyring, and keeping it on the node: one update in flight at a time, made from the
    version last seen; another device's keyring merged in, whichever way it came."""

    def __init__(self, wrapping: bytes | None) -> None:
        self.keyring = sealed.Keyring()
        self._wrapping = wrapping
        self.version = 0
        # False when the node's keyring did not open here: it is never overwritten then.
        self.usable = wrapping is not None
        self.sending: str | None = None  # ref of the update in flight
        self.dirty = False  # changed since the update in flight was made

    def restore(self, stored: str | None, version: int) -> bool:
        """The keyring of `ready`, merged into ours; False when it does not open."""
        if stored is None or self._wrapping is None:
            return True
        try:
            theirs = sealed.Keyring.open(self._wrapping, stored)
        except crypto.CryptoError:
            self.usable = False
            return False
        before = _copy(theirs)
        theirs.merge(self.keyring)
        self.dirty = self.dirty or theirs != before
        self.keyring, self.version = theirs, version
        return True

    def pushed(self, stored: str, version: int) -> bool:
        """A keyring from the node not answering our update: another device's (or the latest,
        just before a `conflict`). While an update of ours is in flight its keys stay first
        (they are the newest choice); otherwise the other device's order wins. True when ours
        held something theirs did not, so it must go again."""
        if self._wrapping is None or not self.usable:
            return False
        try:
            theirs = sealed.Keyring.open(self._wrapping, stored)
        except crypto.CryptoError:
            return False
        before = _copy(theirs)
        if self.sending is not None:
            merged = self.keyring
            merged.merge(theirs)
        else:
            merged = theirs
            merged.merge(self.keyring)
        self.keyring, self.version = merged, max(self.version, version)
        if merged != before:
            self.dirty = True
        return self.dirty

    def update(self, ref: str) -> dict[str, object] | None:
        """The `keyring` frame to send now, or None (nothing new, one in flight, or a keyring
        that did not open here)."""
        if not self.usable or self._wrapping is None or self.sending is not None:
            return None
        if not self.dirty:
            return None
        self.dirty = False
        self.sending = ref
        sealed_ring = self.keyring.seal(self._wrapping)
        return {"type": "keyring", "sealed": sealed_ring, "version": self.version + 1, "ref": ref}

    def stored(self, version: int) -> None:
        self.sending = None
        self.version = version

    def conflict(self) -> None:
        """Refused: the latest came just before and was merged; ours goes again."""
        self.sending = None
        self.dirty = True


def _copy(keyring: sealed.Keyring) -> sealed.Keyring:
    return sealed.Keyring(
        rooms={room: list(keys) for room, keys in keyring.rooms.items()},
        peers=dict(keyring.peers),
    )


class Replays:
    """Body ids seen per room: a box shown once may not come again as another message."""

    def __init__(self) -> None:
        self._seen: dict[str, collections.OrderedDict[str, str]] = {}

    def replayed(self, room: str, body_id: str, message_id: str) -> bool:
        seen = self._seen.setdefault(room, collections.OrderedDict())
        first = seen.get(body_id)
        return first is not None and first != message_id

    def remember(self, room: str, body_id: str, message_id: str) -> None:
        seen = self._seen.setdefault(room, collections.OrderedDict())
        seen.setdefault(body_id, message_id)
        while len(seen) > REPLAY_IDS:
            seen.popitem(last=False)


def opens(key: bytes, box: str) -> bool:
    try:
        crypto.open_bytes(key, box)
    except crypto.CryptoError:
        return False
    return True


def choose(
    candidates: dict[str, bytes], boxes: list[str], complete: bool
) -> tuple[str | None, dict[str, str]]:
    """Which inviter's key to take for a room one holds no key for, given the room's message
    boxes (oldest first; `complete` when they go back to the room's start). A key that opens
    none is not taken. When several keys open some, the one that opens the oldest box wins,
    but only if the boxes reach back to the start: a member without the key can add boxes of
    a key of their own, never older ones. With no boxes at all, the one key offered is taken.
    Returns the winner, if any, and for each inviter not taken, why."""
    reasons: dict[str, str] = {}
    if not boxes:
        if len(set(candidates.values())) == 1:
            return next(iter(candidates)), {}
        for inviter in candidates:
            reasons[inviter] = "the room has no messages to tell the keys offered apart"
        return None, reasons
    first: dict[str, int] = {}
    for inviter, key in candidates.items():
        at = next((i for i, box in enumerate(boxes) if opens(key, box)), None)
        if at is None:
            reasons[inviter] = "it does not open its messages"
        else:
            first[inviter] = at
    if not first:
        return None, reasons
    if len({candidates[inviter] for inviter in first}) > 1 and not complete:
        for inviter in first:
            reasons[inviter] = "other members' keys open some of its messages too"
        return None, reasons
    winner = min(first, key=lambda inviter: first[inviter])
    for inviter in first:
        if inviter != winner and candidates[inviter] != candidates[winner]:
            reasons[inviter] = f"it opens only newer messages than {winner}'s key"
    return winner, reasons


class OwnKeys:
    """Our identity key pair and our keyring, as this session holds them. The pair is unwrapped
    from `ready` with the wrapping key (derived from the password, kept in memory only), or
    made here and published wrapped, so it never leaves unsealed; the keyring is stored back
    on the node whenever it changes, so every device of the account restores every room."""

    def __init__(
        self,
        wrapping: bytes | None,
        outbox: Outbox,
        spawn: Spawn,
        warn: Callable[[str], None],
    ) -> None:
        self._wrapping = wrapping
        self._outbox = outbox
        self._spawn = spawn
        self._warn = warn
        self.identity: tuple[bytes, bytes] | None = None  # (secret, public)
        self.signer: nacl.signing.SigningKey | None = None  # derived from the secret
        # Room keys (newest first) and the keys first seen of each peer: the keyring.
        self.sync = KeyringSync(wrapping)

    @property
    def keyring(self) -> sealed.Keyring:
        return self.sync.keyring

    def room_keys(self, room: str) -> list[bytes]:
        """The keys held for `room`, newest first: boxes are sealed with the first."""
        return self.sync.keyring.rooms.get(room, [])

    @property
    def pin(self) -> tuple[bytes, bytes] | None:
        """Our own keys as others pin them (box, signing); None without an identity here."""
        if self.identity is None or self.signer is None:
            return None
        return self.identity[1], bytes(self.signer.verify_key)

    def save(self) -> None:
        """Store the keyring on the node (one update at a time; a later change follows)."""
        self.sync.dirty = True
        self._spawn(self.push())

    async def push(self) -> None:
        frame = self.sync.update(self._outbox.ref())
        if frame is not None:
            await self._outbox.send(frame)

    def got_keyring(self, frame: KeyringFrame) -> None:
        """The node's keyring: the answer to our update, or another device's, merged in; ours
        goes again if it held something new."""
        if frame.ref is not None and frame.ref == self.sync.sending:
            self.sync.stored(frame.version)
        else:
            self.sync.pushed(frame.sealed, frame.version)
        if self.sync.dirty and self.sync.sending is None:
            self._spawn(self.push())

    def refused(self, ref: str, code: str) -> bool:
        """An error answering `ref`: if it refused our keyring update as a conflict, ours goes
        again and True says there is nothing more to it; any other refusal ends the update."""
        if ref != self.sync.sending:
            return False
        if code == Code.CONFLICT:
            self.sync.conflict()  # the latest came just before, merged: ours again
            self._spawn(self.push())
            return True
        self.sync.stored(self.sync.version)
        return False

    async def restore(self, ready: Ready) -> bool:
        """Open the account's keyring; unwrap its identity key, or make and publish one, and
        publish its signing key if the node lacks it. True when the identity key is here, so
        the invitations that waited can be opened."""
        if self._wrapping is None:
            return False
        stored = ready.keyring
        if stored is not None and not self.sync.restore(stored.sealed, stored.version):
            self._warn(CANNOT_OPEN_KEYRING)
        if ready.identity is not None:
            try:
                secret = crypto.unwrap_identity(self._wrapping, ready.identity.wrapped)
                public = base64.b64decode(ready.identity.public, validate=True)
                if crypto.public_of(secret) != public:
                    raise crypto.CryptoError("the identity key does not match its public key")
            except (crypto.CryptoError, binascii.Error, ValueError):
                # Never publish a new key over it: invitations sealed to it would be lost.
                self._warn(CANNOT_UNWRAP)
                return False
            self.identity = (secret, public)
            self.signer = sealed.signing_key(secret)
            signing = base64.b64encode(bytes(self.signer.verify_key)).decode()
            if ready.identity.signing != signing:
                await self._publish(public, ready.identity.wrapped, signing)
        else:
            secret, public = crypto.new_identity()
            self.identity = (secret, public)
            self.signer = sealed.signing_key(secret)
            signing = base64.b64encode(bytes(self.signer.verify_key)).decode()
            await self._publish(public, crypto.wrap_identity(self._wrapping, secret), signing)
        return True

    async def _publish(self, public: bytes, wrapped: str, signing: str) -> None:
        frame = {
            "type": "identity",
            "public": base64.b64encode(public).decode(),
            "wrapped": wrapped,
            "signing": signing,
        }
        await self._outbox.send(frame)

    def given(self, room: str, key: bytes, new: bool) -> str | None:
        """Keep a key given with --key (or made by /create, `new`) under the node's name of the
        room: the user's explicit choice, so it becomes the newest; what to say of it, if
        anything."""
        keys = self.room_keys(room)
        if new:
            self.keyring.add(room, key)
            self.save()
            return f"you made #{room}: key-protected, its key kept in your keyring; /invite NAME"
        if keys and keys[0] == key:
            return None
        others = [k for k in keys if k != key]
        self.keyring.rooms[room] = [key, *others]
        self.save()
        if not others:
            return None
        return (
            f"#{room} now uses the key given with --key; the {len(others)} other key(s) you "
            "hold for it stay, for older messages"
        )


K = TypeVar("K", str, tuple[str, str])
V = TypeVar("V")


def lookup(table: dict[K, V], wanted: K) -> tuple[K, V] | None:
    """An entry by a name as typed: exactly, else the one entry equal but for case (the
    node's spelling of a name need not be the user's)."""
    if wanted in table:
        return wanted, table[wanted]

    def fold(key: str | tuple[str, str]) -> str | tuple[str, ...]:
        return key.casefold() if isinstance(key, str) else tuple(k.casefold() for k in key)

    found = [(key, value) for key, value in table.items() if fold(key) == fold(wanted)]
    return found[0] if len(found) == 1 else None
