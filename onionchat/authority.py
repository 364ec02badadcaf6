"""Who may do what: the one place that decides.

A node role (admin, moderator, member, guest) and a room role (owner, moderator) each give a
level, and a user's level in a room is the higher of the two. Whatever changes something (a
command, a frame, a page's form, a peer's event) asks `require` for the level its act needs,
and an act on someone asks `over` as well: staff act only on lower ranks. The state is small
(the roles above member, the sanctions still running) and kept here, in memory, so the
checks on every message cost a lookup; it is read from the store at start, and again when
`onionchat admin` has changed it under a running node (`meta.order` tells).
"""

from __future__ import annotations

import dataclasses
import math
import time

from onionchat.i18n import say
from onionchat.protocol import Code, ProtocolError
from onionchat.store import AuditEntry, Room, Sanction, Store

NODE_ROLES = {"admin": 100, "moderator": 75, "member": 0, "guest": -10, "waiting": -20, "bot": 0}
NODE_STAFF = 75  # the level of a node moderator
ROOM_ROLES = {"owner": 60, "moderator": 50, "voice": 10, "allowed": 0}
ROLE_WORDS = {
    "admin": say("admin"),
    "moderator": say("moderator"),
    "member": say("member"),
    "guest": say("guest"),
    "waiting": say("waiting"),
    "bot": say("bot"),
    "owner": say("owner"),
    "voice": say("voice"),
    "allowed": say("allowed"),
}
GUEST_WORDS = {"in": say("in"), "muted": say("muted"), "out": say("out")}
STAFF = 50  # the level of a room moderator: staff pass every room mode
VOICE = 10  # who may speak in a moderated room
NODE_WIDE = 0  # the room id of a sanction that holds in every room
CHANGED = "order"  # the meta key `onionchat admin` bumps when it changes something
GUESTS = "guests"  # the meta key of what holds for all guests: in, muted, out


@dataclasses.dataclass(frozen=True, slots=True)
class Act:
    level: int
    what: str  # "only room moderators may <what>"


