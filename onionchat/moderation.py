"""What staff do: kick, ban, mute, delete, purge, name moderators, read the audit log.

Each act asks the node's `Authority` first (the level it needs, and that the target ranks
lower), then is carried out by the node (`expel`, `erase`), said in the room with who did it,
and written to the audit log (who, what, to whom, where, why; never a message's words).
The slash commands in `commands` call these.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from onionchat import names
from onionchat.auth import invite_hash
from onionchat.authority import (
    GUEST_WORDS,
    NODE_ROLES,
    NODE_WIDE,
    ROLE_WORDS,
    ROOM_ROLES,
    STAFF,
    Order,
)
from onionchat.i18n import Said, joined, say
from onionchat.ids import is_valid
from onionchat.protocol import Close, Code, ProtocolError
from onionchat.store import Modes, Room, Sanction

if TYPE_CHECKING:
    from onionchat.hub import Connection
    from onionchat.node import Node

KICK_MINUTES = 5  # a kick's penalty unless one is given
MAX_MINUTES = 366 * 24 * 60  # the longest sanction with an end (longer is "forever")
MAX_REASON = 200
PURGE_COUNT = 1000  # messages one purge deletes at most
PURGE_SINCE = 24 * 3600 * 1000  # ms: a purge without a count or a time goes back one day
AUDIT_LINES = 20
LIVE_INVITES = 5  # invite codes one user has that can still be used, at most
MAX_INVITE_USES = 100
MAX_INVITE_HOURS = 24 * 30
MAX_AUDIT_LINES = 200
_DURATION = re.compile(r"(\d{1,6})([mhdw]?)")
_UNIT = {"": 1, "m": 1, "h": 60, "d": 1440, "w": 10080}


def duration(word: str) -> int | None:
    """Minutes of `30`, `30m`, `12h`, `7d`, `2w`; None when the word is no duration."""
    found = _DURATION.fullmatch(word.casefold())
    if found is None:
        return None
    return int(found[1]) * _UNIT[found[2]]


def until(minutes: int | None) -> int | None:
    """When a sanction of `minutes` ends (ms since the epoch), None for good."""
    if minutes is None:
        return None
    if not 1 <= minutes <= MAX_MINUTES:
        raise ProtocolError(
            Code.BAD_COMMAND,
            say(
                "a duration is from 1 minute to {max_minutes} days", max_minutes=MAX_MINUTES // 1440
            ),
        )
    return int(time.time() * 1000) + minutes * 60_000


def reason(words: list[str]) -> str | None:
    reason = " ".join(words).strip()
    if len(reason) > MAX_REASON:
        raise ProtocolError(
            Code.BAD_COMMAND,
            say("a reason is at most {max_reason} characters", max_reason=MAX_REASON),
        )
    return reason or None


def _said(minutes: int | None, reason: str | None) -> str:
    """ " for 2 h: spam", as the room is told."""
    span: str
    if minutes is None:
        span = ""
    elif minutes == 1440:
        span = say(" for 1 day")
    elif minutes % 1440 == 0:
        span = say(" for {days} days", days=minutes // 1440)
    elif minutes % 60 == 0:
        span = say(" for {hours} h", hours=minutes // 60)
    else:
        span = say(" for {minutes} min", minutes=minutes)
    if reason:
        return say("{span}: {reason}", span=span, reason=reason)
    return span


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Who is acted on: a user of this node (with their account's id), or, in a room shared
    with other nodes, a user of one of them (`carol@south`, no id here)."""

    name: str
    key: str
    id: int | None = None
    role: str = "member"


async def _user(node: Node, name: str, act: str, remote: bool = False) -> Target:
    if not name:
        raise ProtocolError(Code.BAD_COMMAND, say("/{act} needs a user's name", act=act))
    name = name.removeprefix("@")
    elsewhere = node.elsewhere(name) if remote and "@" in name else None
    if elsewhere is not None:
        return Target(elsewhere, names.key(elsewhere))
    user = await node.store.user_by_key(names.key(name))
    if user is None:
        raise ProtocolError(
            Code.UNKNOWN_USER, say("there is no user {name} on this node", name=f"{name!r}")
        )
    return Target(user.name, names.key(user.name), user.id, user.role)


async def _target(node: Node, conn: Connection, name: str, act: str, room: str | None) -> Target:
    """The user acted on, who must rank below the actor; in a room, possibly a user of
    another node."""
    target = await _user(node, name, act, remote=room is not None)
    node.authority.over(conn.user_key, target.key, room)
    return target


