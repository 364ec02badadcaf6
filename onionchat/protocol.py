"""The wire: frames in both directions, the stored message envelope, and error codes.

Every frame is one JSON object in one WebSocket text frame, with a `type` and the protocol
version `v`. Decoding checks the shape (types, required fields, hard length caps); the node
checks what depends on configuration or state (size limits, rooms, rate). `docs/protocol.md`
is the reference for everything here.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from onionchat import PROTOCOL_VERSION
from onionchat.i18n import say

NONCE_BYTES = 24
MAC_BYTES = 16
KEY_BYTES = 32
WRAPPED_BYTES = NONCE_BYTES + MAC_BYTES + KEY_BYTES  # a secret key in a secretbox
SIGNATURE_BYTES = 64
SIGNED_OVERHEAD = SIGNATURE_BYTES + 1024  # a sealed body's signature and its JSON fields
INVITATION_CHARS = 2048  # base64 of a signed invitation, at most
KEYRING_CHARS = 1 << 20  # base64 of a sealed keyring, at most (the node's limit may be lower)

Ref = Annotated[str, msgspec.Meta(max_length=64)]
NameField = Annotated[str, msgspec.Meta(max_length=128)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]
IdField = Annotated[str, msgspec.Meta(pattern="^[0-9A-HJKMNP-TV-Z]{26}$")]
# What a reaction may be: a small set, the same in every client (a sealed one is checked there).
REACTIONS = ("👍", "👎", "❤️", "😂", "😮", "😢", "🎉")
REACTION_CHARS = 8  # the longest text a sealed reaction's box is sized for


class Code(enum.StrEnum):
    """Error codes carried by `error` frames and HTTP error bodies."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BINARY_FRAME = "binary_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_FAILED = "auth_failed"
    SESSION_EXPIRED = "session_expired"
    BAD_NAME = "bad_name"
    NAME_TAKEN = "name_taken"
    UNKNOWN_ROOM = "unknown_room"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_MESSAGE = "unknown_message"
    NO_KEY = "no_key"
    NOT_JOINED = "not_joined"
    ROOM_MODE = "room_mode"
    ROOM_EXISTS = "room_exists"
    CONFLICT = "conflict"
    BAD_BODY = "bad_body"
    BAD_CIPHERTEXT = "bad_ciphertext"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_COMMAND = "bad_command"
    FORBIDDEN = "forbidden"
    REGISTRATION_CLOSED = "registration_closed"
    INVITE_NEEDED = "invite_needed"
    WRONG_ANSWER = "wrong_answer"
    NO_GUESTS = "no_guests"
    TOO_MANY = "too_many"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class Close(enum.IntEnum):
    """WebSocket close codes the node uses (1xxx are RFC 6455, 4xxx are OnionChat's)."""

    NORMAL = 1000
    INVALID_UTF8 = 1007
    TOO_BIG = 1009
    INTERNAL = 1011
    RESTART = 1012
    TRY_AGAIN = 1013
    AUTH_FAILED = 4001
    SESSION_EXPIRED = 4002
    BANNED = 4003
    FLOODING = 4008
    TOO_SLOW = 4009


