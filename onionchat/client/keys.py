"""What the CLI knows of keys, apart from the wire: the account's keyring as the node keeps it
(versions, conflicts, merging), the keys other users published, the body ids already shown,
and which invitation's key to take for a room one holds no key for.

The formats are onionchat.sealed's (byte for byte the browser's); nothing here seals or opens
a box of its own making.
"""

from __future__ import annotations

import collections
import dataclasses

from onionchat import crypto, sealed

REPLAY_IDS = 10_000  # body ids remembered per room


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
