"""What nodes say to each other through brokers: envelopes, signed by their node, sealed with
the network key, on topics that name no room.

A payload is `secretbox(network key, items)`, each item `signature ‖ body` after its length:
one item mostly, several messages of one room when they queue up. The body is canonical JSON
(msgspec's encoding of the struct: a body that does not encode back to itself is refused, so
a stored message can be passed on in a repair exactly as its node signed it). The signature
is the origin node's Ed25519 over "onionchat federation\\0" ‖ body. Brokers see ciphertext,
sizes and times only; topics carry the publishing node's name and a keyed hash of the room.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

import msgspec
import nacl.exceptions
import nacl.secret
import nacl.signing

from onionchat.protocol import FileRef, Message

SIGN_LABEL = b"onionchat federation\0"
SIGNATURE_BYTES = 64
#: the largest payload a node publishes or takes in; a bundle is packed under it
MAX_PAYLOAD = 256 * 1024
MAX_ITEMS = 256  # signed items in one publish


class Broken(Exception):
    """A payload to drop. The reason is one of a few fixed phrases (they are counted, so a
    hostile broker cannot grow the count's keys), logged without the content."""


class MessageBody(
    msgspec.Struct, tag="message", tag_field="kind", kw_only=True, frozen=True, omit_defaults=True
):
    """One message, as the node it was written on accepted it."""

    origin: str
    room: str
    protected: bool
    id: str
    ts: int
    sender: str  # as on its node: without `@origin`
    text: str | None = None
    box: str | None = None
    me: bool = False
    to: str | None = None  # a direct message's recipient, `name@node` (the room is then moot)
    reply: str | None = None  # the message it answers, edits or reacts to (at most one)
    edit: str | None = None
    react: str | None = None
    file: FileRef | None = None  # the file it carries (its bytes stay on the writer's node)
    # the sender's public keys as its node knows them (key-protected rooms: members on other
    # nodes check the box's signature with them)
    public: str | None = None
    signing: str | None = None


class Range(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Message ids `lo` <= id < `hi` of one room (a `lo` of `""`: from the first), told
    either by fingerprint and count, or one by one (`ids`, when few)."""

    lo: str
    hi: str
    count: int = 0
    fingerprint: str = ""
    ids: tuple[str, ...] | None = None
    last: bool = False  # an id list that needs no id list in answer, only the messages


class SyncBody(msgspec.Struct, tag="sync", tag_field="kind", kw_only=True, frozen=True):
    """A step of one room's reconciliation with one peer (`to`, or `*` for every peer)."""

    origin: str
    to: str
    room: str
    ts: int
    ranges: tuple[Range, ...]


class BundleBody(msgspec.Struct, tag="bundle", tag_field="kind", kw_only=True, frozen=True):
    """Messages another node lacks, each as its own node signed it (signature ‖ body)."""

    origin: str
    to: str
    ts: int
    items: tuple[bytes, ...]


class PresenceBody(msgspec.Struct, tag="presence", tag_field="kind", kw_only=True, frozen=True):
    """Which of its users a node has present in a room now (the whole list, each time)."""

    origin: str
    room: str
    members: tuple[str, ...]
    ts: int


class InviteBody(msgspec.Struct, tag="invite", tag_field="kind", kw_only=True, frozen=True):
    """An invitation into a key-protected room, sealed by the inviter's client to a user of
    another node (`to`, `name@node`), with the inviter's keys as its node knows them."""

    origin: str
    room: str
    sender: str
    to: str
    sealed: str
    ts: int
    public: str | None = None
    signing: str | None = None


class TopicBody(
    msgspec.Struct, tag="topic", tag_field="kind", kw_only=True, frozen=True, omit_defaults=True
):
    """A room's topic as a user of `origin` set it (neither text nor box: cleared); the
    latest `ts` wins on every node."""

    origin: str
    room: str
    protected: bool
    by: str
    ts: int
    text: str | None = None
    box: str | None = None


class OrderBody(
    msgspec.Struct, tag="order", tag_field="kind", kw_only=True, frozen=True, omit_defaults=True
):
    """An act of a room's staff on `origin`: a kick, ban, mute (until `until`, ms; None for
    good), their lifting, or a deletion of messages (`ids`). `by` is a user of `origin`;
    `target` is as `origin` names them (`bob` for its own user, `carol@south` for another's)."""

    origin: str
    room: str
    act: str
    by: str
    target: str
    ts: int
    until: int | None = None
    reason: str | None = None
    ids: tuple[str, ...] = ()
    mode: str | None = None  # a room mode set (`expiry 24`), with an empty `target`


class WantBody(msgspec.Struct, tag="want", tag_field="kind", kw_only=True, frozen=True):
    """A member of `origin` asks for a file of a message written on `to`, in `room`."""

    origin: str
    to: str
    room: str
    file: str
    ts: int


class ChunkBody(msgspec.Struct, tag="chunk", tag_field="kind", kw_only=True, frozen=True):
    """One piece of a file `to` asked for, as its writer uploaded it: `index` of `count`,
    of a file of `size` bytes."""

    origin: str
    to: str
    room: str
    file: str
    index: int
    count: int
    size: int
    data: bytes


Body = (
    MessageBody
    | SyncBody
    | BundleBody
    | PresenceBody
    | InviteBody
    | TopicBody
    | OrderBody
    | WantBody
    | ChunkBody
)
_decoder = msgspec.json.Decoder(Body)
_encoder = msgspec.json.Encoder()


def encode(body: Body) -> bytes:
    """The canonical body."""
    return _encoder.encode(body)


def signed(body: Body, key: nacl.signing.SigningKey) -> bytes:
    """signature ‖ canonical body."""
    data = _encoder.encode(body)
    return key.sign(SIGN_LABEL + data).signature + data


def seal(items: Sequence[bytes], network_key: bytes) -> bytes:
    """One publish: signed items, each after its length (4 bytes, big-endian), sealed with
    the network key. Several messages of one room go in one publish when they queue up, so
    that a broker's per-publish cost is shared (each item keeps its own signature)."""
    packed = b"".join(len(item).to_bytes(4, "big") + item for item in items)
    return bytes(nacl.secret.SecretBox(network_key).encrypt(packed))


def unseal(payload: bytes, network_key: bytes) -> list[bytes]:
    if len(payload) > MAX_PAYLOAD:
        raise Broken("oversized")
    try:
        packed = nacl.secret.SecretBox(network_key).decrypt(payload)
    except nacl.exceptions.CryptoError:
        raise Broken("not sealed with the network key") from None
    items: list[bytes] = []
    at = 0
    while at < len(packed):
        size = int.from_bytes(packed[at : at + 4], "big")
        at += 4
        if at + size > len(packed) or len(items) == MAX_ITEMS:
            raise Broken("malformed")
        items.append(packed[at : at + size])
        at += size
    if not items:
        raise Broken("malformed")
    return items


def decode(item: bytes) -> Body:
    """The body of a signed item, not yet checked (`check` does)."""
    if len(item) <= SIGNATURE_BYTES:
        raise Broken("too short")
    try:
        body: Body = _decoder.decode(item[SIGNATURE_BYTES:])
    except msgspec.DecodeError:
        raise Broken("malformed") from None
    return body


def check(item: bytes, body: Body, peers: dict[str, bytes]) -> None:
    """Whether its origin is a trusted peer, which signed it, canonically."""
    key = peers.get(body.origin)
    if key is None:
        raise Broken("from a node that is not a trusted peer")
    signature, data = item[:SIGNATURE_BYTES], item[SIGNATURE_BYTES:]
    try:
        nacl.signing.VerifyKey(key).verify(SIGN_LABEL + data, signature)
    except nacl.exceptions.BadSignatureError:
        raise Broken("bad signature") from None
    if _encoder.encode(body) != data:
        raise Broken("not canonical")


def verify(item: bytes, peers: dict[str, bytes]) -> Body:
    """The body of a signed item, if its origin is a trusted peer and signed it."""
    body = decode(item)
    check(item, body, peers)
    return body


def message_body(
    origin: str,
    protected: bool,
    message: Message,
    sender: str | None = None,
    keys: tuple[str | None, str | None] = (None, None),
) -> MessageBody:
    return MessageBody(
        origin=origin,
        room=message.room,
        protected=protected,
        id=message.id,
        ts=message.ts,
        sender=message.sender if sender is None else sender,
        text=message.text,
        box=message.box,
        me=message.me,
        to=message.to,
        reply=message.reply,
        edit=message.edit,
        react=message.react,
        file=message.file,
        public=keys[0],
        signing=keys[1],
    )


def room_tag(network_key: bytes, room: str) -> str:
    """The room's name in topics: a keyed hash, so a broker cannot test guesses."""
    return hmac.new(network_key, b"room\0" + room.encode(), hashlib.sha256).hexdigest()[:32]


def fingerprint(ids: list[str]) -> str:
    digest = hashlib.sha256()
    for id_ in ids:
        digest.update(id_.encode())
    return digest.hexdigest()[:32]


Kind = Literal["m", "s", "d", "p", "t", "o"]


def topic(network: str, origin: str, kind: Kind, tag: str = "") -> str:
    """`NETWORK/NODE/m/ROOMTAG` for messages, `NETWORK/NODE/d/PEER` for direct messages to
    PEER's users (only PEER subscribes), `NETWORK/NODE/p/ROOMTAG` for who is present and
    `NETWORK/NODE/t/ROOMTAG` for the topic set there (both retained),
    `NETWORK/NODE/o/ROOMTAG/TAG` for what the room's staff did there (retained: the latest
    sanction of each user, the latest setting of each mode, every deletion),
    `NETWORK/NODE/s` for repairs: a node publishes only under its own name (a broker's ACL can
    hold it to that)."""
    return f"{network}/{origin}/{kind}/{tag}" if tag else f"{network}/{origin}/{kind}"
