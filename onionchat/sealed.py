"""What a key-protected room's boxes, invitations and keyrings hold: signed, and bound to what
a client shows, so that a box cannot be replayed, moved, re-attributed or re-kinded, and a
room key cannot be slipped to a member by anyone but a signed inviter.

Byte-compatible with web/js/sealed.js; `docs/protocol.md` §8 gives the formats and test vectors.

- Signing key: Ed25519 from the seed SHA-512("onionchat sign\\0" || identity secret)[:32], so
  the one wrapped identity secret restores both keys on every device.
- A sealed body: secretbox(signature (64) || body), body the UTF-8 JSON of
  {v, room, sender, kind, id, ts, text} (and `re`, the message a reply, an edit or a reaction
  is about), signature Ed25519 over "onionchat box\\0" || body.
- An invitation: crypto_box to the invitee of signature || body, body the JSON of
  {v, kind: "invite", room, from, to, key, ts}, signature over "onionchat invite\\0" || body.
- A keyring: secretbox under the wrapping key of the JSON of {v, rooms, peers}.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import secrets
import time
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing

from onionchat import crypto

VERSION = 2
SIGN_LABEL = b"onionchat sign\0"
BOX_DOMAIN = b"onionchat box\0"
INVITE_DOMAIN = b"onionchat invite\0"
FINGERPRINT_LABEL = b"onionchat fingerprint\0"
SIGNATURE_BYTES = 64
KINDS = ("message", "action", "topic", "edit", "reaction")
SKEW_MS = 10 * 60 * 1000  # a body's time may differ this much from the node's stamp
ID_BYTES = 12


def written_by(signed: str, shown: str) -> bool:
    """Whether a body signed as from `signed` may be shown as from `shown`: the same name, or,
    on another node than the writer's, `signed@node` (a name never holds an @ of its own).
    The signature is checked with the key the reader's node gives for `shown`."""
    if shown == signed:
        return True
    name, at, node = shown.rpartition("@")
    return bool(at and node) and name == signed and "@" not in signed


class Rejected(Exception):
    """A box or an invitation that opened but must not be shown as what it claims."""


def signing_key(identity_secret: bytes) -> nacl.signing.SigningKey:
    seed = hashlib.sha512(SIGN_LABEL + identity_secret).digest()[:32]
    return nacl.signing.SigningKey(seed)


def signing_public(identity_secret: bytes) -> bytes:
    return bytes(signing_key(identity_secret).verify_key)


def fingerprint(box_public: bytes, signing: bytes) -> str:
    """Eight groups of four hex digits, the same in every client: what two people compare."""
    digest = hashlib.sha512(FINGERPRINT_LABEL + box_public + signing).digest()[:16]
    hexed = digest.hex().upper()
    return " ".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _verify(domain: bytes, signed: bytes, public: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public).verify(
            domain + signed[SIGNATURE_BYTES:], signed[:SIGNATURE_BYTES]
        )
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def new_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(ID_BYTES)).decode()


@dataclasses.dataclass(frozen=True)
class Body:
    """What a sealed box says: who wrote what, where, as what, and when."""

    room: str
    sender: str
    kind: str
    id: str
    ts: int
    text: str
    signed: bytes  # signature || body, as it was sealed
    re: str | None = None  # the message a reply, an edit or a reaction is about
    file: dict[str, Any] | None = None  # the file it carries: id, name, type, size, key

    def verify(self, signing: bytes) -> bool:
        return _verify(BOX_DOMAIN, self.signed, signing)

    def check(self, room: str, sender: str, kind: str, ts: int, re: str | None = None) -> None:
        """Raise Rejected unless the body is what the envelope shows it as."""
        if self.room != room:
            raise Rejected(f"it was written for #{self.room}, not here")
        if not written_by(self.sender, sender):
            raise Rejected(f"it was written by {self.sender}, not by {sender}")
        if self.kind != kind:
            raise Rejected(f"it was written as a {self.kind}, not as a {kind}")
        if abs(self.ts - ts) > SKEW_MS:
            raise Rejected("it was written at another time: an old box sent again")
        if self.re != re:
            raise Rejected("it was written about another message")

    def check_file(self, file: Any) -> None:
        """Raise Rejected unless the body names the file the envelope carries (or neither
        has one)."""
        mine = self.file
        if (mine is None) != (file is None):
            raise Rejected("it was written with another file")
        if mine is not None and (mine.get("id") != file.id or mine.get("size") != file.size):
            raise Rejected("it was written with another file")


