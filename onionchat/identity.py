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
from onionchat.bots import Bots
from onionchat.protocol import (
    KEY_BYTES,
    SEALED_BYTES,
    WRAPPED_BYTES,
    Code,
    Identity,
    IdentityFrame,
    Invitation,
    Invite,
    Invited,
    KeyOf,
    Keys,
    Notice,
    ProtocolError,
    PublicKey,
    Ready,
    encode,
)

if TYPE_CHECKING:
    from onionchat.hub import Connection
    from onionchat.node import Node
    from onionchat.store import Store


def _exactly(text: str, size: int, what: str) -> None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(Code.BAD_CIPHERTEXT, f"{what} is not valid base64") from None
    if len(raw) != size:
        raise ProtocolError(Code.BAD_CIPHERTEXT, f"{what} must be {size} bytes, got {len(raw)}")


def install(node: Node) -> None:
    """Identity keys and invitations: their frames, and what `ready` tells of them."""

    async def ready(conn: Connection, frame: Ready) -> None:
        frame.identity, frame.invitations = await for_ready(
            node.store, conn.session.user.id, conn.user_key
        )

    async def on_publish(conn: Connection, frame: Identity) -> None:
        await publish(node, conn, frame)

    async def on_key(conn: Connection, frame: KeyOf) -> None:
        await key_of(node, conn, frame)

    async def on_invite(conn: Connection, frame: Invite) -> None:
        await invite(node, conn, frame)

    node.ready_hooks.append(ready)
    node.handlers.update({Identity: on_publish, KeyOf: on_key, Invite: on_invite})


async def for_ready(
    store: Store, user_id: int, user_key: str
) -> tuple[Keys | None, list[Invitation]]:
    """What a new connection learns at once: its own keys and the invitations waiting."""
    found = await store.identity(user_key)
    keys = None
    if found is not None and found[1] is not None and found[2] is not None:
        keys = Keys(public=found[1], wrapped=found[2])
    invitations = [
        Invitation(room=room, sender=sender, sealed=sealed)
        for room, sender, sealed in await store.invitations(user_id)
    ]
    return keys, invitations


async def publish(node: Node, conn: Connection, frame: Identity) -> None:
    _exactly(frame.public, KEY_BYTES, "the public key")
    _exactly(frame.wrapped, WRAPPED_BYTES, "the wrapped secret key")
    await node.store.set_identity(conn.session.user.id, frame.public, frame.wrapped)
    conn.send(encode(IdentityFrame(public=frame.public, wrapped=frame.wrapped, ref=frame.ref)))


async def key_of(node: Node, conn: Connection, frame: KeyOf) -> None:
    found = await node.store.identity(names.key(frame.user))
    if found is None:
        raise ProtocolError(Code.UNKNOWN_USER, f"there is no user {frame.user!r}")
    name, public, _ = found
    if public is None:
        raise ProtocolError(Code.NO_KEY, f"{name} has no identity key yet")
    direct = names.direct_room(conn.user, name)
    conn.send(encode(PublicKey(user=name, public=public, direct=direct, ref=frame.ref)))


async def invite(node: Node, conn: Connection, frame: Invite) -> None:
    room = await node.room(frame.room)
    if room.name not in conn.rooms:
        raise ProtocolError(Code.NOT_JOINED, f"join #{room.name} first")
    if not room.protected:
        raise ProtocolError(
            Code.ROOM_MODE, f"#{room.name} is open: anyone may join it, no key to share"
        )
    _exactly(frame.sealed, SEALED_BYTES, "the sealed key")
    target = await node.store.user_by_key(names.key(frame.to))
    if target is None:
        raise ProtocolError(Code.UNKNOWN_USER, f"there is no user {frame.to!r}")
    await node.store.put_invitation(room.id, target.id, conn.user, frame.sealed)
    if isinstance(node.bots, Bots) and node.bots.invited(
        room, target.name, conn, frame.sealed, frame.ref
    ):
        return  # the bot's notice to the room answers the inviter too
    node.hub.to_user(
        names.key(target.name),
        encode(Invited(room=room.name, sender=conn.user, sealed=frame.sealed)),
    )
    conn.send(
        encode(Notice(text=f"invited {target.name} to #{room.name}", room=room.name, ref=frame.ref))
    )