def _tell_peers(node: Node, room: Room, act: str, by: str, target: str, **more: Any) -> None:
    """What staff did in a room, for the nodes that share it (the federation listens)."""
    node.ordered(Order(room.name, act, by, target, **more))


async def kick(
    node: Node,
    conn: Connection,
    room: Room,
    name: str,
    minutes: int | None,
    reason: str | None,
    ref: str | None = None,
) -> None:
    """Out of the room, and kept out for the penalty."""
    node.authority.require(conn.user_key, "kick", room.name)
    target = await _target(node, conn, name, "kick", room.name)
    key = target.key
    minutes = minutes or KICK_MINUTES
    sanction = Sanction(room.id, key, "kick", until(minutes), conn.user, reason)
    await node.authority.impose(sanction)
    if target.id is not None:
        await node.store.set_member(target.id, room.id, False)
    _tell_peers(node, room, "kick", conn.user, target.name, until=sanction.until, reason=reason)
    said = _said(minutes, reason)
    node.expel(
        room.name,
        key,
        _sanctioned("kick", conn.user, None, room.name, said),
    )
    node.announce(
        room.name,
        _sanctioned("kick", conn.user, target.name, room.name, said),
        conn,
        ref,
    )
    _rotate_hint(node, conn, room, target.name)
    await node.authority.record(conn.user, "kick", target.name, room.name, _detail(sanction))


def _rotate_hint(node: Node, conn: Connection, room: Room, name: str) -> None:
    if room.protected:
        node.notice(
            conn,
            say(
                "{name} still holds #{room}'s key: /rotate seals a new one to the others",
                name=name,
                room=room.name,
            ),
            room.name,
        )


async def ban(
    node: Node,
    conn: Connection,
    room: Room | None,
    name: str,
    minutes: int | None,
    reason: str | None,
    ref: str | None = None,
) -> None:
    """From a room, or (room None) from the whole node: every connection closed, and no
    connection taken until the ban ends."""
    where = None if room is None else room.name
    node.authority.require(conn.user_key, "ban" if room else "node-ban", where)
    target = await _target(node, conn, name, "ban", where)
    key = target.key
    room_id = room.id if room else NODE_WIDE
    sanction = Sanction(room_id, key, "ban", until(minutes), conn.user, reason)
    await node.authority.impose(sanction)
    said = _said(minutes, reason)
    if room is not None:
        if target.id is not None:
            await node.store.set_member(target.id, room.id, False)
        _tell_peers(node, room, "ban", conn.user, target.name, until=sanction.until, reason=reason)
        node.expel(
            room.name,
            key,
            _sanctioned("ban", conn.user, None, room.name, said),
        )
        node.announce(
            room.name,
            _sanctioned("ban", conn.user, target.name, room.name, said),
            conn,
            ref,
        )
        _rotate_hint(node, conn, room, target.name)
    else:
        told = say(
            "{user} banned {target} from this node{said}",
            user=conn.user,
            target=target.name,
            said=said,
        )
        for joined in sorted({r for c in node.hub.user_connections(key) for r in c.rooms}):
            node.announce(joined, told)
        for other in list(node.hub.user_connections(key)):
            other.close(Close.BANNED, say("banned from this node by {user}", user=conn.user))
        node.notice(conn, told, ref=ref)
    await node.authority.record(conn.user, "ban", target.name, where, _detail(sanction))


async def unban(
    node: Node, conn: Connection, room: Room | None, name: str, ref: str | None = None
) -> int:
    """Lift a ban and a kick's penalty (of the room, or node-wide); how many there were."""
    return await _lift(node, conn, room, name, "unban", ("ban", "kick"), ref)


async def mute(
    node: Node,
    conn: Connection,
    room: Room | None,
    name: str,
    minutes: int | None,
    reason: str | None,
    ref: str | None = None,
) -> None:
    """The user reads, but writes nothing, in the room (or anywhere on the node)."""
    where = None if room is None else room.name
    node.authority.require(conn.user_key, "mute" if room else "node-ban", where)
    target = await _target(node, conn, name, "mute", where)
    sanction = Sanction(
        room.id if room else NODE_WIDE, target.key, "mute", until(minutes), conn.user, reason
    )
    await node.authority.impose(sanction)
    said = _said(minutes, reason)
    if room is not None:
        _tell_peers(node, room, "mute", conn.user, target.name, until=sanction.until, reason=reason)
        node.announce(
            room.name,
            _sanctioned("mute", conn.user, target.name, room.name, said),
            conn,
            ref,
        )
    else:
        node.notice(
            conn,
            say("{target} is muted on this whole node{said}", target=target.name, said=said),
            ref=ref,
        )
    await node.authority.record(conn.user, "mute", target.name, where, _detail(sanction))