def kind_of(message: Any) -> tuple[str, str | None]:
    """The kind a message's box must say it is, and the message it must be about, from its
    envelope (a `Message` or a message frame)."""
    if message.edit:
        return "edit", message.edit
    if message.react:
        return "reaction", message.react
    return ("action" if message.me else "message"), message.reply


def seal_body(
    key: bytes,
    signer: nacl.signing.SigningKey,
    *,
    room: str,
    sender: str,
    kind: str,
    text: str,
    id: str | None = None,
    ts: int | None = None,
    nonce: bytes | None = None,
    re: str | None = None,
    file: dict[str, Any] | None = None,
) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    fields: dict[str, Any] = {
        "v": VERSION,
        "room": room,
        "sender": sender,
        "kind": kind,
        "id": id or new_id(),
        "ts": int(time.time() * 1000) if ts is None else ts,
        "text": text,
    }
    if re is not None:
        fields["re"] = re
    if file is not None:
        fields["file"] = file
    body = _json(fields)
    signed = signer.sign(BOX_DOMAIN + body).signature + body
    return _secretbox(key, signed, nonce)


def open_body(keys: list[bytes], box: str) -> Body:
    """The body of a box under the first of `keys` that opens it. CryptoError when none does,
    Rejected when it opens but is not a signed body."""
    signed = None
    for key in keys:
        try:
            signed = crypto.open_bytes(key, box)
            break
        except crypto.CryptoError:
            continue
    if signed is None:
        raise crypto.CryptoError("cannot decrypt: no key of this room opens it")
    data = _parse(signed)
    fields = {"room": str, "sender": str, "kind": str, "id": str, "ts": int, "text": str}
    if data.get("v") != VERSION or not all(
        isinstance(data.get(k), t) and not isinstance(data.get(k), bool) for k, t in fields.items()
    ):
        raise Rejected("it is not a signed box (an old client, or damaged)")
    if data["kind"] not in KINDS:
        raise Rejected(f"it says it is a {data['kind']!r}")
    re, file = data.get("re"), data.get("file")
    if (re is not None and not isinstance(re, str)) or (file is not None and not _a_file(file)):
        raise Rejected("it is not a signed box (an old client, or damaged)")
    return Body(**{k: data[k] for k in fields}, signed=signed, re=re, file=file)


def _a_file(file: Any) -> bool:
    strings = ("id", "name", "type", "key")
    return (
        isinstance(file, dict)
        and all(isinstance(file.get(k), str) for k in strings)
        and isinstance(file.get("size"), int)
    )


def _parse(signed: bytes) -> dict[str, Any]:
    """The JSON object after the signature (nothing after it is no JSON either)."""
    try:
        data = json.loads(signed[SIGNATURE_BYTES:].decode())
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise Rejected("it is not a signed box (an old client, or damaged)")
    return data


def _secretbox(key: bytes, plain: bytes, nonce: bytes | None) -> str:
    box = nacl.secret.SecretBox(key)
    sealed = box.encrypt(plain) if nonce is None else box.encrypt(plain, nonce)
    return base64.b64encode(bytes(sealed)).decode()


# -- invitations --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Invitation:
    """A room key as its inviter signed it, for the one it was sealed to."""

    room: str
    sender: str
    to: str
    key: bytes
    ts: int
    signed: bytes

    def verify(self, signing: bytes) -> bool:
        return _verify(INVITE_DOMAIN, self.signed, signing)

    def check(self, room: str, sender: str, me: str) -> None:
        """Names as on one node, or across nodes: the inviter signs as `name` and is shown as
        `name@node`, and names the invitee `me@node`, its own node's way."""
        if self.room != room:
            raise Rejected(f"it was written for #{self.room}, not #{room}")
        if not written_by(self.sender, sender):
            raise Rejected(f"it was signed as from {self.sender}, not {sender}")
        if not written_by(me, self.to):
            raise Rejected(f"it was written for {self.to}")