class ProtocolError(Exception):
    """A client did something wrong; becomes an `error` frame, the connection lives on."""

    def __init__(self, code: Code, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# ---------------------------------------------------------------------------------------------
# Client → node


FileId = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{22}$")]
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
FileType = Annotated[str, msgspec.Meta(pattern="^[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,80}$")]


class FileRef(msgspec.Struct, omit_defaults=True, kw_only=True, frozen=True):
    """The file a message carries, uploaded first (`POST /api/files`). In an open room with
    its name and type; in a key-protected room or a sealed conversation those, and the key that
    opens it, are in the box, and the node sees only `id` and `size`."""

    id: FileId
    size: Annotated[int, msgspec.Meta(ge=1)]
    name: FileName | None = None
    type: FileType | None = None


class ClientFrame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    v: int
    ref: Ref | None = None


class Auth(ClientFrame, tag="auth"):
    token: Annotated[str, msgspec.Meta(max_length=256)]


class Join(ClientFrame, tag="join"):
    room: NameField
    create: bool = False
    protected: bool = False
    new: bool = False  # create a new room only: refused when the name exists


class Leave(ClientFrame, tag="leave"):
    room: NameField


class Rooms(ClientFrame, tag="rooms"):
    pass


class Send(ClientFrame, tag="send"):
    """A message to a room (`room`) or a direct message to a user (`to`); at most one of
    `reply` (it answers that message), `edit` (a new text for one's own message) and `react`
    (a reaction to that message)."""

    room: NameField | None = None
    to: NameField | None = None
    text: str | None = None
    box: str | None = None
    me: bool = False
    reply: IdField | None = None
    edit: IdField | None = None
    react: IdField | None = None
    file: FileRef | None = None


class Delete(ClientFrame, tag="delete"):
    """One message gone, with its edits and reactions: one's own, or anyone's for staff.
    `room` may be a conversation's `@a+b`."""

    room: NameField
    id: IdField


class Language(ClientFrame, tag="language"):
    """The language the account's pages speak, on every device (None: the browser's)."""

    lang: Annotated[str, msgspec.Meta(pattern="^[a-z]{2,3}$")] | None = None


class History(ClientFrame, tag="history"):
    room: NameField
    before: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    limit: Limit = 50


class Topic(ClientFrame, tag="topic"):
    room: NameField
    text: str | None = None
    box: str | None = None


class Who(ClientFrame, tag="who"):
    room: NameField
    all: bool = False  # every member of the room (joined and not left), not only those present


class Command(ClientFrame, tag="command"):
    line: str
    room: NameField | None = None


class Ping(ClientFrame, tag="ping"):
    pass


class Identity(ClientFrame, tag="identity"):
    """Publish this account's X25519 public key, and its secret key sealed (secretbox) with
    the wrapping key only the account's clients can derive."""

    public: Annotated[str, msgspec.Meta(max_length=64)]
    wrapped: Annotated[str, msgspec.Meta(max_length=256)]
    signing: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # Ed25519 public key


class KeyOf(ClientFrame, tag="key"):
    user: NameField


class Invite(ClientFrame, tag="invite"):
    """A key-protected room's key, sealed to another user's public key."""

    room: NameField
    to: NameField
    sealed: Annotated[str, msgspec.Meta(max_length=INVITATION_CHARS)]


class KeyringUpdate(ClientFrame, tag="keyring"):
    """The account's keyring, sealed under the wrapping key: `version` is one more than the
    version it was made from, so that two devices cannot overwrite each other's keys."""

    sealed: Annotated[str, msgspec.Meta(max_length=KEYRING_CHARS)]
    version: Annotated[int, msgspec.Meta(ge=1)]


AnyClientFrame = (
    Auth
    | Join
    | Leave
    | Rooms
    | Send
    | History
    | Topic
    | Who
    | Command
    | Delete
    | Language
    | Ping
    | Identity
    | KeyOf
    | Invite
    | KeyringUpdate
)

_decoder = msgspec.json.Decoder(AnyClientFrame)


_refs = msgspec.json.Decoder(dict[str, msgspec.Raw])


def ref_of(data: str | bytes) -> str | None:
    """The `ref` of a frame that failed validation, so its error can still be matched."""
    try:
        ref = msgspec.json.decode(_refs.decode(data)["ref"])
    except (msgspec.DecodeError, KeyError, TypeError, RecursionError):
        return None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


def decode(data: str | bytes) -> AnyClientFrame:
    """Parse one client frame, or raise ProtocolError saying exactly what is wrong."""
    try:
        frame: AnyClientFrame = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            Code.BAD_FRAME, say("invalid frame: {exc}", exc=exc), ref_of(data)
        ) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(Code.BAD_JSON, say("malformed JSON: {exc}", exc=exc)) from None
    except RecursionError:  # msgspec's own guard, long before Python's stack is at risk
        raise ProtocolError(Code.BAD_FRAME, say("the frame is nested too deep")) from None
    if frame.v != PROTOCOL_VERSION:
        raise ProtocolError(
            Code.UNSUPPORTED_VERSION,
            say(
                "protocol version {v} is not supported; this node speaks {protocol_version}",
                v=frame.v,
                protocol_version=PROTOCOL_VERSION,
            ),
            frame.ref,
        )
    return frame


