"""Slash commands: one table, each with a usage line and one line of help.

Clients send the line as typed (`{"type": "command", "line": "/topic hi", "room": "lobby"}`)
with the room they are looking at, so every client gets the same commands and the same help.
In a key-protected room a client must seal `/me` and `/topic` text itself: the node refuses
to see it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from onionchat import moderation
from onionchat.authority import NODE_STAFF
from onionchat.bots import Bots
from onionchat.protocol import Clear, Code, Command, Delete, ProtocolError, Send, encode

if TYPE_CHECKING:
    from onionchat.hub import Connection
    from onionchat.node import Node

Handler = Callable[["Node", "Connection", str, "str | None", "str | None"], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Spec:
    usage: str
    help: str
    run: Handler


def _room(room: str | None, name: str) -> str:
    if room is None:
        raise ProtocolError(Code.BAD_COMMAND, f"/{name} needs a room: join one first")
    return room


async def _help(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    width = max(len(spec.usage) for spec in COMMANDS.values())
    lines = [f"{spec.usage.ljust(width)}  {spec.help}" for spec in COMMANDS.values()]
    node.notice(conn, "Commands:\n" + "\n".join(lines), room, ref)


async def _clear(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    conn.send(encode(Clear(room=room, ref=ref)))


async def _me(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /me ACTION")
    frame = Send(v=1, room=_room(room, "me"), text=args, me=True, ref=ref)
    await node.send(conn, frame)


async def _who(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    node.who(conn, args or _room(room, "who"), ref)


async def _join(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /join ROOM")
    try:  # an existing room is joined whatever its mode; only a missing one is created open
        await node.join(conn, args, ref=ref)
    except ProtocolError as exc:
        if exc.code != Code.UNKNOWN_ROOM:
            raise
        await node.join(conn, args, create=True, ref=ref)


async def _leave(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await node.leave(conn, args or _room(room, "leave"), ref)


async def _rooms(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await node.list_rooms(conn, ref)


async def _msg(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    to, _, text = args.partition(" ")
    if not to or not text.strip():
        raise ProtocolError(Code.BAD_COMMAND, "usage: /msg USER MESSAGE")
    await node.direct(conn, to.removeprefix("@"), text.strip(), None, False, ref)


async def _topic(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "topic")
    if not args:
        current = await node.room(name)
        if current.protected:
            text = "the topic is sealed: your client shows it"
        else:
            text = f"topic of #{current.name}: {current.topic or '(none)'}"
        node.notice(conn, text, current.name, ref)
        return
    await node.set_topic(conn, name, args, None, ref)


async def _bots(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not isinstance(node.bots, Bots) or not node.bots.bots:
        node.notice(conn, "this node has no bots", room, ref)
        return
    lines = []
    staff = node.authority.level(conn.user_key) >= NODE_STAFF  # the details are the operator's
    for bot, problem in await node.bots.status():
        names = ", ".join((bot.name, *bot.aliases))
        state = "ready" if problem is None else "unavailable"
        if problem is not None and staff:
            state = f"unavailable: {problem}"
        where = "every room" if "*" in bot.rooms else ", ".join(f"#{r}" for r in bot.rooms)
        lines.append(f"{names} — {bot.model} ({bot.provider}) in {where}: {state}")
    node.notice(
        conn, "Bots (call one with 'Name, question' or @Name):\n" + "\n".join(lines), room, ref
    )


async def _stop(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    name = _room(room, "stop")
    bots = node.bots if isinstance(node.bots, Bots) else None
    stopped = bots.stop(name, conn.user, args or None) if bots else []
    text = f"stopped {', '.join(stopped)}" if stopped else "no bot is answering here"
    node.notice(conn, text, name, ref)


async def _uninvite(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "uninvite")
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /uninvite BOT")
    node.authority.require(conn.user_key, "bots", name)
    bots = node.bots if isinstance(node.bots, Bots) else None
    if bots is None or not await bots.uninvite(await node.room(name), args, conn.user):
        raise ProtocolError(Code.BAD_COMMAND, f"{args} is not a bot that can read #{name}")
    node.notice(conn, f"{args} can no longer read #{name}", name, ref)


async def _nodes(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    report = node.reports.get("federation")
    if report is None:
        node.notice(conn, "this node is on its own: it shares no rooms with others", room, ref)
        return
    status = await report()
    lines = [f"This node: {status['name']}"]
    for b in status["brokers"]:
        waiting = f", {b['outbox']} waiting to be published" if b["outbox"] else ""
        error = f" ({b['error']})" if b["state"] != "up" and b["error"] else ""
        lines.append(f"broker {b['broker']}: {b['state']}{error}{waiting}")
    now = time.time()
    for p in status["peers"]:
        heard = p["last_heard"]
        when = "never heard" if heard is None else f"heard {max(0, round(now - heard))} s ago"
        lines.append(f"peer {p['peer']}: {when}")
    node.notice(conn, "\n".join(lines), room, ref)


def _sanction_args(args: str, usage: str) -> tuple[str, int | None, str | None]:
    """NAME [DURATION] [REASON]: the duration is a number of minutes, or 30m, 12h, 7d, 2w,
    or `forever`."""
    words = args.split()
    if not words:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {usage}")
    minutes = None
    rest = words[1:]
    if rest and (rest[0].casefold() == "forever" or moderation.duration(rest[0]) is not None):
        minutes = moderation.duration(rest[0])
        rest = rest[1:]
    return words[0], minutes, moderation.reason(rest)


def _sanctioning(
    name: str, act: Callable[..., Awaitable[None]], node_wide: bool = False
) -> Handler:
    """The command NAME [DURATION] [REASON] of a sanction: in this room, or node-wide."""

    async def run(
        node: Node, conn: Connection, args: str, room: str | None, ref: str | None
    ) -> None:
        target, minutes, reason = _sanction_args(args, COMMANDS[name].usage)
        here = None if node_wide else await node.room(_room(room, name))
        await act(node, conn, here, target, minutes, reason, ref)

    return run


async def _unban(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _lift(node, conn, args, room, ref, "unban", moderation.unban)


async def _unmute(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _lift(node, conn, args, room, ref, "unmute", moderation.unmute)


async def _lift(
    node: Node,
    conn: Connection,
    args: str,
    room: str | None,
    ref: str | None,
    name: str,
    lift: Callable[..., Awaitable[int]],
) -> None:
    """The room's sanction, and the node-wide one too for those who may lift it."""
    target = args.strip()
    if not target or " " in target:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS[name].usage}")
    lifted = 0
    if room is not None:
        lifted += await lift(node, conn, await node.room(room), target, ref)
    if node.authority.may(conn.user_key, "node-ban"):
        node_wide = await lift(node, conn, None, target, ref)
        if node_wide:
            node.notice(conn, f"lifted {target}'s node-wide sanction", room, ref)
        lifted += node_wide
    if not lifted:
        what = "banned or kicked" if name == "unban" else "muted"
        node.notice(conn, f"{target} is not {what} here", room, ref)