async def unmute(
    node: Node, conn: Connection, room: Room | None, name: str, ref: str | None = None
) -> int:
    return await _lift(node, conn, room, name, "unmute", ("mute",), ref)


async def _lift(
    node: Node,
    conn: Connection,
    room: Room | None,
    name: str,
    act: str,
    kinds: tuple[str, ...],
    ref: str | None,
) -> int:
    where = None if room is None else room.name
    node.authority.require(conn.user_key, FEDERATED[act] if room else "node-ban", where)
    target = await _target(node, conn, name, act, where)
    lifted = await node.authority.lift(room.id if room else NODE_WIDE, target.key, kinds)
    if lifted:
        if room is not None:
            _tell_peers(node, room, act, conn.user, target.name)
            node.announce(
                room.name,
                _lifted(act, conn.user, target.name),
                conn,
                ref,
            )
        await node.authority.record(conn.user, act, target.name, where)
    return lifted


async def delete(
    node: Node,
    conn: Connection,
    room: Room,
    id_: str,
    ref: str | None = None,
    told: bool = True,
) -> None:
    """One message (with its edits and reactions): one's own, or in a room anyone's for its
    staff. `told`: the writer hears it in a notice too (a command's answer), not only from
    the `deleted` frame everyone in the room gets."""
    direct = room.name.startswith("@")
    where = say("this conversation") if direct else f"#{room.name}"
    target = None if not is_valid(id_) else await node.store.target(room.id, id_)
    if target is None or target.deleted:
        raise ProtocolError(
            Code.UNKNOWN_MESSAGE, say("{where} has no message {id}", where=where, id=id_)
        )
    own = names.key(target.sender) == conn.user_key
    if not own:
        if direct:
            raise ProtocolError(Code.FORBIDDEN, say("you can delete your own messages only"))
        node.authority.require(conn.user_key, "delete", room.name)
        if "@" not in target.sender:
            node.authority.over(conn.user_key, names.key(target.sender), room.name)
    await node.erase(room, [id_], conn.user)
    if not direct or "@" in room.name:  # a conversation with a user of another node too
        _tell_peers(node, room, "delete", conn.user, target.sender, ids=(id_,))
    if own:
        if told:
            node.notice(conn, say("your message was deleted"), None if direct else room.name, ref)
    else:
        node.announce(
            room.name,
            say("{user} deleted a message of {sender}", user=conn.user, sender=target.sender),
            conn,
            ref,
        )
        await node.authority.record(conn.user, "delete", target.sender, room.name, id_)


async def purge(
    node: Node,
    conn: Connection,
    room: Room,
    name: str,
    count: int | None,
    minutes: int | None,
    ref: str | None = None,
) -> int:
    """A user's newest messages in the room: `count` of them, or those of the last
    `minutes` (a day without either), at most PURGE_COUNT; how many went."""
    node.authority.require(conn.user_key, "purge", room.name)
    target = await _target(node, conn, name, "purge", room.name)
    if count is not None and not 1 <= count <= PURGE_COUNT:
        raise ProtocolError(
            Code.BAD_COMMAND,
            say("a purge deletes 1 to {purge_count} messages", purge_count=PURGE_COUNT),
        )
    since = int(time.time() * 1000) - (minutes * 60_000 if minutes else PURGE_SINCE)
    if count is not None:
        since = 0
    ids = await node.store.written_by(room.id, target.name, count or PURGE_COUNT, since)
    gone = await node.erase(room, ids, conn.user) if ids else []
    if gone:
        _tell_peers(node, room, "delete", conn.user, target.name, ids=tuple(gone))
    told = say(
        "{user} purged {count} messages of {target}",
        user=conn.user,
        count=len(gone),
        target=target.name,
    )
    node.announce(room.name, told, conn, ref)
    detail = f"{len(gone)} messages"
    await node.authority.record(conn.user, "purge", target.name, room.name, detail)
    return len(gone)