def seal_invitation(
    room_key: bytes,
    their_public: bytes,
    signer: nacl.signing.SigningKey,
    *,
    room: str,
    sender: str,
    to: str,
    ts: int | None = None,
    ephemeral: bytes | None = None,
    nonce: bytes | None = None,
) -> str:
    body = _json(
        {
            "v": VERSION,
            "kind": "invite",
            "room": room,
            "from": sender,
            "to": to,
            "key": crypto.encode_key(room_key),
            "ts": int(time.time() * 1000) if ts is None else ts,
        }
    )
    signed = signer.sign(INVITE_DOMAIN + body).signature + body
    mine = nacl.public.PrivateKey(ephemeral) if ephemeral else nacl.public.PrivateKey.generate()
    box = nacl.public.Box(mine, nacl.public.PublicKey(their_public))
    sealed = box.encrypt(signed) if nonce is None else box.encrypt(signed, nonce)
    return base64.b64encode(bytes(mine.public_key) + bytes(sealed)).decode()


def open_invitation(sealed: str, secret: bytes) -> Invitation:
    try:
        raw = base64.b64decode(sealed, validate=True)
        box = nacl.public.Box(nacl.public.PrivateKey(secret), nacl.public.PublicKey(raw[:32]))
        signed = box.decrypt(raw[32:])
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise crypto.CryptoError(
            "cannot open the invitation: not sealed to this identity"
        ) from None
    data = _parse(signed)
    fields = {"room": str, "from": str, "to": str, "key": str, "ts": int}
    if (
        data.get("v") != VERSION
        or data.get("kind") != "invite"
        or not all(isinstance(data.get(k), t) for k, t in fields.items())
    ):
        raise Rejected("it is not a signed invitation (an old client, or damaged)")
    try:
        key = crypto.decode_key(data["key"])
    except crypto.CryptoError:
        raise Rejected("its room key is damaged") from None
    return Invitation(
        room=data["room"],
        sender=data["from"],
        to=data["to"],
        key=key,
        ts=data["ts"],
        signed=signed,
    )


# -- keyrings -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Keyring:
    """A user's room keys (newest first) and the keys first seen for each peer, kept on the
    node sealed under the wrapping key, so that every device of the account has them."""

    rooms: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)
    peers: dict[str, tuple[bytes, bytes]] = dataclasses.field(default_factory=dict)

    def add(self, room: str, key: bytes) -> bool:
        """Keep `key` for `room` (newest first); False when it was already kept."""
        keys = self.rooms.setdefault(room, [])
        if key in keys:
            return False
        keys.insert(0, key)
        return True

    def merge(self, other: Keyring) -> None:
        """Another device's keyring into this one: every key of both, first-seen peers kept."""
        for room, keys in other.rooms.items():
            mine = self.rooms.setdefault(room, [])
            mine.extend(key for key in keys if key not in mine)  # theirs after ours, in order
        for name, pin in other.peers.items():
            self.peers.setdefault(name, pin)

    def seal(self, wrapping: bytes, nonce: bytes | None = None) -> str:
        body = {
            "v": 1,
            "rooms": {r: [crypto.encode_key(k) for k in keys] for r, keys in self.rooms.items()},
            "peers": {n: {"box": _b64(p[0]), "signing": _b64(p[1])} for n, p in self.peers.items()},
        }
        return _secretbox(wrapping, _json(body), nonce)

    @classmethod
    def open(cls, wrapping: bytes, sealed: str) -> Keyring:
        try:
            data = json.loads(crypto.open_bytes(wrapping, sealed).decode())
            rooms = {r: [crypto.decode_key(k) for k in keys] for r, keys in data["rooms"].items()}
            peers = {
                n: (base64.b64decode(p["box"]), base64.b64decode(p["signing"]))
                for n, p in data["peers"].items()
            }
        except (
            crypto.CryptoError,
            UnicodeDecodeError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ):
            raise crypto.CryptoError("cannot open the keyring: wrong password or damaged") from None
        return cls(rooms=rooms, peers=peers)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