ACTS = {
    "topic": Act(50, say("set the topic")),
    "bots": Act(50, say("invite or uninvite bots")),
    "kick": Act(50, say("kick")),
    "ban": Act(50, say("ban")),
    "mute": Act(50, say("mute")),
    "delete": Act(50, say("delete others' messages")),
    "purge": Act(50, say("purge")),
    "audit": Act(50, say("read the audit log")),
    "modes": Act(50, say("change the room's modes")),
    "voice": Act(50, say("give or take a voice")),
    "allow": Act(50, say("let people into an invite-only room")),
    "moderator": Act(60, say("name room moderators")),
    "owner": Act(75, say("name a room's owner")),
    "node-ban": Act(75, say("ban from the whole node")),
    "node-audit": Act(75, say("read the whole node's audit log")),
    "grant": Act(100, say("grant node roles")),
    "admit": Act(75, say("admit newcomers")),
    "guests": Act(75, say("mute or shut out the guests")),
    "create": Act(0, say("make rooms")),
    "invitecode": Act(0, say("make invite codes")),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Order:
    """An act of staff in a room, as the other nodes that share the room hear of it: `by`
    and `target` as this node names them (`bob`, or `carol@south` for a user of another
    node); `ids` the messages a delete or purge took."""

    room: str
    act: str  # kick, ban, unban, mute, unmute, delete
    by: str
    target: str
    until: int | None = None
    reason: str | None = None
    ids: tuple[str, ...] = ()
    mode: str | None = None  # a room mode set: "expiry 24"


def who_may(level: int) -> str:
    if level >= 100:
        return say("node admins")
    if level >= 75:
        return say("node moderators and admins")
    if level >= 60:
        return say("room owners and node staff")
    return say("room moderators and up")


def remaining(until: int | None) -> str:
    """How long a sanction still runs, in words."""
    if until is None:
        return say("for good")
    minutes = max(1, math.ceil((until - time.time() * 1000) / 60_000))
    if minutes < 120:
        return say("{minutes} min more", minutes=minutes)
    if minutes < 48 * 60:
        return say("{hours} h more", hours=math.ceil(minutes / 60))
    return say("{days} days more", days=math.ceil(minutes / 1440))


class Authority:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._node: dict[str, str] = {}  # user key -> role above or below member
        self._rooms: dict[str, dict[str, str]] = {}  # room -> user key -> role
        self._sanctions: dict[tuple[int, str, str], Sanction] = {}
        self._stamp: bytes | None = None
        self.guests = "in"  # all guests at once: "in", "muted" or "out"

    async def load(self) -> None:
        self._stamp = await self._store.get_meta(CHANGED)
        self.guests = (await self._store.get_meta(GUESTS) or b"in").decode()
        self._node = await self._store.node_roles()
        rooms: dict[str, dict[str, str]] = {}
        for room, key, role in await self._store.room_roles():
            rooms.setdefault(room, {})[key] = role
        self._rooms = rooms
        now = int(time.time() * 1000)
        self._sanctions = {
            (s.room_id, s.user_key, s.kind): s for s in await self._store.sanctions(now)
        }

    async def changed(self) -> bool:
        """Whether `onionchat admin` changed roles or sanctions since they were read."""
        return await self._store.get_meta(CHANGED) != self._stamp

    def seen(self, key: str, role: str) -> None:
        """A user's role as the store just read it (with their session, or a new account)."""
        if role in ("member", "bot"):
            self._node.pop(key, None)
        else:
            self._node[key] = role

    # -- asking ---------------------------------------------------------------------------

    def node_role(self, key: str) -> str:
        return self._node.get(key, "member")

    def room_role(self, key: str, room: str) -> str | None:
        return self._rooms.get(room, {}).get(key)

    def level(self, key: str, room: str | None = None) -> int:
        node = NODE_ROLES.get(self.node_role(key), 0)
        if room is None or node < 0:  # a guest gains nothing from a room role
            return node
        return max(node, ROOM_ROLES.get(self.room_role(key, room) or "", 0))

    def may(self, key: str, act: str, room: str | None = None) -> bool:
        return self.level(key, room) >= ACTS[act].level

    def require(self, key: str, act: str, room: str | None = None) -> None:
        needed = ACTS[act]
        if self.level(key, room) < needed.level:
            raise ProtocolError(
                Code.FORBIDDEN,
                say("only {who_may} may {what}", who_may=who_may(needed.level), what=needed.what),
            )

    def over(self, actor: str, target: str, room: str | None = None) -> None:
        """Staff act only on lower ranks (and never on themselves)."""
        if actor == target:
            raise ProtocolError(Code.FORBIDDEN, say("you cannot do that to yourself"))
        if self.level(target, room) >= self.level(actor, room):
            raise ProtocolError(Code.FORBIDDEN, say("you can act only on those of a lower rank"))

    def sanction(self, key: str, kind: str, room_id: int = NODE_WIDE) -> Sanction | None:
        """The sanction of this kind that holds now, if any (expired ones are forgotten)."""
        found = self._sanctions.get((room_id, key, kind))
        if found is not None and found.until is not None and found.until <= time.time() * 1000:
            del self._sanctions[(room_id, key, kind)]
            return None
        return found

    def barred(self, key: str, room_id: int) -> Sanction | None:
        """What keeps a user out of a room: a ban there or node-wide, or a kick's penalty."""
        return (
            self.sanction(key, "ban", NODE_WIDE)
            or self.sanction(key, "ban", room_id)
            or self.sanction(key, "kick", room_id)
        )

    def staff(self, room: str) -> dict[str, str]:
        """The room's owners and moderators, by user key."""
        return {
            key: role
            for key, role in self._rooms.get(room, {}).items()
            if ROOM_ROLES.get(role, 0) >= STAFF
        }

    # -- changing -------------------------------------------------------------------------

    async def grant(self, key: str, role: str) -> bool:
        if not await self._store.set_role(key, role):
            return False
        self.seen(key, role)
        return True

    async def grant_room(self, room: Room, key: str, role: str | None) -> None:
        await self._store.set_room_role(room.id, key, role)
        roles = self._rooms.setdefault(room.name, {})
        if role is None:
            roles.pop(key, None)
        else:
            roles[key] = role

    def owned(self, room: str, key: str) -> None:
        """A room just made with its owner (the store wrote the role in its transaction)."""
        self._rooms.setdefault(room, {})[key] = "owner"

    async def set_guests(self, state: str) -> None:
        await self._store.put_meta(GUESTS, state.encode())
        self.guests = state

    async def impose(self, sanction: Sanction) -> None:
        await self._store.put_sanction(sanction)
        self._sanctions[(sanction.room_id, sanction.user_key, sanction.kind)] = sanction

    async def lift(self, room_id: int, key: str, kinds: tuple[str, ...]) -> int:
        for kind in kinds:
            self._sanctions.pop((room_id, key, kind), None)
        return await self._store.lift_sanctions(room_id, key, kinds)

    async def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        room: str | None = None,
        detail: str | None = None,
    ) -> None:
        entry = AuditEntry(int(time.time() * 1000), actor, action, target, room, detail)
        await self._store.add_audit(entry)