# ---------------------------------------------------------------------------------------------
# The stored envelope: one message as the store keeps it and every transport carries it


class Message(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A message with its identity. Exactly one of `text` (open room) or `box` (key-protected:
    base64 of a NaCl secretbox, nonce first) is set. `to` is set on direct messages."""

    id: str
    room: str
    ts: int
    sender: str
    text: str | None = None
    box: str | None = None
    me: bool = False
    to: str | None = None
    reply: str | None = None
    edit: str | None = None
    react: str | None = None
    file: FileRef | None = None


# ---------------------------------------------------------------------------------------------
# Node → client


def _version() -> int:
    return PROTOCOL_VERSION


class ServerFrame(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    v: int = msgspec.field(default_factory=_version)  # a factory, so it is never omitted


class Keys(msgspec.Struct, omit_defaults=True, kw_only=True):
    public: str
    wrapped: str
    signing: str | None = None  # absent for an account whose client published none yet


class SealedKeyring(msgspec.Struct, kw_only=True):
    sealed: str
    version: int


class Invitation(msgspec.Struct, kw_only=True, omit_defaults=True):
    room: str
    sender: str
    sealed: str
    # the sender is staff of the room here: a new key from them is the room's new key (a
    # rotation after a kick), which a member's client takes over the one it holds
    staff: bool = False


class Ready(ServerFrame, tag="ready"):
    """The first frame of a connection: who one is (`role` on the node: omitted for a
    member), where one was, and the node's limits."""

    user: str
    key: str  # the user's name as the node compares it (NFKC + casefold): clients never derive it
    version: str
    rooms: list[str]
    direct: list[str]
    limits: dict[str, int | float]
    identity: Keys | None = None
    keyring: SealedKeyring | None = None
    invitations: list[Invitation] = msgspec.field(default_factory=list)
    bots: dict[str, list[str]] = msgspec.field(default_factory=dict)  # name -> aliases
    role: str = "member"
    lang: str | None = None  # the language the account chose (omitted: none)


class LanguageSet(ServerFrame, tag="language"):
    """The account's language changed (to each of its connections; `ref` to the one that
    asked)."""

    lang: str | None = None
    ref: str | None = None


class IdentityFrame(ServerFrame, tag="identity"):
    public: str
    wrapped: str
    signing: str | None = None
    ref: str | None = None


class KeyringFrame(ServerFrame, tag="keyring"):
    """The keyring as the node keeps it: the answer to an update, and to every device of the
    account when it changes."""

    sealed: str
    version: int
    ref: str | None = None


class PublicKey(ServerFrame, tag="key"):
    user: str
    direct: str  # the direct conversation's room with this user, as the node names it
    public: str
    signing: str | None = None
    ref: str | None = None


class Invited(ServerFrame, tag="invited"):
    room: str
    sender: str
    sealed: str
    staff: bool = False  # as in Invitation


class Ack(ServerFrame, tag="ack"):
    room: str
    id: str
    ts: int
    ref: str | None = None


class MessageFrame(ServerFrame, tag="message"):
    id: str
    room: str
    ts: int
    sender: str
    text: str | None = None
    box: str | None = None
    me: bool = False
    to: str | None = None
    reply: str | None = None
    edit: str | None = None
    react: str | None = None
    file: FileRef | None = None


class RoomInfo(msgspec.Struct, omit_defaults=True, kw_only=True):
    name: str
    protected: bool = False
    topic: str | None = None
    topic_box: str | None = None
    topic_by: str | None = None
    topic_ts: int = 0
    online: int = 0
    readers: list[str] = msgspec.field(default_factory=list)  # bots invited to read it


class Delta(ServerFrame, tag="delta"):
    """A bot's answer so far (the whole text, not the increment): sent a few times a second
    while it grows, then replaced by the `message` with the same id. In a key-protected room
    that invited the bot, `box` (sealed with the room key) instead of `text`."""

    room: str
    id: str
    sender: str
    text: str | None = None
    box: str | None = None


class Readers(ServerFrame, tag="readers"):
    """The bots that can read a key-protected room changed (an /invite or /uninvite)."""

    room: str
    bots: list[str]


class Joined(ServerFrame, tag="joined"):
    room: RoomInfo
    members: list[str]
    history: list[MessageFrame]
    more: bool
    ref: str | None = None


class Left(ServerFrame, tag="left"):
    room: str
    ref: str | None = None
    reason: str | None = None  # set when staff took the user out (kicked, banned)


class Deleted(ServerFrame, tag="deleted"):
    """Messages that are gone: deleted by their writer or by staff (`by`), or purged."""

    room: str
    ids: list[str]
    by: str


class Presence(ServerFrame, tag="presence"):
    room: str
    user: str
    state: str


class HistoryPage(ServerFrame, tag="history"):
    room: str
    messages: list[MessageFrame]
    more: bool
    ref: str | None = None


class JoinedOut(ServerFrame, tag="joined"):
    """`joined` as the node writes it: the history already encoded, message by message, while
    the page was measured against its byte bound (so nothing is encoded twice)."""

    room: RoomInfo
    members: list[str]
    history: list[msgspec.Raw]
    more: bool
    ref: str | None = None


class HistoryPageOut(ServerFrame, tag="history"):
    """`history` as the node writes it (see JoinedOut)."""

    room: str
    messages: list[msgspec.Raw]
    more: bool
    ref: str | None = None


class TopicChanged(ServerFrame, tag="topic"):
    room: str
    by: str
    ts: int
    text: str | None = None
    box: str | None = None
    ref: str | None = None


class RoomList(ServerFrame, tag="rooms"):
    rooms: list[RoomInfo]
    ref: str | None = None


class WhoList(ServerFrame, tag="who"):
    room: str
    members: list[str]
    ref: str | None = None


class Notice(ServerFrame, tag="notice"):
    text: str
    room: str | None = None
    ref: str | None = None


class Mention(ServerFrame, tag="mention"):
    room: str
    id: str
    sender: str
    text: str


class Clear(ServerFrame, tag="clear"):
    room: str | None = None
    ref: str | None = None


class Pong(ServerFrame, tag="pong"):
    ref: str | None = None


class Error(ServerFrame, tag="error"):
    code: str
    message: str
    ref: str | None = None


def max_box_length(chars: int) -> int:
    """The base64 length of a secretbox of a signed body holding `chars` characters of text,
    each escaped in JSON to at most 6 bytes."""
    raw = NONCE_BYTES + MAC_BYTES + SIGNED_OVERHEAD + 6 * chars
    return 4 * ((raw + 2) // 3)


def message_frame(message: Message) -> MessageFrame:
    return MessageFrame(
        id=message.id,
        room=message.room,
        ts=message.ts,
        sender=message.sender,
        text=message.text,
        box=message.box,
        me=message.me,
        to=message.to,
        reply=message.reply,
        edit=message.edit,
        react=message.react,
        file=message.file,
    )


RELATIONS = ("reply", "edit", "react")


def relation(item: object) -> tuple[str, str] | None:
    """The message this one answers, edits or reacts to, if any: (`reply`, `edit` or
    `react`, its id)."""
    found = [(kind, getattr(item, kind)) for kind in RELATIONS if getattr(item, kind)]
    if len(found) > 1:
        raise ProtocolError(Code.BAD_FRAME, say("give at most one of reply, edit and react"))
    return found[0] if found else None


def _plain(value: object) -> object:
    """A sentence of the node's (a str subclass msgspec leaves alone) goes as its English."""
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_plain)


def encode(frame: ServerFrame | msgspec.Struct) -> str:
    """Encode once; the same string goes to every recipient."""
    return _encoder.encode(frame).decode()


def encode_bytes(frame: ServerFrame | msgspec.Struct) -> bytes:
    return _encoder.encode(frame)


def error(code: Code, message: str, ref: str | None = None) -> str:
    return encode(Error(code=code.value, message=message, ref=ref))