async def name_staff(
    node: Node, conn: Connection, room: Room, name: str, role: str | None, ref: str | None = None
) -> None:
    """Make a user a room moderator or owner, or (None) a plain member again."""
    authority = node.authority
    target = await _user(node, name, "op" if role else "deop", remote=True)
    key = target.key
    needed = "owner" if "owner" in (role, authority.room_role(key, room.name)) else "moderator"
    authority.require(conn.user_key, needed, room.name)
    authority.over(conn.user_key, key, room.name)
    await authority.grant_room(room, key, role)
    title = (
        say("a {role} of #{room}", role=ROLE_WORDS[role], room=room.name)
        if role
        else say("no longer staff of #{room}", room=room.name)
    )
    node.announce(
        room.name,
        say("{user} made {target} {title}", user=conn.user, target=target.name, title=title),
        conn,
        ref,
    )
    await authority.record(conn.user, f"room role {role or 'member'}", target.name, room.name)


async def grant(node: Node, conn: Connection, name: str, role: str, ref: str | None = None) -> None:
    """A node role, by an admin."""
    if role not in NODE_ROLES or role == "bot":
        roles = ", ".join(r for r in NODE_ROLES if r != "bot")
        raise ProtocolError(Code.BAD_COMMAND, say("a node role is one of: {roles}", roles=roles))
    node.authority.require(conn.user_key, "grant")
    target = await _target(node, conn, name, "grant", None)
    await node.authority.grant(target.key, role)
    await node.authority.record(conn.user, f"grant {role}", target.name)
    node.notice(
        conn,
        say("{target} is a {role} of this node now", target=target.name, role=ROLE_WORDS[role]),
        ref=ref,
    )


MODES = ("invite", "moderated", "limit", "slow", "expiry", "lockdown")
MAX_MODE_VALUE = {"limit": 100_000, "slow": 3600, "expiry": 24 * 366}


def describe(modes: Modes) -> Said:
    shown = [
        said
        for said in (
            say("invite-only") if modes.invite else None,
            say("moderated") if modes.moderated else None,
            say("at most {n} present", n=modes.limit) if modes.limit else None,
            say("slow: a message every {n} s", n=modes.slow) if modes.slow else None,
            say("messages kept {n} h", n=modes.expiry) if modes.expiry else None,
            say("locked down") if modes.lockdown else None,
        )
        if said is not None
    ]
    return joined(", ", shown) if shown else say("none (open to all, everyone speaks)")


async def set_mode(
    node: Node, conn: Connection, room: Room, name: str, value: str, ref: str | None = None
) -> None:
    """`invite on`, `limit 50`, `slow off`: one mode at a time, said in the room."""
    node.authority.require(conn.user_key, "modes", room.name)
    modes = changed_modes(room.modes, name, value)
    await _apply_modes(node, room, modes, name, value, conn.user, conn, ref)
    _tell_peers(node, room, "mode", conn.user, "", mode=f"{name} {value}")


def changed_modes(modes: Modes, name: str, value: str) -> Modes:
    """The room's modes with one changed, or the reason why not (`bad_command`)."""
    if name not in MODES:
        raise ProtocolError(
            Code.BAD_COMMAND, say("a mode is one of: {modes}", modes=", ".join(MODES))
        )
    current = getattr(modes, name)
    if isinstance(current, bool):
        if value not in ("on", "off"):
            raise ProtocolError(Code.BAD_COMMAND, say("usage: /mode {name} on|off", name=name))
        new: bool | int = value == "on"
    elif value == "off":
        new = 0
    elif value.isdigit() and 1 <= int(value) <= MAX_MODE_VALUE[name]:
        new = int(value)
    else:
        raise ProtocolError(
            Code.BAD_COMMAND,
            say(
                "usage: /mode {name} N|off (N from 1 to {max_mode_value})",
                name=name,
                max_mode_value=MAX_MODE_VALUE[name],
            ),
        )
    changes: dict[str, Any] = {name: new}
    return dataclasses.replace(modes, **changes)


async def _apply_modes(
    node: Node,
    room: Room,
    modes: Modes,
    name: str,
    value: str,
    by: str,
    conn: Connection | None = None,
    ref: str | None = None,
) -> None:
    room = await node.set_modes(room, modes)
    said = say(
        "{by} set #{room} {name} {value}; modes: {modes}",
        by=by,
        room=room.name,
        name=name,
        value=value,
        modes=describe(room.modes),
    )
    node.announce(room.name, said, conn, ref)
    await node.authority.record(by, f"mode {name} {value}", None, room.name)
    if name == "expiry" and modes.expiry:
        await node.expire()


async def mode_from_peer(node: Node, room: Room, actor: str, mode: str) -> None:
    """A mode that staff of another node set (the federation checked they are staff here)."""
    name, _, value = mode.partition(" ")
    await _apply_modes(node, room, changed_modes(room.modes, name, value), name, value, actor)


