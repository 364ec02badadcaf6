"""Identity keys and sealed invitations: how a room key reaches a member the node cannot read
for.

Each account has an X25519 key pair made by its client. The node keeps the public half for
anyone to fetch, and the secret half only as the client wrapped it (a secretbox under the
wrapping key, which the client derives from the password and never sends), so any of the
account's devices can restore it and the node never can. A member invites another user into a
key-protected room by sealing the room key to that user's public key; the node stores the
sealed key and hands it to the invitee's clients, now and at every `ready`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from onionchat import names
from onionchat.authority import STAFF
from onionchat.bots import Bots
from onionchat.i18n import say
from onionchat.protocol import (
    INVITATION_CHARS,
    KEY_BYTES,
    MAC_BYTES,
    NONCE_BYTES,
    WRAPPED_BYTES,
    Code,
    Identity,
    IdentityFrame,
    Invitation,
    Invite,
    Invited,
    KeyOf,
    KeyringFrame,
    KeyringUpdate,
    Keys,
    ProtocolError,
    PublicKey,
    Ready,
    SealedKeyring,
    encode,
)

if TYPE_CHECKING:
    from onionchat.hub import Connection
    from onionchat.node import Node
    from onionchat.store import Room, Store, User


SMALLEST_INVITATION = KEY_BYTES + NONCE_BYTES + MAC_BYTES + KEY_BYTES  # a sealed bare key


def _decoded(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            Code.BAD_CIPHERTEXT, say("{what} is not valid base64", what=what)
        ) from None


def _exactly(text: str, size: int, what: str) -> None:
    raw = _decoded(text, what)
    if len(raw) != size:
        raise ProtocolError(
            Code.BAD_CIPHERTEXT,
            say("{what} must be {size} bytes, got {n}", what=what, size=size, n=len(raw)),
        )


def install(node: Node) -> None:
    """Identity keys and invitations: their frames, and what `ready` tells of them."""

    async def ready(conn: Connection, frame: Ready) -> None:
        frame.identity, frame.keyring, frame.invitations = await for_ready(
            node.store, conn.session.user.id, conn.user_key
        )
        for invitation in frame.invitations:
            invitation.staff = is_staff(node, invitation.sender, invitation.room)

    async def on_publish(conn: Connection, frame: Identity) -> None:
        await publish(node, conn, frame)

    async def on_key(conn: Connection, frame: KeyOf) -> None:
        await key_of(node, conn, frame)

    async def on_invite(conn: Connection, frame: Invite) -> None:
        await invite(node, conn, frame)

    async def on_keyring(conn: Connection, frame: KeyringUpdate) -> None:
        await keep_keyring(node, conn, frame)

    node.ready_hooks.append(ready)
    node.handlers.update(
        {Identity: on_publish, KeyOf: on_key, Invite: on_invite, KeyringUpdate: on_keyring}
    )


def is_staff(node: Node, user: str, room: str) -> bool:
    return node.authority.level(names.key(user), room) >= STAFF


async def for_ready(
    store: Store, user_id: int, user_key: str
) -> tuple[Keys | None, SealedKeyring | None, list[Invitation]]:
    """What a new connection learns at once: its own keys, its keyring, the invitations."""
    found = await store.identity(user_key)
    keys = None
    if found is not None and found.public is not None and found.wrapped is not None:
        keys = Keys(public=found.public, wrapped=found.wrapped, signing=found.signing)
    stored = await store.keyring(user_id)
    keyring = None if stored is None else SealedKeyring(sealed=stored[0], version=stored[1])
    invitations = [
        Invitation(room=room, sender=sender, sealed=sealed)
        for room, sender, sealed in await store.invitations(user_id)
    ]
    return keys, keyring, invitations


async def publish(node: Node, conn: Connection, frame: Identity) -> None:
    _exactly(frame.public, KEY_BYTES, "the public key")
    _exactly(frame.wrapped, WRAPPED_BYTES, "the wrapped secret key")
    if frame.signing is not None:
        _exactly(frame.signing, KEY_BYTES, "the signing key")
    await node.store.set_identity(conn.session.user.id, frame.public, frame.wrapped, frame.signing)
    answer = IdentityFrame(
        public=frame.public, wrapped=frame.wrapped, signing=frame.signing, ref=frame.ref
    )
    conn.send(encode(answer))


async def key_of(node: Node, conn: Connection, frame: KeyOf) -> None:
    """A user's public keys: of this node's users as their clients published them, of another
    node's (`name@node`) as that node vouched for them in its messages."""
    if "@" in frame.user:
        found = await node.store.peer_keys(frame.user)
    else:
        found = await node.store.identity(names.key(frame.user))
    if found is None:
        raise ProtocolError(
            Code.UNKNOWN_USER, say("there is no user {user}", user=f"{frame.user!r}")
        )
    if found.public is None:
        raise ProtocolError(Code.NO_KEY, say("{user} has no identity key yet", user=found.name))
    direct = names.direct_room(conn.user, found.name)
    answer = PublicKey(
        user=found.name, public=found.public, signing=found.signing, direct=direct, ref=frame.ref
    )
    conn.send(encode(answer))