async def _delete(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['delete'].usage}")
    await moderation.delete(node, conn, await node.room(_room(room, "delete")), args, ref)


async def _purge(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) not in (1, 2):
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['purge'].usage}")
    count = minutes = None
    if len(words) == 2:
        if words[1].isdigit():
            count = int(words[1])
        elif (minutes := moderation.duration(words[1])) is None:
            raise ProtocolError(Code.BAD_COMMAND, "give a count (50) or a time back (30m, 12h, 7d)")
    here = await node.room(_room(room, "purge"))
    await moderation.purge(node, conn, here, words[0], count, minutes, ref)


async def _op(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    words = args.split()
    if len(words) not in (1, 2) or (len(words) == 2 and words[1] not in ("moderator", "owner")):
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['op'].usage}")
    role = words[1] if len(words) == 2 else "moderator"
    here = await node.room(_room(room, "op"))
    await moderation.name_staff(node, conn, here, words[0], role, ref)


async def _deop(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['deop'].usage}")
    here = await node.room(_room(room, "deop"))
    await moderation.name_staff(node, conn, here, args, None, ref)


async def _grant(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) != 2:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['grant'].usage}")
    await moderation.grant(node, conn, words[0], words[1], ref)


async def _staff(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "staff")
    shown = moderation.staff(node, name)
    text = f"staff of #{name}: " + (", ".join(shown) if shown else "none (node staff act here)")
    node.notice(conn, text, name, ref)