async def let_in(
    node: Node, conn: Connection, room: Room, name: str, role: str | None, ref: str | None = None
) -> None:
    """`allowed` into an invite-only room, a `voice` in a moderated one, or (None) neither."""
    node.authority.require(conn.user_key, "voice" if role != "allowed" else "allow", room.name)
    target = await _target(node, conn, name, "voice" if role else "devoice", room.name)
    key = target.key
    await node.authority.grant_room(room, key, role)
    if role == "allowed":
        said = say(
            "{user} let {target} into #{room}", user=conn.user, target=target.name, room=room.name
        )
        node.tell(key, say("{said}: /join {room}", said=said, room=room.name), room.name)
    elif role == "voice":
        said = say(
            "{user} gave {target} a voice in #{room}",
            user=conn.user,
            target=target.name,
            room=room.name,
        )
    else:
        said = say(
            "{user} took {target}'s voice in #{room}",
            user=conn.user,
            target=target.name,
            room=room.name,
        )
    node.announce(room.name, said, conn, ref)
    await node.authority.record(conn.user, f"room role {role or 'member'}", target.name, room.name)


def knock(node: Node, conn: Connection, room: Room, ref: str | None = None) -> None:
    """Ask the room's staff who are present to let one in; they are told who knocks."""
    staff = [
        other
        for other in node.hub.room_connections(room.name)
        if node.authority.level(other.user_key, room.name) >= STAFF
    ]
    text = say(
        "{user} knocks on #{room}: /allow {user} lets them in", user=conn.user, room=room.name
    )
    for other in staff:
        node.notice(other, text, room.name)
    told = say("its staff were told") if staff else say("none of its staff is here now: try later")
    node.notice(conn, say("you knocked on #{room}: {told}", room=room.name, told=told), None, ref)


#: the acts another node's staff may tell of, and the act of this node's that each needs
FEDERATED = {
    "kick": "kick",
    "ban": "ban",
    "unban": "ban",
    "mute": "mute",
    "unmute": "mute",
    "delete": "delete",
}
SANCTIONS = ("kick", "ban", "mute")


def _lifted(act: str, actor: str, target: str) -> Said:
    if act == "unban":
        return say("{user} let {target} back in", user=actor, target=target)
    return say("{user} unmuted {target}", user=actor, target=target)


def _sanctioned(act: str, actor: str, target: str | None, room: str, said: str) -> Said:
    """What the room is told of a sanction (`target` given), or its target is told."""
    if target is None:
        if act == "kick":
            return say("{user} kicked you from #{room}{said}", user=actor, room=room, said=said)
        return say("{user} banned you from #{room}{said}", user=actor, room=room, said=said)
    if act == "kick":
        return say("{user} kicked {target}{said}", user=actor, target=target, said=said)
    if act == "ban":
        return say("{user} banned {target}{said}", user=actor, target=target, said=said)
    return say("{user} muted {target}{said}", user=actor, target=target, said=said)


async def obey(
    node: Node,
    room: Room,
    act: str,
    actor: str,
    target: str,
    until: int | None,
    reason: str | None,
    ids: list[str],
    only_from: str | None,
) -> None:
    """An act of staff on another node (its checks made by the federation): carried out
    here as it was there, said in the room, written to the audit log. `only_from`: the
    node whose own users' messages alone a deletion may take."""
    key = names.key(target)
    if act in SANCTIONS:
        sanction = Sanction(room.id, key, act, until, actor, reason)
        await node.authority.impose(sanction)
        minutes = None if until is None else max(1, round((until - time.time() * 1000) / 60_000))
        said = _said(minutes, reason)
        if act != "mute" and "@" not in target:
            user = await node.store.user_by_key(key)
            if user is not None:
                await node.store.set_member(user.id, room.id, False)
            node.expel(room.name, key, _sanctioned(act, actor, None, room.name, said))
        node.announce(room.name, _sanctioned(act, actor, target, room.name, said))
        detail: str | None = _detail(sanction)
    elif act in ("unban", "unmute"):
        kinds = ("ban", "kick") if act == "unban" else ("mute",)
        if not await node.authority.lift(room.id, key, kinds):
            return
        node.announce(room.name, _lifted(act, actor, target))
        detail = None
    else:
        found = await node.store.signed_messages(room, ids)
        keep = [
            m.id for m, _, _ in found if only_from is None or m.sender.endswith(f"@{only_from}")
        ]
        gone = await node.erase(room, keep, actor) if keep else []
        if not gone:
            return
        detail = f"{len(gone)} messages"
    await node.authority.record(actor, act, target, room.name, detail)