async def keep_keyring(node: Node, conn: Connection, frame: KeyringUpdate) -> None:
    """Store the keyring when it was made from the latest one, and tell every device of the
    account; otherwise refuse (`conflict`) and send the latest, for the client to merge."""
    if len(_decoded(frame.sealed, "the keyring")) < NONCE_BYTES + 16 + 2:
        raise ProtocolError(Code.BAD_CIPHERTEXT, say("the keyring is too short to be a secretbox"))
    user_id = conn.session.user.id
    stored = await node.store.set_keyring(user_id, frame.sealed, frame.version)
    if stored is not None:
        latest = await node.store.keyring(user_id)
        if latest is not None:
            conn.send(encode(KeyringFrame(sealed=latest[0], version=latest[1])))
        raise ProtocolError(
            Code.CONFLICT,
            say(
                "the keyring changed on another device (version {stored}): merge and send "
                "version {next}",
                stored=stored,
                next=stored + 1,
            ),
        )
    changed = encode(KeyringFrame(sealed=frame.sealed, version=frame.version))
    node.hub.to_user(conn.user_key, changed, skip=conn)
    conn.send(encode(KeyringFrame(sealed=frame.sealed, version=frame.version, ref=frame.ref)))


async def invite(node: Node, conn: Connection, frame: Invite) -> None:
    room = await node.room(frame.room)
    if room.name not in conn.rooms:
        raise ProtocolError(Code.NOT_JOINED, say("join #{room} first", room=room.name))
    if not room.protected:
        raise ProtocolError(
            Code.ROOM_MODE,
            say("#{room} is open: anyone may join it, no key to share", room=room.name),
        )
    if len(_decoded(frame.sealed, "the invitation")) < SMALLEST_INVITATION:
        raise ProtocolError(
            Code.BAD_CIPHERTEXT,
            say(
                "the invitation is too short to hold a room key (at least "
                "{smallest_invitation} bytes; at most {invitation_chars} characters)",
                smallest_invitation=SMALLEST_INVITATION,
                invitation_chars=INVITATION_CHARS,
            ),
        )
    remote = node.elsewhere(frame.to) if "@" in frame.to else None
    if remote is not None and node.invite_elsewhere is not None:
        await node.invite_elsewhere(room, conn.user, remote, frame.sealed)
        text = say("invited {user} to #{room} (through their node)", user=remote, room=room.name)
        node.notice(conn, text, room.name, frame.ref)
        return
    target = await node.store.user_by_key(names.key(frame.to))
    if target is None:
        raise ProtocolError(Code.UNKNOWN_USER, say("there is no user {to}", to=f"{frame.to!r}"))
    await deliver_invitation(node, room, target, conn.user, frame.sealed, conn, frame.ref)


async def deliver_invitation(
    node: Node,
    room: Room,
    target: User,
    sender: str,
    sealed: str,
    conn: Connection | None = None,
    ref: str | None = None,
) -> None:
    """Keep an invitation for a user of this node (from here, or from another node) and tell
    them (or the bot it was for)."""
    await node.store.put_invitation(room.id, target.id, sender, sealed)
    invited = Invited(
        room=room.name, sender=sender, sealed=sealed, staff=is_staff(node, sender, room.name)
    )
    if conn is None:
        node.hub.to_user(names.key(target.name), encode(invited))
        return
    if isinstance(node.bots, Bots) and await node.bots.invited(
        room, target.name, conn, sealed, ref
    ):
        return  # the bot's notice to the room answers the inviter too
    node.hub.to_user(names.key(target.name), encode(invited))
    node.notice(
        conn, say("invited {target} to #{room}", target=target.name, room=room.name), room.name, ref
    )