async def _audit(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    whole = bool(words) and words[0] == "all"
    words = words[1:] if whole else words
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['audit'].usage}")
    lines = int(words[0]) if words else moderation.AUDIT_LINES
    where = None if whole else _room(room, "audit")
    shown = await moderation.audit(node, conn, where, lines)
    title = "the node" if where is None else f"#{where}"
    body = "\n".join(shown) if shown else "(nothing yet)"
    node.notice(conn, f"Audit log of {title}:\n{body}", room, ref)


async def _mode(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    here = await node.room(_room(room, "mode"))
    words = args.split()
    if not words:
        node.notice(conn, f"modes of #{here.name}: {moderation.describe(here.modes)}", room, ref)
        return
    if len(words) != 2:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['mode'].usage}")
    await moderation.set_mode(node, conn, here, words[0].casefold(), words[1].casefold(), ref)


async def _role_command(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None, name: str
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS[name].usage}")
    here = await node.room(_room(room, name))
    role = {"voice": "voice", "devoice": None, "allow": "allowed"}[name]
    await moderation.let_in(node, conn, here, args, role, ref)


async def _voice(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "voice")


async def _devoice(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "devoice")


async def _allow(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "allow")


async def _knock(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['knock'].usage}")
    if not node.knocks.allow(conn.user_key):
        raise ProtocolError(Code.RATE_LIMITED, "you knocked a moment ago: wait a minute")
    moderation.knock(node, conn, await node.room(args.removeprefix("#")), ref)


async def _admit(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['admit'].usage}")
    await moderation.admit(node, conn, args, ref)


async def _waiting(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    node.authority.require(conn.user_key, "admit")
    waiting = await node.store.waiting()
    text = ("waiting: " + ", ".join(waiting)) if waiting else "nobody is waiting"
    node.notice(conn, text, room, ref)


async def _invitecode(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) > 2 or not all(w.isdigit() for w in words):
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['invitecode'].usage}")
    uses = int(words[0]) if words else 1
    hours = int(words[1]) if len(words) > 1 else 72
    await moderation.make_invite(node, conn, uses, hours, ref)