GUEST_STATES = {"in": "in", "unmute": "in", "mute": "muted", "out": "out"}


async def guests(node: Node, conn: Connection, word: str, ref: str | None = None) -> None:
    """All guests at once: muted (they read), out (every guest connection closed, and none
    taken, nor any new guest), or in again."""
    node.authority.require(conn.user_key, "guests")
    state = GUEST_STATES.get(word)
    if state is None:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: /guests [mute|unmute|out|in]"))
    await node.authority.set_guests(state)
    if state == "out":
        for other in node.hub.all_connections():
            if other.session.user.role == "guest":
                other.close(
                    Close.BANNED, say("{user} shut the guests out of this node", user=conn.user)
                )
    node.notice(conn, say("guests are {state} on this node now", state=GUEST_WORDS[state]), ref=ref)
    await node.authority.record(conn.user, f"guests {state}")


async def admit(node: Node, conn: Connection, name: str, ref: str | None = None) -> None:
    """A newcomer out of the waiting room: a member from now on, and told so."""
    node.authority.require(conn.user_key, "admit")
    target = await _user(node, name, "admit")
    key = target.key
    if node.authority.node_role(key) != "waiting" and target.role != "waiting":
        raise ProtocolError(Code.BAD_COMMAND, say("{target} is not waiting", target=target.name))
    await node.authority.grant(key, "member")
    node.tell(key, say("{user} let you in: join a room", user=conn.user))
    node.notice(conn, say("{target} is a member now", target=target.name), ref=ref)
    await node.authority.record(conn.user, "admit", target.name)


async def make_invite(
    node: Node, conn: Connection, uses: int, hours: int, ref: str | None = None
) -> str:
    """A code that lets `uses` new accounts in for `hours`; the node keeps its hash and who
    made it (each account made with it names its inviter)."""
    node.authority.require(conn.user_key, "invitecode")
    if not 1 <= uses <= MAX_INVITE_USES or not 1 <= hours <= MAX_INVITE_HOURS:
        raise ProtocolError(
            Code.BAD_COMMAND,
            say(
                "an invite code has 1 to {max_invite_uses} uses and lasts 1 to "
                "{max_invite_hours} hours",
                max_invite_uses=MAX_INVITE_USES,
                max_invite_hours=MAX_INVITE_HOURS,
            ),
        )
    code = secrets.token_urlsafe(12)
    expires = int(time.time()) + hours * 3600
    made = await node.store.add_invite(
        invite_hash(code), code[:4], conn.user, uses, expires, LIVE_INVITES
    )
    if not made:
        raise ProtocolError(
            Code.TOO_MANY,
            say(
                "you have {live_invites} invite codes that can still be used: /revokecode one",
                live_invites=LIVE_INVITES,
            ),
        )
    plural = "s" if uses > 1 else ""
    node.notice(
        conn,
        say(
            "invite code {code} ({uses} use{plural}, {hours} h): whoever registers with it "
            "is recorded as your invitee",
            code=code,
            uses=uses,
            plural=plural,
            hours=hours,
        ),
        ref=ref,
    )
    await node.authority.record(conn.user, "invite code", None, None, f"{code[:4]}…, {uses} uses")
    return code


def staff(node: Node, room: str) -> list[str]:
    """The room's owners and moderators, strongest first."""
    roles = node.authority.staff(room)
    ranked = sorted(roles.items(), key=lambda kv: (-ROOM_ROLES.get(kv[1], 0), kv[0]))
    return [f"{key} ({role})" for key, role in ranked]


async def audit(node: Node, conn: Connection, room: str | None, lines: int) -> list[str]:
    node.authority.require(conn.user_key, "audit" if room else "node-audit", room)
    entries = await node.store.audit(room, min(lines, MAX_AUDIT_LINES))
    shown = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.ts / 1000))
        where = f" in #{e.room}" if e.room and room is None else ""
        target = f" {e.target}" if e.target else ""
        detail = f" ({e.detail})" if e.detail else ""
        shown.append(f"{when} UTC {e.actor}: {e.action}{target}{where}{detail}")
    return shown


def _detail(sanction: Sanction) -> str:
    span = "for good" if sanction.until is None else f"until {_iso(sanction.until)}"
    return span + (f"; {sanction.reason}" if sanction.reason else "")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))