async def _invitecodes(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    codes = await node.store.invites(conn.user)
    now = time.time()
    lines = [
        f"{label}…  used {used} of {uses}, "
        + (
            f"{max(1, round((expires - now) / 3600))} h left"
            if used < uses and expires > now
            else "done"
        )
        for label, _, used, uses, expires in codes
    ]
    node.notice(conn, "Your invite codes:\n" + ("\n".join(lines) or "(none)"), room, ref)


async def _revokecode(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    label = args.strip().removesuffix("…")
    if len(label) != 4:
        raise ProtocolError(Code.BAD_COMMAND, f"usage: {COMMANDS['revokecode'].usage}")
    if not await node.store.revoke_invite(label, conn.user):
        raise ProtocolError(Code.BAD_COMMAND, f"you have no usable invite code {label}…")
    node.notice(conn, f"invite code {label}… can no longer be used", room, ref)


async def _guests(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args:
        node.authority.require(conn.user_key, "guests")
        node.notice(conn, f"guests are {node.authority.guests} on this node", room, ref)
        return
    await moderation.guests(node, conn, args.strip().casefold(), ref)


COMMANDS: dict[str, Spec] = {
    "help": Spec("/help", "list the commands", _help),
    "clear": Spec("/clear", "clear this window (only on your screen)", _clear),
    "me": Spec("/me ACTION", "say what you are doing: * alice waves", _me),
    "who": Spec("/who [ROOM]", "who is in the room now", _who),
    "join": Spec("/join ROOM", "join a room, creating an open one if it does not exist", _join),
    "leave": Spec("/leave [ROOM]", "leave this room (or ROOM)", _leave),
    "rooms": Spec("/rooms", "list the rooms on this node", _rooms),
    "msg": Spec("/msg USER MESSAGE", "send a direct message", _msg),
    "topic": Spec("/topic [TEXT]", "show or set the room's topic", _topic),
    "bots": Spec("/bots", "the bots you can call by name, and whether they answer now", _bots),
    "stop": Spec("/stop [BOT]", "stop the answer a bot is writing in this room", _stop),
    "uninvite": Spec("/uninvite BOT", "make a bot forget this key-protected room's key", _uninvite),
    "nodes": Spec("/nodes", "the brokers and peer nodes this node shares rooms through", _nodes),
    "staff": Spec("/staff", "the room's owner and moderators", _staff),
    "kick": Spec(
        "/kick NAME [MINUTES] [REASON]",
        "staff: out of the room for a while",
        _sanctioning("kick", moderation.kick),
    ),
    "ban": Spec(
        "/ban NAME [DURATION] [REASON]",
        "staff: out of the room (for good)",
        _sanctioning("ban", moderation.ban),
    ),
    "unban": Spec("/unban NAME", "staff: lift a ban or a kick", _unban),
    "mute": Spec(
        "/mute NAME [DURATION] [REASON]",
        "staff: may read, not write",
        _sanctioning("mute", moderation.mute),
    ),
    "unmute": Spec("/unmute NAME", "staff: may write again", _unmute),
    "delete": Spec("/delete ID", "delete your message (staff: anyone's)", _delete),
    "purge": Spec("/purge NAME [COUNT|TIME]", "staff: delete NAME's newest messages", _purge),
    "op": Spec("/op NAME [moderator|owner]", "owner: name a room moderator", _op),
    "deop": Spec("/deop NAME", "owner: make a moderator a member again", _deop),
    "audit": Spec("/audit [all] [LINES]", "staff: what staff did, newest last", _audit),
    "nodeban": Spec(
        "/nodeban NAME [DURATION] [REASON]",
        "node staff: off the node",
        _sanctioning("nodeban", moderation.ban, node_wide=True),
    ),
    "nodemute": Spec(
        "/nodemute NAME [DURATION] [REASON]",
        "node staff: silent on the node",
        _sanctioning("nodemute", moderation.mute, node_wide=True),
    ),
    "grant": Spec("/grant NAME ROLE", "admin: admin, moderator, member or guest", _grant),
    "mode": Spec(
        "/mode [MODE VALUE]",
        "the room's modes; staff: invite, moderated, limit, slow, expiry, lockdown",
        _mode,
    ),
    "voice": Spec("/voice NAME", "staff: NAME may speak in a moderated room", _voice),
    "devoice": Spec("/devoice NAME", "staff: NAME may no longer speak there", _devoice),
    "allow": Spec("/allow NAME", "staff: let NAME into an invite-only room", _allow),
    "knock": Spec("/knock ROOM", "ask an invite-only room's staff to let you in", _knock),
    "invitecode": Spec(
        "/invitecode [USES] [HOURS]", "a code that lets friends register", _invitecode
    ),
    "invitecodes": Spec("/invitecodes", "your invite codes and their uses", _invitecodes),
    "revokecode": Spec(
        "/revokecode CODE", "stop an invite code (its first 4 letters)", _revokecode
    ),
    "admit": Spec("/admit NAME", "node staff: let a newcomer out of the waiting room", _admit),
    "waiting": Spec("/waiting", "node staff: who waits to be admitted", _waiting),
    "guests": Spec("/guests [mute|unmute|out|in]", "node staff: all guests at once", _guests),
}


def install(node: Node) -> None:
    """The node hands `command` frames here."""

    async def on_command(conn: Connection, frame: Command) -> None:
        await run(node, conn, frame.line, frame.room, frame.ref)

    async def on_delete(conn: Connection, frame: Delete) -> None:
        room = await node.readable_room(conn, frame.room)
        await moderation.delete(node, conn, room, frame.id, frame.ref, told=False)

    node.handlers[Command] = on_command
    node.handlers[Delete] = on_delete


async def run(node: Node, conn: Connection, line: str, room: str | None, ref: str | None) -> None:
    if not line.startswith("/") or line.startswith("//"):
        raise ProtocolError(Code.BAD_COMMAND, "a command starts with one /, e.g. /help")
    name, _, args = line[1:].partition(" ")
    spec = COMMANDS.get(name.casefold())
    if spec is None:
        raise ProtocolError(
            Code.UNKNOWN_COMMAND, f"unknown command /{name}: /help lists the commands"
        )
    await spec.run(node, conn, args.strip(), room, ref)
